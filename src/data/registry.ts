/**
 * Which files a dataset name means and how to read their rows: LLaMA-Factory's
 * `dataset_info.json` (`file_name`, `formatting`, `ranking`, `columns`, `tags`, `num_samples`),
 * plus tunekit's own `layout` key, or a file path given directly, whose format is guessed from
 * its first row.
 *
 * As in LLaMA-Factory, an entry that gives `columns` unsets every column it does not name (so
 * `{"system": "instruction", "prompt": "input", "response": "output"}` reads no query column);
 * tunekit keeps the defaults of the columns nothing can be trained without (`response`,
 * `messages`, `chosen`, `rejected`).
 */
import { existsSync } from 'node:fs';
import { extname, join } from 'node:path';

import { FileFormatError, UserError } from '../errors.js';
import { readJsonFile } from '../json-file.js';
import { listDataFiles, peekFirstRecord } from './files.js';

/** `openai` is sharegpt with OpenAI's keys (`messages` of `{role, content}`); `text` is pre-training text. */
export type Formatting = 'alpaca' | 'sharegpt' | 'openai' | 'text';

/**
 * How alpaca rows become turns. `task` (LLaMA-Factory's behaviour): the user turn is
 * instruction + "\n" + input. `persona` (the tutorial's method 1): the instruction is the system
 * prompt and the input the user turn.
 */
export type Layout = 'task' | 'persona';

/** Column names in the rows; null: the dataset has no such column. */
export interface Columns {
  prompt: string | null;
  query: string | null;
  response: string | null;
  history: string | null;
  messages: string | null;
  system: string | null;
  tools: string | null;
  chosen: string | null;
  rejected: string | null;
}

/** Keys and role names inside sharegpt/openai messages. */
export interface Tags {
  roleTag: string;
  contentTag: string;
  userTag: string;
  assistantTag: string;
  systemTag: string;
  observationTag: string;
  functionTag: string;
}

export interface DatasetSpec {
  /** The name in dataset_info.json, or the path as given. */
  name: string;
  /** Files and folders to read (dataset_info.json's `file_name` joined to the dataset folder). */
  paths: string[];
  formatting: Formatting;
  /** Preference data (chosen/rejected), for reward modelling and DPO. */
  ranking: boolean;
  /** Applied to `columns` already (persona moves prompt → system and query → prompt); kept for display. */
  layout: Layout;
  columns: Columns;
  tags: Tags;
  /** False when no `tags` were given: each row's message keys then pick sharegpt or OpenAI names. */
  tagsGiven: boolean;
  /** True when `columns` was given (pre-training then reads only the named prompt column). */
  columnsGiven: boolean;
  /** Keep this many rows, a seeded random subset (LLaMA-Factory's `num_samples`); null: all. */
  numSamples: number | null;
}

export interface ResolveDefaults {
  /** Layout of alpaca datasets whose entry names none (default `task`). */
  layout?: Layout;
}

export const DATASET_INFO = 'dataset_info.json';

export const SHAREGPT_TAGS: Readonly<Tags> = {
  roleTag: 'from', contentTag: 'value', userTag: 'human', assistantTag: 'gpt',
  systemTag: 'system', observationTag: 'observation', functionTag: 'function_call',
};

export const OPENAI_TAGS: Readonly<Tags> = {
  roleTag: 'role', contentTag: 'content', userTag: 'user', assistantTag: 'assistant',
  systemTag: 'system', observationTag: 'tool', functionTag: 'function',
};

/**
 * Columns of an entry without `columns`. LLaMA-Factory reads no system, history or tools column
 * by default, which silently ignores such fields; tunekit reads them when a row has them.
 */
const DEFAULT_COLUMNS: Readonly<Columns> = {
  prompt: 'instruction', query: 'input', response: 'output', history: 'history', messages: 'conversations',
  system: 'system', tools: 'tools', chosen: 'chosen', rejected: 'rejected',
};

/** Columns that keep their default when `columns` does not name them: nothing trains without them. */
const KEPT_COLUMNS: readonly (keyof Columns)[] = ['response', 'messages', 'chosen', 'rejected'];

