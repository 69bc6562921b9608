import { encodeConversations, encodeTexts, loadConversations, loadTextDocuments, resolveDatasets } from '../data/index.js';
import type { EncodedExample, LoadResult } from '../data/index.js';
import { Rng } from '../tensor/random.js';
import type { Tokenizer } from '../text/tokenizer.js';
import type { TrainConfig } from './config.js';

export interface PreparedData {
  train: EncodedExample[];
  eval: EncodedExample[];
  notes: string[];
}

/**
 * Reads, checks, converts and tokenizes the configured datasets for the stage, then splits off
 * `val_size` (or reads `eval_dataset`) for evaluation.
 */
export function prepareData(c: TrainConfig, tokenizer: Tokenizer, template: string): PreparedData {
  const notes: string[] = [];
  const encode = (names: string | string[]): EncodedExample[] => {
    const specs = resolveDatasets(names, c.dataset_dir, { layout: c.layout });
    const opts = { skipInvalid: c.skip_invalid, seed: c.seed };
    if (c.stage === 'pt') {
      const docs = loadTextDocuments(specs, opts);
      noteSkipped(docs, notes);
      return limitSamples(encodeTexts(docs.items, { tokenizer, cutoffLen: c.cutoff_len }), c.max_samples);
    }
    const convs = loadConversations(specs, opts);
    noteSkipped(convs, notes);
    const encoded = encodeConversations(limitSamples(convs.items, c.max_samples), {
      tokenizer, template, cutoffLen: c.cutoff_len, trainOnPrompt: c.train_on_prompt, maskHistory: c.mask_history,
    });
    if (encoded.truncated) notes.push(`${encoded.truncated} example(s) were longer than cutoff_len ${c.cutoff_len} and were cut`);
    if (encoded.untrained.length) notes.push(`${encoded.untrained.length} example(s) have no answer token left within cutoff_len; they add nothing to the loss`);
    return encoded.examples;
  };
  return { ...trainAndEval(c, encode), notes };
}

/**
 * The training items from `dataset` and the evaluation items from `eval_dataset`, or else a
 * seeded `val_size` share of the training items held out (at least one, and never all).
 */
export function trainAndEval<T>(c: TrainConfig, encode: (names: string | string[]) => T[]): { train: T[]; eval: T[] } {
  const train = encode(c.dataset);
  if (c.eval_dataset) return { train, eval: encode(c.eval_dataset) };
  if (!(c.val_size > 0 && train.length > 1)) return { train, eval: [] };
  const order = new Rng(c.seed).shuffle(train.map((_, i) => i));
  const n = Math.min(train.length - 1, Math.max(1, Math.round(train.length * c.val_size)));
  const held = new Set(order.slice(0, n));
  return { train: train.filter((_, i) => !held.has(i)), eval: train.filter((_, i) => held.has(i)) };
}

/** Notes how many invalid rows `skip_invalid` dropped, with the first few. */
export function noteSkipped<T>(r: LoadResult<T>, notes: string[]): void {
  if (r.skipped) notes.push(`skipped ${r.skipped} invalid row(s) of ${r.total}; first: ${r.problems.slice(0, 3).join(' | ')}`);
}

/** The first `max_samples` items (all when it is null). */
export function limitSamples<T>(items: T[], max: number | null): T[] {
  return max !== null && items.length > max ? items.slice(0, max) : items;
}
