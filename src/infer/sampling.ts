import type { Rng } from '../tensor/random.js';

export interface SamplingOptions {
  /** 0 picks the most likely token (greedy); higher flattens the distribution. */
  temperature: number;
  /** Keep only the k most likely tokens; 0 keeps all. */
  topK: number;
  /** Keep the smallest set whose probability reaches p; 1 keeps all. */
  topP: number;
  /** > 1 discourages tokens already present, as transformers applies it. */
  repetitionPenalty: number;
}

export const GREEDY: SamplingOptions = { temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1 };

/**
 * transformers' repetition penalty: a seen token's positive logit is divided by the penalty and
 * a negative one multiplied, so the token always becomes less likely. Changes `logits`.
 */
export function applyRepetitionPenalty(logits: Float32Array, seen: Iterable<number>, penalty: number): void {
  if (penalty === 1) return;
  for (const id of new Set(seen)) {
    const l = logits[id];
    logits[id] = l < 0 ? l * penalty : l / penalty;
  }
}

export function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** Picks the next token from one row of logits. `logits` may be modified. */
export function sampleToken(logits: Float32Array, opts: SamplingOptions, rng: Rng, seen: readonly number[] = []): number {
  applyRepetitionPenalty(logits, seen, opts.repetitionPenalty);
  if (opts.temperature <= 0) return argmax(logits);
  // Candidates sorted by logit; top-k and top-p only ever need the head of this order.
  const k = opts.topK > 0 ? Math.min(opts.topK, logits.length) : logits.length;
  const order = topIndices(logits, k);
  const inv = 1 / opts.temperature;
  const max = logits[order[0]];
  const probs = new Float64Array(order.length);
  let total = 0;
  for (let i = 0; i < order.length; i++) {
    probs[i] = Math.exp((logits[order[i]] - max) * inv);
    total += probs[i];
  }
  let keep = order.length;
  if (opts.topP < 1) {
    let cum = 0;
    for (let i = 0; i < order.length; i++) {
      cum += probs[i] / total;
      if (cum >= opts.topP) {
        keep = i + 1;
        break;
      }
    }
  }
  let kept = 0;
  for (let i = 0; i < keep; i++) kept += probs[i];
  let r = rng.uniform() * kept;
  for (let i = 0; i < keep; i++) {
    r -= probs[i];
    if (r <= 0) return order[i];
  }
  return order[keep - 1];
}

/** Indices of the k largest values, largest first. */
function topIndices(x: Float32Array, k: number): number[] {
  if (k >= x.length) return Array.from(x.keys()).sort((a, b) => x[b] - x[a]);
  // A partial selection keeps this cheap for a 150k vocabulary and a small k.
  const heap: number[] = [];
  for (let i = 0; i < x.length; i++) {
    if (heap.length < k) {
      heap.push(i);
      if (heap.length === k) heap.sort((a, b) => x[a] - x[b]);
    } else if (x[i] > x[heap[0]]) {
      heap[0] = i;
      let j = 0;
      while (j + 1 < heap.length && x[heap[j]] > x[heap[j + 1]]) {
        [heap[j], heap[j + 1]] = [heap[j + 1], heap[j]];
        j++;
      }
    }
  }
  return heap.sort((a, b) => x[b] - x[a]);
}