const FORMATTINGS: readonly Formatting[] = ['alpaca', 'sharegpt', 'openai', 'text'];
const LAYOUTS: readonly Layout[] = ['task', 'persona'];
const TAG_KEYS: Record<string, keyof Tags> = {
  role_tag: 'roleTag', content_tag: 'contentTag', user_tag: 'userTag', assistant_tag: 'assistantTag',
  system_tag: 'systemTag', observation_tag: 'observationTag', function_tag: 'functionTag',
};

/**
 * The datasets named by `names` (a list, or names separated by commas): each a name in
 * `datasetDir/dataset_info.json`, or else a path to a file or folder (as given, or inside
 * `datasetDir`) whose format is guessed from its first row.
 */
export function resolveDatasets(
  names: readonly string[] | string,
  datasetDir: string,
  defaults: ResolveDefaults = {},
): DatasetSpec[] {
  const list = (typeof names === 'string' ? names.split(',') : names).map((n) => n.trim()).filter((n) => n !== '');
  if (list.length === 0) throw new UserError('no dataset given (set "dataset" to a name in dataset_info.json or a file)');
  const infoPath = join(datasetDir, DATASET_INFO);
  const info = existsSync(infoPath) ? readDatasetInfo(infoPath) : null;
  return list.map((name) => {
    if (info && Object.hasOwn(info, name)) return parseEntry(name, info[name], datasetDir, infoPath, defaults);
    for (const path of [name, join(datasetDir, name)]) if (existsSync(path)) return specForPath(name, path, defaults);
    const known = info ? Object.keys(info) : [];
    const where = info
      ? `it is not in ${infoPath} (datasets there: ${known.join(', ') || 'none'})`
      : `there is no ${infoPath}`;
    throw new UserError(`unknown dataset "${name}": ${where}, and no file or folder has that path`);
  });
}

/** Parses a dataset_info.json file: an object of entries. */
export function readDatasetInfo(path: string): Record<string, unknown> {
  return readJsonFile(path, 'expected an object of dataset entries ({"name": {"file_name": …}, …})');
}

/** One dataset_info.json entry as a spec; mistakes name the file and the entry. */
export function parseEntry(
  name: string,
  entry: unknown,
  datasetDir: string,
  infoPath: string,
  defaults: ResolveDefaults = {},
): DatasetSpec {
  const fail = (problem: string) => new FileFormatError(infoPath, `dataset "${name}": ${problem}`);
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw fail('expected an object');
  const e = entry as Record<string, unknown>;
  for (const remote of ['hf_hub_url', 'ms_hub_url', 'om_hub_url', 'script_url', 'cloud_file_name']) {
    if (e[remote] !== undefined && e.file_name === undefined) {
      throw fail(`"${remote}" is not supported: tunekit reads local files only; download the data and set "file_name"`);
    }
  }
  const fileNames = typeof e.file_name === 'string' ? [e.file_name] : e.file_name;
  if (!Array.isArray(fileNames) || fileNames.length === 0 || !fileNames.every((f) => typeof f === 'string')) {
    throw fail('"file_name" is missing (expected the name of a file or folder in the dataset folder)');
  }
  const formatting = e.formatting ?? 'alpaca';
  if (!FORMATTINGS.includes(formatting as Formatting)) {
    throw fail(`"formatting" is ${JSON.stringify(formatting)} (expected one of ${FORMATTINGS.join(', ')})`);
  }
  if (e.ranking !== undefined && typeof e.ranking !== 'boolean') throw fail('"ranking" must be true or false');
  if (e.layout !== undefined && !LAYOUTS.includes(e.layout as Layout)) {
    throw fail(`"layout" is ${JSON.stringify(e.layout)} (expected "task" or "persona")`);
  }
  if (e.layout !== undefined && formatting !== 'alpaca') throw fail('"layout" applies to alpaca datasets only');
  const numSamples = e.num_samples ?? null;
  if (numSamples !== null && !(Number.isInteger(numSamples) && (numSamples as number) > 0)) {
    throw fail('"num_samples" must be a positive integer');
  }

  const paths = fileNames.map((f) => join(datasetDir, f as string));
  const missing = paths.find((p) => !existsSync(p));
  if (missing !== undefined) throw fail(`"file_name": ${missing} does not exist`);
  const spec = baseSpec(name, paths, formatting as Formatting);
  spec.ranking = e.ranking === true;
  spec.numSamples = numSamples as number | null;
  if (e.columns !== undefined) {
    const given = stringMap(e.columns, '"columns"', fail);
    for (const key of Object.keys(given)) {
      if (!Object.hasOwn(DEFAULT_COLUMNS, key)) throw fail(`"columns.${key}" is not a column tunekit knows (${Object.keys(DEFAULT_COLUMNS).join(', ')})`);
    }
    for (const key of Object.keys(spec.columns) as (keyof Columns)[]) {
      spec.columns[key] = given[key] ?? (KEPT_COLUMNS.includes(key) ? spec.columns[key] : null);
    }
    spec.columnsGiven = true;
  }
  if (e.tags !== undefined) {
    const given = stringMap(e.tags, '"tags"', fail);
    for (const [key, value] of Object.entries(given)) {
      const field = TAG_KEYS[key];
      if (field === undefined) throw fail(`"tags.${key}" is not a tag tunekit knows (${Object.keys(TAG_KEYS).join(', ')})`);
      spec.tags[field] = value;
    }
    spec.tagsGiven = true;
  }
  const layout = (e.layout as Layout | undefined) ?? (formatting === 'alpaca' ? defaults.layout : undefined);
  if (layout) applyLayout(spec, layout, fail);
  if (formatting === 'text' && spec.ranking) throw fail('plain text cannot be a ranking dataset');
  return spec;
}

