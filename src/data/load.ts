/**
 * Datasets (as resolved by the registry) to examples: read every file, convert every row, and
 * either stop with the list of bad rows or, with `skipInvalid`, drop and count them.
 */
import { UserError } from '../errors.js';
import { Rng } from '../tensor/random.js';
import { toConversation, toPreferencePair, toTextDocument } from './convert.js';
import { readRecords, type RawRecord, type TextSplit } from './files.js';
import type { DatasetSpec } from './registry.js';
import type { Conversation, PreferencePair, TextDocument } from './types.js';
import { InvalidRow, ProblemLog } from './validate.js';

export interface LoadOptions {
  /** Drop bad rows (counted in the result) instead of stopping with their list. */
  skipInvalid?: boolean;
  /** How .txt files are cut into documents (default: paragraphs). */
  textSplit?: TextSplit;
  /** Seed of `num_samples` subsets (default 0). */
  seed?: number;
}

export interface LoadResult<T> {
  items: T[];
  /** Rows read, valid or not. */
  total: number;
  /** Rows dropped as invalid (only with `skipInvalid`; otherwise loading throws). */
  skipped: number;
  /** The first few problems, one line each: `file: row N: "field" …`. */
  problems: string[];
}

/** Supervised examples for SFT. */
export function loadConversations(specs: readonly DatasetSpec[], options: LoadOptions = {}): LoadResult<Conversation> {
  for (const spec of specs) {
    if (spec.ranking) throw new UserError(`dataset "${spec.name}" is preference data (ranking); use it for reward modelling or DPO`);
    if (spec.formatting === 'text' || spec.paths.some(isTextFile)) {
      throw new UserError(`dataset "${spec.name}" is plain text, for pre-training (stage pt); fine-tuning needs instruction/output rows or conversations`);
    }
  }
  return loadRows(specs, options, toConversation);
}

/** Preference pairs (datasets with `ranking: true`) for reward modelling and DPO. */
export function loadPreferencePairs(specs: readonly DatasetSpec[], options: LoadOptions = {}): LoadResult<PreferencePair> {
  for (const spec of specs) {
    if (!spec.ranking) {
      throw new UserError(`dataset "${spec.name}" is not preference data; set "ranking": true in dataset_info.json for chosen/rejected rows`);
    }
  }
  return loadRows(specs, options, toPreferencePair);
}

/** Documents for continued pre-training. */
export function loadTextDocuments(specs: readonly DatasetSpec[], options: LoadOptions = {}): LoadResult<TextDocument> {
  for (const spec of specs) {
    if (spec.formatting === 'sharegpt' || spec.formatting === 'openai') {
      throw new UserError(`dataset "${spec.name}" holds conversations; pre-training reads plain text (.txt, {"text": …} rows or alpaca rows)`);
    }
  }
  return loadRows(specs, options, toTextDocument);
}

/**
 * Every row of `specs` (a `num_samples` subset where set) through `convert`; rows it rejects
 * with an InvalidRow are listed in a UserError, or dropped and counted with `skipInvalid`.
 * `what` names the items in the error when none are left.
 */
export function loadRows<T>(
  specs: readonly DatasetSpec[],
  options: LoadOptions,
  convert: (record: RawRecord, spec: DatasetSpec) => T,
  what = 'examples',
): LoadResult<T> {
  const problems = new ProblemLog();
  const items: T[] = [];
  let total = 0;
  for (const spec of specs) {
    const records = sample(readRecords(spec.paths, { textSplit: options.textSplit }), spec, options.seed ?? 0);
    total += records.length;
    for (const record of records) {
      try {
        items.push(convert(record, spec));
      } catch (err) {
        if (!(err instanceof InvalidRow)) throw err;
        problems.add(record.source, err.message);
      }
    }
  }
  problems.report(total, options.skipInvalid ?? false);
  if (items.length === 0) {
    const names = specs.map((s) => s.name).join(', ');
    const why = problems.count > 0 ? `; every row was invalid, e.g. ${problems.first[0]}` : '';
    throw new UserError(`no ${what} in ${names}${why}`);
  }
  return { items, total, skipped: problems.count, problems: problems.first };
}

/** `num_samples` rows chosen at random (seeded), in file order. */
function sample(records: RawRecord[], spec: DatasetSpec, seed: number): RawRecord[] {
  const n = spec.numSamples;
  if (n === null) return records;
  if (n > records.length) {
    throw new UserError(`dataset "${spec.name}": num_samples is ${n} but it has only ${records.length} rows`);
  }
  const order = new Rng(seed).shuffle(records.map((_, i) => i)).slice(0, n);
  return order.sort((a, b) => a - b).map((i) => records[i]);
}

function isTextFile(path: string): boolean {
  return path.toLowerCase().endsWith('.txt');
}
