import type { CausalLM } from '../models/decoder.js';
import { noGrad } from '../tensor/tensor.js';

/**
 * A text's embedding from a decoder: the mean of the final-normed hidden states over its tokens
 * ([T, C] → [C]), scaled to unit length as OpenAI's embeddings are (so a dot product is the
 * cosine similarity). A chat model is no trained embedder; this is the usual pooling for one.
 */
export function embedIds(model: CausalLM, ids: readonly number[]): Float32Array {
  if (ids.length === 0) throw new Error('embedIds: no tokens');
  return noGrad(() => {
    const h = model.hidden({ ids: Int32Array.from(ids), batch: 1, length: ids.length }); // (1, T, C)
    const C = model.config.hiddenSize;
    const T = ids.length;
    const sum = new Float64Array(C);
    for (let t = 0; t < T; t++) for (let c = 0; c < C; c++) sum[c] += h.data[t * C + c];
    let norm = 0;
    for (let c = 0; c < C; c++) norm += (sum[c] / T) ** 2;
    const scale = norm > 0 ? 1 / (T * Math.sqrt(norm)) : 0;
    const out = new Float32Array(C);
    for (let c = 0; c < C; c++) out[c] = sum[c] * scale;
    return out;
  });
}

/** OpenAI's `encoding_format: "base64"`: the float32 values' little-endian bytes, in base64. */
export function embeddingToBase64(v: Float32Array): string {
  const bytes = Buffer.alloc(v.length * 4);
  for (let i = 0; i < v.length; i++) bytes.writeFloatLE(v[i], i * 4);
  return bytes.toString('base64');
}
