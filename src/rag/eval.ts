/**
 * Retrieval quality on questions with known source documents.
 *
 * A QA file is JSON lines: `{"question": "...", "source": "menu.md"}` (or `"sources": [...]`
 * when several documents answer it). A source matches a hit when it equals the hit's path, or
 * the path relative to the working directory, or ends the path after a `/`. For each question
 * the rank of the first hit from a right document counts: hit@k is the share of questions with
 * one in the top k; MRR averages 1/rank (0 when none is in the top k).
 */
import { readFileSync } from 'node:fs';
import { relative, resolve, sep } from 'node:path';

import { FileFormatError, UserError } from '../errors.js';
import { searchKnowledgeBase } from './search.js';
import type { SearchHit, SearchMode, SearchOptions } from './search.js';
import type { KnowledgeBase } from './store.js';

export interface QaItem {
  question: string;
  sources: string[];
  /** `file:line`, for messages. */
  where: string;
}

export function readQaFile(path: string): QaItem[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw new UserError(`${path}: file not found`);
  }
  const items: QaItem[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (e) {
      throw new FileFormatError(path, `line ${i + 1}: not valid JSON (${(e as Error).message})`);
    }
    const r = row as Record<string, unknown>;
    if (typeof r !== 'object' || r === null || typeof r.question !== 'string' || !r.question.trim()) {
      throw new FileFormatError(path, `line ${i + 1}: expected an object with a "question" string`);
    }
    const sources = typeof r.source === 'string' ? [r.source] : Array.isArray(r.sources) ? r.sources : null;
    if (!sources || sources.length === 0 || !sources.every((s): s is string => typeof s === 'string' && s !== '')) {
      throw new FileFormatError(path, `line ${i + 1}: expected "source" (a file name) or "sources" (a list of them)`);
    }
    items.push({ question: r.question, sources, where: `${path}:${i + 1}` });
  });
  if (items.length === 0) throw new FileFormatError(path, 'no questions in it');
  return items;
}

/** Whether a hit's file is one of the expected sources. */
export function matchesSource(hitPath: string, source: string): boolean {
  const normalized = source.split(/[\\/]/).join(sep);
  if (hitPath === resolve(normalized)) return true;
  const rel = relative(process.cwd(), hitPath);
  return rel === normalized || hitPath.endsWith(sep + normalized);
}

export interface QuestionResult {
  question: string;
  sources: string[];
  /** 1-based rank of the first right hit, or null when none is in the top k. */
  rank: number | null;
  top: string[];
}

export interface EvalReport {
  mode: SearchMode;
  k: number;
  questions: number;
  hitAt1: number;
  hitAtK: number;
  mrr: number;
  results: QuestionResult[];
}

export async function evaluateRetrieval(kb: KnowledgeBase, items: readonly QaItem[], opts: SearchOptions & { k?: number; mode: SearchMode }): Promise<EvalReport> {
  const k = opts.k ?? 5;
  const results: QuestionResult[] = [];
  for (const item of items) {
    const hits: SearchHit[] = await searchKnowledgeBase(kb, item.question, { ...opts, k });
    const index = hits.findIndex((h) => item.sources.some((s) => matchesSource(h.path, s)));
    results.push({ question: item.question, sources: item.sources, rank: index < 0 ? null : index + 1, top: hits.map((h) => h.path) });
  }
  const count = results.length;
  return {
    mode: opts.mode,
    k,
    questions: count,
    hitAt1: results.filter((r) => r.rank === 1).length / count,
    hitAtK: results.filter((r) => r.rank !== null).length / count,
    mrr: results.reduce((s, r) => s + (r.rank ? 1 / r.rank : 0), 0) / count,
    results,
  };
}
