/**
 * Batched forward passes of a decoder over token id lists, shared by the embedder and the
 * reranker: inputs are grouped by similar length, right-padded, and run through the model's
 * final-normed hidden states. Attention is causal, so no real token ever sees a pad and a row's
 * hidden states in a batch equal the ones computed alone.
 */
import type { CausalLM } from '../models/decoder.js';
import { noGrad } from '../tensor/tensor.js';

/**
 * `forward` over batches of `inputs` sorted by length, each batch as large as its padded size
 * (longest × count) allows within `batchTokens`; the results come back in the given order.
 */
export function byLengthBatches<R>(inputs: readonly number[][], batchTokens: number, forward: (rows: number[][]) => R[]): R[] {
  const out: R[] = new Array(inputs.length);
  const order = inputs.map((_, i) => i).sort((a, b) => inputs[a].length - inputs[b].length);
  let start = 0;
  while (start < order.length) {
    // Grow the batch while the padded size (longest × count) stays within batchTokens.
    let end = start + 1;
    while (end < order.length && inputs[order[end]].length * (end - start + 1) <= batchTokens) end++;
    const batch = order.slice(start, end);
    const results = forward(batch.map((i) => inputs[i]));
    batch.forEach((i, j) => (out[i] = results[j]));
    start = end;
  }
  return out;
}

/**
 * The final-normed hidden states of right-padded `rows`: `hidden` is (rows, length, hiddenSize),
 * row b's token t at offset (b·length + t)·hiddenSize.
 */
export function paddedHidden(model: CausalLM, rows: ReadonlyArray<readonly number[]>): { hidden: Float32Array; length: number } {
  const B = rows.length;
  const T = Math.max(1, ...rows.map((r) => r.length));
  const ids = new Int32Array(B * T);
  const keyMask = new Uint8Array(B * T);
  rows.forEach((r, b) => {
    ids.set(r, b * T);
    keyMask.fill(1, b * T, b * T + r.length);
  });
  const hidden = noGrad(() => model.hidden({ ids, batch: B, length: T, keyMask })).data;
  return { hidden, length: T };
}
