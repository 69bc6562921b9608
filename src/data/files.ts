/**
 * Reading dataset files into raw records: a JSON array (.json), JSON lines (.jsonl, or a .json
 * that holds JSON lines, as Hugging Face `datasets` accepts), plain text (.txt, for
 * pre-training), a folder of such files, or a list of files and folders.
 *
 * Records are not checked here beyond being parseable; conversion checks their fields.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';

import { FileFormatError, UserError } from '../errors.js';
import type { Source } from './types.js';

export interface RawRecord {
  /** The parsed row: normally an object; `{text}` for .txt files. */
  value: unknown;
  source: Source;
}

/**
 * How a .txt file becomes documents: `paragraph` (default) makes one document of each block of
 * lines separated by blank lines; `file` makes the whole file one document.
 */
export type TextSplit = 'paragraph' | 'file';

export interface ReadOptions {
  textSplit?: TextSplit;
}

export const DATA_EXTENSIONS = ['.json', '.jsonl', '.txt'] as const;

/**
 * The data files named by `paths`: files as given, folders expanded to their .json/.jsonl/.txt
 * files (sorted by name, not recursive; `dataset_info.json`, hidden files and other extensions
 * are skipped).
 */
export function listDataFiles(paths: string | readonly string[]): string[] {
  const out: string[] = [];
  for (const path of typeof paths === 'string' ? [paths] : paths) {
    let isDir: boolean;
    try {
      isDir = statSync(path).isDirectory();
    } catch {
      throw new UserError(`${path}: no such file or folder`);
    }
    if (!isDir) {
      checkExtension(path);
      out.push(path);
      continue;
    }
    const files = readdirSync(path)
      .filter((name) => !name.startsWith('.') && name !== 'dataset_info.json' && isDataFile(name))
      .sort()
      .map((name) => join(path, name))
      .filter((file) => statSync(file).isFile());
    if (files.length === 0) throw new UserError(`${path}: the folder holds no .json, .jsonl or .txt files`);
    out.push(...files);
  }
  return out;
}

/** Every record of every file named by `paths` (see {@link listDataFiles}), in order. */
export function readRecords(paths: string | readonly string[], options: ReadOptions = {}): RawRecord[] {
  return listDataFiles(paths).flatMap((file) => readFileRecords(file, options));
}

/** The records of one file, by its extension. */
export function readFileRecords(file: string, options: ReadOptions = {}): RawRecord[] {
  const ext = checkExtension(file);
  const text = readText(file);
  if (ext === '.txt') return textRecords(file, text, options.textSplit ?? 'paragraph');
  if (ext === '.jsonl') return jsonLines(file, text);
  return jsonArray(file, text);
}

/** The first record of a file (for guessing its format), or undefined when it has none. */
export function peekFirstRecord(file: string): unknown {
  const ext = checkExtension(file);
  if (ext === '.txt') return { text: '' };
  if (ext === '.jsonl') {
    const text = readText(file);
    const lines = text.split('\n');
    const first = lines.findIndex((l) => l.trim() !== '');
    if (first < 0) return undefined;
    return parseLine(file, lines[first], first + 1);
  }
  return readFileRecords(file)[0]?.value;
}

function isDataFile(name: string): boolean {
  return (DATA_EXTENSIONS as readonly string[]).includes(extname(name).toLowerCase());
}

function checkExtension(file: string): (typeof DATA_EXTENSIONS)[number] {
  const ext = extname(file).toLowerCase();
  if (!isDataFile(file)) {
    throw new UserError(`${file}: unsupported file type "${ext || '(none)'}"; tunekit reads .json, .jsonl and .txt`);
  }
  return ext as (typeof DATA_EXTENSIONS)[number];
}

function readText(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new UserError(`${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text; // a BOM is not part of the JSON
}

function jsonArray(file: string, text: string): RawRecord[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    // A .json file holding JSON lines is common, and `datasets` reads it; so do we.
    if (looksLikeJsonLines(text)) return jsonLines(file, text);
    throw new FileFormatError(file, `not valid JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(parsed)) {
    const got = parsed === null ? 'null' : typeof parsed === 'object' ? 'an object' : `a ${typeof parsed}`;
    throw new FileFormatError(file, `expected a JSON array of objects (one per example), got ${got}`);
  }
  return parsed.map((value, i) => ({ value, source: { file, row: i + 1 } }));
}

/** The first non-blank line is a whole JSON object and more lines follow. */
function looksLikeJsonLines(text: string): boolean {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  if (lines.length < 2 || !lines[0].trimStart().startsWith('{')) return false;
  try {
    JSON.parse(lines[0]);
    return true;
  } catch {
    return false;
  }
}

function jsonLines(file: string, text: string): RawRecord[] {
  const records: RawRecord[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    records.push({ value: parseLine(file, line, i + 1), source: { file, row: records.length + 1, line: i + 1 } });
  });
  return records;
}

function parseLine(file: string, line: string, lineNumber: number): unknown {
  try {
    return JSON.parse(line);
  } catch (err) {
    throw new FileFormatError(`${file}:${lineNumber}`, `not valid JSON (${(err as Error).message})`);
  }
}

function textRecords(file: string, text: string, split: TextSplit): RawRecord[] {
  const normalized = text.replace(/\r\n?/g, '\n');
  if (split === 'file') {
    const doc = normalized.trim();
    return doc === '' ? [] : [{ value: { text: doc }, source: { file, row: 1, line: 1 } }];
  }
  const records: RawRecord[] = [];
  let block: string[] = [];
  let start = 0;
  const flush = () => {
    if (block.length > 0) {
      records.push({ value: { text: block.join('\n').trim() }, source: { file, row: records.length + 1, line: start } });
    }
    block = [];
  };
  normalized.split('\n').forEach((line, i) => {
    if (line.trim() === '') return flush();
    if (block.length === 0) start = i + 1;
    block.push(line);
  });
  flush();
  return records;
}
