import type { CausalLM } from '../models/decoder.js';
import { embedRows } from '../rag/embed.js';

/**
 * A text's embedding from a decoder: the mean of the final-normed hidden states over its tokens
 * ([T, C] → [C]), scaled to unit length as OpenAI's embeddings are (so a dot product is the
 * cosine similarity). A chat model is no trained embedder; this is the usual pooling for one,
 * the RAG embedder's `mean` pooling.
 */
export function embedIds(model: CausalLM, ids: readonly number[]): Float32Array {
  if (ids.length === 0) throw new Error('embedIds: no tokens');
  return embedRows(model, [ids], 'mean')[0];
}

/** OpenAI's `encoding_format: "base64"`: the float32 values' little-endian bytes, in base64. */
export function embeddingToBase64(v: Float32Array): string {
  const bytes = Buffer.alloc(v.length * 4);
  for (let i = 0; i < v.length; i++) bytes.writeFloatLE(v[i], i * 4);
  return bytes.toString('base64');
}
