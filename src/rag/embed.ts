/**
 * Text embeddings from a decoder model loaded by tunekit's own engine.
 *
 * - `last` pooling, as Qwen3-Embedding does: the text ends with `<|endoftext|>` (appended when
 *   the tokenizer's post-processor has not already put it there) and that token's final-normed
 *   hidden state is the embedding. Queries are prefixed with an instruction
 *   (`Instruct: …\nQuery:…`), documents are not — so Qwen/Qwen3-Embedding-0.6B works as it is
 *   downloaded.
 * - `mean` pooling: the average of the text's hidden states.
 *
 * Either way the vector is L2-normalised, so cosine similarity is a dot product. Texts are
 * batched by similar length with right padding; attention is causal, so no real token ever sees
 * a pad and a batched embedding equals the one computed alone.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { loadModel } from '../io/model-folder.js';
import type { CausalLM } from '../models/decoder.js';
import { Tokenizer } from '../text/tokenizer.js';
import { byLengthBatches, paddedHidden } from './batch.js';

export type Pooling = 'last' | 'mean';

/** Qwen3-Embedding's instruction for retrieval queries. */
export const DEFAULT_QUERY_INSTRUCTION = 'Given a web search query, retrieve relevant passages that answer the query';

export interface EmbedderOptions {
  pooling?: Pooling;
  /** Prefix queries with `Instruct: {instruction}\nQuery:` ('' for none). Default: Qwen3-Embedding's for `last`, none for `mean`. */
  queryInstruction?: string;
  /** Longest input in tokens; longer texts are cut (default the smaller of 8192 and the model's context). */
  maxTokens?: number;
  /** Padded tokens per forward pass (default 4096). */
  batchTokens?: number;
}

export class Embedder {
  readonly pooling: Pooling;
  readonly queryInstruction: string;
  readonly maxTokens: number;
  readonly batchTokens: number;
  /** The id appended for last-token pooling, or null when the tokenizer has no end token. */
  readonly endId: number | null;

  constructor(
    readonly model: CausalLM,
    readonly tokenizer: Tokenizer,
    /** The model folder (absolute), recorded in the index. */
    readonly dir: string,
    opts: EmbedderOptions = {},
  ) {
    this.pooling = opts.pooling ?? 'last';
    this.queryInstruction = opts.queryInstruction ?? (this.pooling === 'last' ? DEFAULT_QUERY_INSTRUCTION : '');
    this.maxTokens = opts.maxTokens ?? Math.min(8192, model.config.maxPositions);
    this.batchTokens = opts.batchTokens ?? 4096;
    const end = tokenizer.tokenToId('<|endoftext|>') ?? tokenizer.eosTokenId;
    this.endId = end ?? null;
    model.eval();
  }

  static load(dir: string, opts: EmbedderOptions = {}): Embedder {
    const abs = resolve(dir);
    const tokenizer = Tokenizer.fromFolder(abs);
    return new Embedder(loadModel(abs), tokenizer, abs, opts);
  }

  /** The embeddings' size: the model's hidden size. */
  get dim(): number {
    return this.model.config.hiddenSize;
  }

  /** Token count of `text` as the splitter sizes chunks. */
  countTokens = (text: string): number => this.tokenizer.encode(text, { addSpecialTokens: false }).length;

  /** The ids one text is embedded from. */
  encode(text: string): number[] {
    const ids = this.tokenizer.encode(text, { addSpecialTokens: true });
    if (this.pooling !== 'last' || this.endId === null) return ids.slice(0, this.maxTokens);
    const body = ids[ids.length - 1] === this.endId ? ids.slice(0, -1) : ids;
    return [...body.slice(0, this.maxTokens - 1), this.endId];
  }

  /** The query as the model expects it: with the instruction, when there is one. */
  queryText(query: string): string {
    return this.queryInstruction ? `Instruct: ${this.queryInstruction}\nQuery:${query}` : query;
  }

  embedQuery(query: string): Float32Array {
    return this.embedIds([this.encode(this.queryText(query))])[0];
  }

  embedDocuments(texts: readonly string[]): Float32Array[] {
    return this.embedIds(texts.map((t) => this.encode(t)));
  }

  /** Embeddings for token id lists, batched by length; returned in the given order. */
  embedIds(inputs: readonly number[][]): Float32Array[] {
    return byLengthBatches(inputs, this.batchTokens, (rows) => embedRows(this.model, rows, this.pooling));
  }
}

/**
 * Unit-length embeddings of token id lists run as one padded batch: the last token's final-normed
 * hidden state (`last`) or the mean over the row's tokens (`mean`), scaled to unit length.
 */
export function embedRows(model: CausalLM, rows: ReadonlyArray<readonly number[]>, pooling: Pooling): Float32Array[] {
  if (rows.some((r) => r.length === 0)) throw new Error('Embedder: an empty input');
  const { hidden, length: T } = paddedHidden(model, rows); // (B, T, C)
  const C = model.config.hiddenSize;
  return rows.map((r, b) => {
    const first = pooling === 'last' ? r.length - 1 : 0;
    const n = r.length - first;
    const sum = new Float64Array(C);
    for (let t = first; t < r.length; t++) {
      const o = (b * T + t) * C;
      for (let c = 0; c < C; c++) sum[c] += hidden[o + c];
    }
    // sum/n scaled to unit length, in float64, rounded to float32 once.
    let norm = 0;
    for (let c = 0; c < C; c++) norm += (sum[c] / n) ** 2;
    const scale = norm > 0 ? 1 / (n * Math.sqrt(norm)) : 0;
    const v = new Float32Array(C);
    for (let c = 0; c < C; c++) v[c] = sum[c] * scale;
    return v;
  });
}

export function l2normalize(v: Float32Array): Float32Array {
  let ss = 0;
  for (let i = 0; i < v.length; i++) ss += v[i] * v[i];
  const inv = ss > 0 ? 1 / Math.sqrt(ss) : 0;
  for (let i = 0; i < v.length; i++) v[i] *= inv;
  return v;
}

/**
 * Identifies a model folder's weights without reading them: config.json's content and the
 * names and sizes of its weight files. Stored with the index to notice a different model.
 */
export function modelFingerprint(dir: string): string {
  const h = createHash('sha256');
  h.update(readFileSync(join(dir, 'config.json')));
  for (const f of readdirSync(dir).sort()) {
    if (/\.(safetensors|bin|gguf)$/.test(f)) h.update(`${f}:${statSync(join(dir, f)).size}\n`);
  }
  return h.digest('hex').slice(0, 16);
}
