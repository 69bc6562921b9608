/**
 * Data of the preference and RL stages.
 *
 * rm and dpo read preference pairs (`ranking: true` datasets: alpaca rows with `chosen` and
 * `rejected` columns, sharegpt/OpenAI rows whose messages end with the user and whose `chosen`
 * and `rejected` are the two answers). Each side is encoded as a whole conversation, prompt then
 * answer, exactly as SFT encodes it (same template, the answer's end-of-turn text trained, every
 * earlier turn masked), so log-probabilities and rewards cover the answer tokens only. Pairs
 * whose answers are identical are reported like invalid rows (they teach nothing).
 *
 * A pair batch holds 2n rows: the n chosen answers, then the n rejected ones, right-padded to one
 * length, so one forward pass scores both sides (TRL's concatenated forward).
 *
 * ppo reads prompts: alpaca rows (the output, if any, is ignored), conversations (a final
 * assistant turn is dropped) or preference rows (their prompt).
 */
import { alpacaPrompt } from '../data/convert-alpaca.js';
import { messageTurns } from '../data/convert-messages.js';
import {
  ProblemLog, chatMessages, encodeConversation, epochOrder, loadPreferencePairs, loadRows, makeBatches, resolveDatasets,
  toPreferencePair, asRow, InvalidRow, describeSource,
} from '../data/index.js';
import type { Batch, DatasetSpec, EncodedExample, PreferencePair, Source, Turn } from '../data/index.js';
import { UserError } from '../errors.js';
import { renderChat } from '../text/chat-template.js';
import type { Tokenizer } from '../text/tokenizer.js';
import type { TrainConfig } from './config.js';
import { limitSamples, noteSkipped, trainAndEval } from './prepare-data.js';

export interface EncodedPair {
  chosen: EncodedExample;
  rejected: EncodedExample;
  source: Source;
}

/** 2n rows: chosen answers 0..n−1, rejected answers n..2n−1. */
export interface PairBatch extends Batch {
  pairs: number;
  items: EncodedPair[];
}

export interface PreferenceData {
  train: EncodedPair[];
  eval: EncodedPair[];
  notes: string[];
}

export interface EncodeSettings {
  tokenizer: Tokenizer;
  template: string;
  cutoffLen: number;
}

/** Reads, checks and encodes the configured preference datasets and splits off `val_size`. */
export function preparePreferenceData(c: TrainConfig, tokenizer: Tokenizer, template: string): PreferenceData {
  const notes: string[] = [];
  const encode = (names: string | string[]): EncodedPair[] => {
    const specs = resolveDatasets(names, c.dataset_dir, { layout: c.layout });
    const loaded = loadPreferencePairs(specs, { skipInvalid: c.skip_invalid, seed: c.seed });
    noteSkipped(loaded, notes);
    const limited = limitSamples(checkPairs(loaded.items, c.skip_invalid, notes), c.max_samples);
    const settings = { tokenizer, template, cutoffLen: c.cutoff_len };
    const out: EncodedPair[] = [];
    let truncated = 0;
    const unusable: string[] = [];
    for (const pair of limited) {
      const e = encodePair(pair, settings);
      if (e.truncated) truncated++;
      if (e.problem) unusable.push(`${describeSource(pair.source)} (${e.problem})`);
      else out.push(e.pair);
    }
    if (truncated) notes.push(`${truncated} pair(s) were longer than cutoff_len ${c.cutoff_len} and were cut`);
    if (unusable.length) notes.push(`${unusable.length} pair(s) left out after cutting to cutoff_len: ${unusable.slice(0, 3).join(' | ')}`);
    if (out.length === 0) throw new UserError(`no usable preference pairs in ${specs.map((s) => s.name).join(', ')}`);
    return out;
  };
  return { ...trainAndEval(c, encode), notes };
}

/**
 * Pairs whose chosen and rejected answers are the same text are problems: listed (file, row)
 * with a UserError, or dropped and noted with `skipInvalid`. (Empty answers are already
 * rejected when rows are read.)
 */
export function checkPairs(pairs: PreferencePair[], skipInvalid: boolean, notes: string[]): PreferencePair[] {
  const problems = new ProblemLog();
  const kept = pairs.filter((p) => {
    if (p.chosen.trim() !== p.rejected.trim()) return true;
    problems.add(p.source, '"chosen" and "rejected" are the same answer, so the pair prefers nothing');
    return false;
  });
  problems.report(pairs.length, skipInvalid);
  if (problems.count) notes.push(`skipped ${problems.count} pair(s) whose chosen and rejected answers are identical; first: ${problems.first[0]}`);
  if (kept.length === 0) throw new UserError('every preference pair has identical chosen and rejected answers');
  return kept;
}

