/**
 * Reranking by a causal LM that judges each (query, document) pair, as Qwen3-Reranker does: the
 * pair goes into a fixed chat prompt that asks for "yes" or "no", and the score is
 * P(yes) = softmax(logit_yes, logit_no)[yes] at the last position. Only the two logits are
 * computed (two dot products with the output head), never the whole vocabulary.
 *
 * With Qwen/Qwen3-Reranker-0.6B downloaded, `Reranker.load(dir)` scores as its model card does.
 */
import { resolve } from 'node:path';

import { loadModel } from '../io/model-folder.js';
import type { CausalLM } from '../models/decoder.js';
import { Tokenizer } from '../text/tokenizer.js';
import { byLengthBatches, paddedHidden } from './batch.js';

export const RERANK_PREFIX =
  '<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. ' +
  'Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n';
export const RERANK_SUFFIX = '<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n';
export const DEFAULT_RERANK_INSTRUCTION = 'Given a web search query, retrieve relevant passages that answer the query';

export interface RerankerOptions {
  instruction?: string;
  /** Longest prompt in tokens; the document is cut to fit (default 8192). */
  maxTokens?: number;
  /** Padded tokens per forward pass (default 4096). */
  batchTokens?: number;
}

export class Reranker {
  readonly yesId: number;
  readonly noId: number;
  readonly instruction: string;
  readonly maxTokens: number;
  readonly batchTokens: number;
  private readonly prefixIds: number[];
  private readonly suffixIds: number[];

  constructor(
    readonly model: CausalLM,
    readonly tokenizer: Tokenizer,
    opts: RerankerOptions = {},
  ) {
    this.yesId = wordId(tokenizer, 'yes');
    this.noId = wordId(tokenizer, 'no');
    this.instruction = opts.instruction ?? DEFAULT_RERANK_INSTRUCTION;
    this.maxTokens = opts.maxTokens ?? 8192;
    this.batchTokens = opts.batchTokens ?? 4096;
    this.prefixIds = tokenizer.encode(RERANK_PREFIX, { addSpecialTokens: false });
    this.suffixIds = tokenizer.encode(RERANK_SUFFIX, { addSpecialTokens: false });
    model.eval();
  }

  static load(dir: string, opts: RerankerOptions = {}): Reranker {
    const abs = resolve(dir);
    return new Reranker(loadModel(abs), Tokenizer.fromFolder(abs), opts);
  }

  /** The prompt's ids for one pair, the document cut so the whole fits in maxTokens. */
  encodePair(query: string, document: string): number[] {
    const head = this.tokenizer.encode(`<Instruct>: ${this.instruction}\n<Query>: ${query}\n<Document>: `, { addSpecialTokens: false });
    const doc = this.tokenizer.encode(document, { addSpecialTokens: false });
    const room = Math.max(0, this.maxTokens - this.prefixIds.length - this.suffixIds.length - head.length);
    return [...this.prefixIds, ...head, ...doc.slice(0, room), ...this.suffixIds];
  }

  /** P(yes) for each document, in the given order. */
  score(query: string, documents: readonly string[]): number[] {
    const inputs = documents.map((d) => this.encodePair(query, d));
    return byLengthBatches(inputs, this.batchTokens, (rows) => this.forward(rows));
  }

  private forward(rows: readonly number[][]): number[] {
    const { hidden, length: T } = paddedHidden(this.model, rows); // (B, T, C)
    const C = this.model.config.hiddenSize;
    const W = this.model.outputWeight().data; // (V, C)
    const yes = W.subarray(this.yesId * C, (this.yesId + 1) * C);
    const no = W.subarray(this.noId * C, (this.noId + 1) * C);
    return rows.map((r, b) => {
      const h = hidden.subarray((b * T + r.length - 1) * C, (b * T + r.length) * C);
      let ly = 0;
      let ln = 0;
      for (let c = 0; c < C; c++) {
        ly += h[c] * yes[c];
        ln += h[c] * no[c];
      }
      return 1 / (1 + Math.exp(ln - ly));
    });
  }
}

/** The token of a word: its own id where the vocabulary has one, else its first piece. */
function wordId(tokenizer: Tokenizer, word: string): number {
  return tokenizer.tokenToId(word) ?? tokenizer.encode(word, { addSpecialTokens: false })[0];
}