/** Moves the alpaca columns for the persona layout: instruction → system, input → user turn. */
function applyLayout(spec: DatasetSpec, layout: Layout, fail: (problem: string) => Error): void {
  spec.layout = layout;
  if (layout === 'task') return;
  const c = spec.columns;
  if (spec.columnsGiven && c.system !== null) {
    throw fail(
      `layout "persona" takes the system prompt from the prompt column ("${c.prompt ?? 'none'}"), so "columns.system" ("${c.system}") cannot also be set`,
    );
  }
  c.system = c.prompt;
  c.prompt = c.query;
  c.query = null;
}

function baseSpec(name: string, paths: string[], formatting: Formatting): DatasetSpec {
  const openai = formatting === 'openai';
  return {
    name,
    paths,
    formatting,
    ranking: false,
    layout: 'task',
    columns: { ...DEFAULT_COLUMNS, messages: openai ? 'messages' : 'conversations', prompt: formatting === 'text' ? 'text' : 'instruction' },
    tags: { ...(openai ? OPENAI_TAGS : SHAREGPT_TAGS) },
    tagsGiven: false,
    columnsGiven: false,
    numSamples: null,
  };
}

/** A file or folder named directly: its format from the keys of its first row. */
function specForPath(name: string, path: string, defaults: ResolveDefaults): DatasetSpec {
  const first = listDataFiles(path)[0];
  const row = extname(first).toLowerCase() === '.txt' ? { text: '' } : peekFirstRecord(first);
  const keys = typeof row === 'object' && row !== null && !Array.isArray(row) ? Object.keys(row) : [];
  const has = (key: string) => keys.includes(key);
  let formatting: Formatting;
  if (has('messages')) formatting = 'openai';
  else if (has('conversations')) formatting = 'sharegpt';
  else if (has('instruction') || has('output') || keys.length === 0) formatting = 'alpaca';
  else if (has('text')) formatting = 'text';
  else {
    throw new UserError(
      `${first}: cannot tell the data format from the first row's keys (${keys.join(', ')}); expected ` +
        'instruction/input/output (alpaca), conversations (sharegpt), messages (OpenAI) or text (pre-training), ' +
        'or register the file in dataset_info.json with "columns"',
    );
  }
  const spec = baseSpec(name, [path], formatting);
  spec.ranking = has('chosen') && has('rejected');
  if (formatting === 'alpaca' && defaults.layout) {
    applyLayout(spec, defaults.layout, (problem) => new UserError(`${path}: ${problem}`));
  }
  return spec;
}

function stringMap(value: unknown, what: string, fail: (problem: string) => Error): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw fail(`${what} must be an object`);
  for (const [key, v] of Object.entries(value)) {
    if (typeof v !== 'string') throw fail(`${what}.${key} must be a string`);
  }
  return value as Record<string, string>;
}