/** One side of a pair: the prompt turns followed by `answer` as the assistant's turn. */
export function encodeAnswer(prompt: Pick<PreferencePair, 'system' | 'messages' | 'source'>, answer: string, s: EncodeSettings) {
  const messages: Turn[] = [...prompt.messages, { role: 'assistant', content: answer }];
  const conv = prompt.system !== undefined ? { system: prompt.system, messages, source: prompt.source } : { messages, source: prompt.source };
  return encodeConversation(conv, { tokenizer: s.tokenizer, template: s.template, cutoffLen: s.cutoffLen, trainOnPrompt: false, maskHistory: true });
}

export function encodePair(pair: PreferencePair, s: EncodeSettings): { pair: EncodedPair; truncated: boolean; problem: string | null } {
  const chosen = encodeAnswer(pair, pair.chosen, s);
  const rejected = encodeAnswer(pair, pair.rejected, s);
  let problem: string | null = null;
  if (chosen.trainedTokens === 0 || rejected.trainedTokens === 0) problem = 'the prompt fills cutoff_len, no answer token is left';
  else if (sameIds(chosen.inputIds, rejected.inputIds)) problem = 'chosen and rejected are identical once cut';
  return {
    pair: { chosen: { inputIds: chosen.inputIds, labels: chosen.labels }, rejected: { inputIds: rejected.inputIds, labels: rejected.labels }, source: pair.source },
    truncated: chosen.truncated || rejected.truncated,
    problem,
  };
}

/** Batches of `batchSize` pairs, in the order given (apply {@link epochOrder} first). */
export function makePairBatches(pairs: readonly EncodedPair[], batchSize: number, padId: number): PairBatch[] {
  const out: PairBatch[] = [];
  for (let i = 0; i < pairs.length; i += batchSize) {
    const items = pairs.slice(i, i + batchSize);
    const rows = [...items.map((p) => p.chosen), ...items.map((p) => p.rejected)];
    const [batch] = makeBatches(rows, { batchSize: rows.length, cutoffLen: Number.MAX_SAFE_INTEGER, padId });
    out.push({ ...batch, pairs: items.length, items });
  }
  return out;
}

/** The pair batches of one epoch, shuffled by (seed, epoch). */
export function pairBatchesForEpoch(pairs: readonly EncodedPair[], epoch: number, seed: number, batchSize: number, padId: number): PairBatch[] {
  return makePairBatches(epochOrder(pairs.length, seed, epoch).map((i) => pairs[i]), batchSize, padId);
}

// ---------------------------------------------------------------------------------------------
// PPO prompts

export interface PromptItem {
  system?: string;
  /** Turns ending with the user's. */
  messages: Turn[];
  source: Source;
}

/** The prompts of the configured datasets, for PPO rollouts. */
export function loadPrompts(specs: readonly DatasetSpec[], skipInvalid: boolean, seed: number): { items: PromptItem[]; notes: string[] } {
  for (const spec of specs) {
    if (spec.formatting === 'text') throw new UserError(`dataset "${spec.name}" is plain text; PPO needs prompts (instruction rows or conversations)`);
  }
  const loaded = loadRows(specs, { skipInvalid, seed }, (record, spec) => promptOf(record.value, spec, record.source), 'prompts');
  const notes = loaded.skipped ? [`skipped ${loaded.skipped} invalid row(s) of ${loaded.total}; first: ${loaded.problems[0]}`] : [];
  return { items: loaded.items, notes };
}

function promptOf(value: unknown, spec: DatasetSpec, source: Source): PromptItem {
  if (spec.ranking) {
    const { system, messages } = toPreferencePair({ value, source }, spec);
    return withSystem({ messages, source }, system);
  }
  const row = asRow(value);
  if (spec.formatting === 'alpaca') {
    const { system, messages } = alpacaPrompt(row, spec);
    return withSystem({ messages, source }, system);
  }
  let turns;
  try {
    turns = messageTurns(row, spec, 'user');
  } catch (first) {
    if (!(first instanceof InvalidRow)) throw first;
    turns = messageTurns(row, spec, 'assistant');
    turns.messages.pop();
  }
  return withSystem({ messages: turns.messages, source }, turns.system);
}

/** The prompt as token ids, ending with the header after which the assistant answers. */
export function encodePrompt(prompt: Pick<PromptItem, 'system' | 'messages'>, tokenizer: Tokenizer, template: string): number[] {
  const text = renderChat(chatMessages(prompt), { template, addGenerationPrompt: true, bosToken: tokenizer.bosToken, eosToken: tokenizer.eosToken });
  return tokenizer.encode(text, { addSpecialTokens: false });
}

function withSystem(item: PromptItem, system: string | undefined): PromptItem {
  if (system !== undefined && system !== '') item.system = system;
  return item;
}

function sameIds(a: Int32Array, b: Int32Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

