/**
 * Inference speed of the benchmarked model: a 32-token prompt through the KV-cached forward
 * (prefill), then 64 greedy tokens one at a time (decode). Prefill is bound by compute (its
 * matrix FLOPs at the sgemm rate); decode by memory (every weight read once per token at the
 * stream rate).
 */
import { lastLogits } from '../src/infer/decoding.js';
import { KVCache } from '../src/models/kv-cache.js';
import type { CausalLM } from '../src/models/decoder.js';
import { Rng, noGrad } from '../src/tensor/index.js';
import { GB, median, seconds, type Section } from './measure.js';

const PROMPT = 32;
const NEW_TOKENS = 64;
const RUNS = 3;
/** A decode run longer than this is not repeated. */
const SLOW_RUN_S = 60;

/** Index of the largest of the last `vocab` values: the greedy next token of the last position. */
function argmaxLast(logits: Float32Array, vocab: number): number {
  const off = logits.length - vocab;
  let best = 0;
  for (let j = 1; j < vocab; j++) if (logits[off + j] > logits[off + best]) best = j;
  return best;
}

/** Multiply-adds of the 2-D weights one token goes through, split into body and output head. */
function matrixParams(model: CausalLM): { body: number; head: number } {
  const head = model.outputWeight();
  let body = 0;
  for (const [, t] of model.namedParameters()) {
    if (t.ndim === 2 && t !== head && t !== model.model.embed_tokens.weight) body += t.size;
  }
  return { body, head: head.size };
}

/** Bytes one decode step reads: every parameter (the embedding only as the tied head) and the cache. */
function decodeBytesPerToken(model: CausalLM, keys: number): number {
  const cfg = model.config;
  let params = 0;
  for (const [, t] of model.namedParameters()) {
    if (t === model.model.embed_tokens.weight && !cfg.tieWordEmbeddings) params += cfg.hiddenSize; // one row looked up
    else params += t.size;
  }
  const cache = 2 * cfg.numLayers * keys * cfg.numKvHeads * cfg.headDim;
  return 4 * (params + cache);
}

/** Matrix FLOPs of one cached forward of `tokens` new tokens after `offset`, as the engine runs it. */
function forwardFlops(model: CausalLM, tokens: number, offset: number): number {
  const cfg = model.config;
  const { body, head } = matrixParams(model);
  // Every query row meets every key row (masking comes after the product): q·kᵀ and p·v.
  const attention = cfg.numLayers * cfg.numHeads * 4 * tokens * (offset + tokens) * cfg.headDim;
  // Generation computes vocabulary logits for the last position only.
  return 2 * tokens * body + 2 * head + attention;
}

export const inferenceSection: Section = {
  name: 'inference',
  title: `inference: ${PROMPT}-token prompt, then ${NEW_TOKENS} greedy tokens (batch 1, KV cache, noGrad)`,
  provides: ['prefill_tokens_per_s', 'prefill_bound_tokens_per_s', 'decode_tokens_per_s', 'decode_bound_tokens_per_s'],
  async run(ctx) {
    // The bounds first: measuring them allocates 1 GB, which must not add to the model's peak RSS.
    const sgemm = await ctx.figure('sgemm_gflops');
    const stream = await ctx.figure('stream_gb_s');
    const model = ctx.model();
    const cfg = model.config;
    const rng = new Rng(7);
    const prompt = Int32Array.from({ length: PROMPT }, () => rng.int(cfg.vocabSize));

    /** One prompt and its continuation; returns the two timings. */
    const generate = (prompt: Int32Array, newTokens: number): { prefill: number; decode: number } =>
      noGrad(() => {
        const cache = new KVCache(cfg, 1, prompt.length + newTokens);
        let next = 0;
        const prefill = seconds(() => {
          next = argmaxLast(lastLogits(model, prompt, cache), cfg.vocabSize);
        });
        const ids = new Int32Array(1);
        const decode = seconds(() => {
          for (let i = 0; i < newTokens; i++) {
            ids[0] = next;
            next = argmaxLast(lastLogits(model, ids, cache), cfg.vocabSize);
          }
        });
        return { prefill, decode };
      });

    ctx.progress('inference: warm-up (4-token prompt, 2 new tokens)');
    generate(prompt.subarray(0, 4), 2);
    const prefills: number[] = [];
    const decodes: number[] = [];
    for (let run = 1; run <= RUNS; run++) {
      const t = generate(prompt, NEW_TOKENS);
      prefills.push(t.prefill);
      decodes.push(t.decode);
      ctx.progress(
        `inference run ${run}/${RUNS}: prefill ${t.prefill.toFixed(2)} s (${(PROMPT / t.prefill).toFixed(1)} tok/s), ` +
          `decode ${t.decode.toFixed(1)} s (${(NEW_TOKENS / t.decode).toFixed(2)} tok/s)`,
      );
      if (t.prefill + t.decode > SLOW_RUN_S) {
        ctx.progress(`inference: run took over ${SLOW_RUN_S} s; keeping this one run`);
        break;
      }
    }

    const prefillBound = PROMPT / (forwardFlops(model, PROMPT, 0) / (sgemm * GB));
    const meanKeys = PROMPT + (NEW_TOKENS + 1) / 2;
    const bytes = decodeBytesPerToken(model, meanKeys);
    const how = decodes.length === 1 ? 'one run' : `median of ${decodes.length}`;
    return [
      {
        key: 'prefill_tokens_per_s', label: `prefill (${PROMPT} tokens)`, value: PROMPT / median(prefills), unit: 'tok/s',
        bound: 'prefill_bound_tokens_per_s', note: how,
      },
      {
        key: 'prefill_bound_tokens_per_s', label: 'prefill bound: matrix FLOPs at sgemm rate', value: prefillBound, unit: 'tok/s',
        note: `${(forwardFlops(model, PROMPT, 0) / PROMPT / GB).toFixed(2)} GFLOP/token; vocabulary logits for the last position only`,
      },
      {
        key: 'decode_tokens_per_s', label: `decode (${NEW_TOKENS} tokens, greedy)`, value: NEW_TOKENS / median(decodes), unit: 'tok/s',
        bound: 'decode_bound_tokens_per_s', note: how,
      },
      {
        key: 'decode_bound_tokens_per_s', label: 'decode bound: weight bytes at stream rate', value: stream * GB / bytes, unit: 'tok/s',
        note: `${(bytes / GB).toFixed(2)} GB read per token (fp32, tied head counted once)`,
      },
    ];
  },
};
