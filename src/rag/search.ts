/**
 * Retrieval: BM25, dense, or both fused by reciprocal rank; then optional reranking by a
 * yes/no judging model and an optional freshness rule; then a relevance verdict per hit, so
 * that an answer can say "not found" instead of inventing one.
 *
 * Relevance, per signal: lexical coverage (the share of the query's idf weight whose terms the
 * chunk contains, 0–1), cosine similarity of the embeddings, or the reranker's P(yes). A hit is
 * relevant when a signal the mode uses passes its threshold.
 */
import { UserError } from '../errors.js';
import type { Embedder } from './embed.js';
import { knowledgeBaseEmbedder } from './indexer.js';
import type { Reranker } from './rerank.js';
import type { ChunkRow, KnowledgeBase } from './store.js';
import { lexicalTerms, queryWords } from './terms.js';

export type SearchMode = 'hybrid' | 'dense' | 'bm25';
export const SEARCH_MODES: readonly SearchMode[] = ['hybrid', 'dense', 'bm25'];

export interface SearchOptions {
  /** Hits to return (default 5). */
  k?: number;
  /** Default: hybrid when the knowledge base has embeddings, else bm25. */
  mode?: SearchMode;
  /** Default: the model the knowledge base was embedded with, loaded once per knowledge base. */
  embedder?: Embedder | null;
  reranker?: Reranker | null;
  /** Candidates each retriever contributes (default max(20, 4k)). */
  candidates?: number;
  /** How many of the best candidates the reranker judges (default max(10, 2k)); only those are returned. */
  rerankCandidates?: number;
  /** Reciprocal rank fusion's constant (default 60). */
  rrfK?: number;
  /** Among hits about the same thing from different documents, the newer first. */
  freshness?: boolean;
  /** Lexical coverage a relevant hit reaches (default 0.25). */
  minLexical?: number;
  /** Cosine similarity a relevant hit reaches (default 0.5; depends on the embedding model). */
  minDense?: number;
  /** Reranker P(yes) a relevant hit reaches (default 0.5). */
  minRerank?: number;
}

export interface HitScores {
  bm25: number | null;
  /** Share of the query's idf weight present in the chunk, 0–1. */
  lexical: number;
  /** Cosine similarity to the query, when both have embeddings. */
  dense: number | null;
  rrf: number | null;
  rerank: number | null;
}

export interface SearchHit {
  /** 1-based. */
  rank: number;
  chunkId: number;
  /** Absolute path of the source file. */
  path: string;
  title: string;
  heading: string;
  locator: string;
  text: string;
  /** The document's date (front matter, else modified time), YYYY-MM-DD. */
  date: string;
  /** The same date in ms since the epoch. */
  dateMs: number;
  dateSource: 'front matter' | 'modified';
  /** What the order is by: P(yes) when reranked, else RRF (hybrid), BM25 (bm25) or cosine (dense). */
  score: number;
  scores: HitScores;
  relevant: boolean;
}

const embedders = new WeakMap<KnowledgeBase, Promise<Embedder | null>>();

/** The knowledge base's own embedding model, loaded once per open knowledge base. */
export function cachedEmbedder(kb: KnowledgeBase): Promise<Embedder | null> {
  let e = embedders.get(kb);
  if (!e) {
    e = knowledgeBaseEmbedder(kb);
    embedders.set(kb, e);
    e.catch(() => embedders.delete(kb));
  }
  return e;
}

/** Reciprocal rank fusion: Σ 1 / (k + rank) over the lists an id appears in (ranks from 1). */
export function reciprocalRankFusion(lists: readonly (readonly number[])[], k = 60): Map<number, number> {
  const fused = new Map<number, number>();
  for (const list of lists) list.forEach((id, i) => fused.set(id, (fused.get(id) ?? 0) + 1 / (k + i + 1)));
  return fused;
}

function isoDate(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

export async function searchKnowledgeBase(kb: KnowledgeBase, query: string, opts: SearchOptions = {}): Promise<SearchHit[]> {
  const k = opts.k ?? 5;
  if (!Number.isInteger(k) || k < 1) throw new UserError(`k must be a positive integer, got ${k}`);
  if (!query.trim()) throw new UserError('the query is empty');
  const stats = await kb.stats();
  if (stats.chunks === 0) throw new UserError(`knowledge base ${kb.name} is empty; add documents with: tunekit rag index DIR --kb ${kb.name}`);
  const mode = opts.mode ?? (stats.dim !== null ? 'hybrid' : 'bm25');
  if (!SEARCH_MODES.includes(mode)) throw new UserError(`unknown search mode "${mode}"; modes: ${SEARCH_MODES.join(', ')}`);
  const n = opts.candidates ?? Math.max(20, 4 * k);

  let embedder: Embedder | null = null;
  if (mode !== 'bm25') {
    if (stats.dim === null) {
      throw new UserError(`knowledge base ${kb.name} has no embeddings (it was indexed without --embed-model); use --mode bm25, or re-index with --embed-model DIR`);
    }
    embedder = opts.embedder ? await knowledgeBaseEmbedder(kb, opts.embedder) : await cachedEmbedder(kb);
  }
  const qvec = embedder ? embedder.embedQuery(query) : null;
  const words = queryWords(query);
  const terms = [...new Set([...lexicalTerms(query), ...words.flat()])];

  const lexical = mode === 'dense' ? [] : await kb.lexical(terms, n);
  const dense = mode === 'bm25' || !qvec ? [] : await kb.dense(qvec, n);
  const bm25 = new Map(lexical.map((r) => [r.id, r.score]));
  let order: number[];
  let primary: Map<number, number>;
  if (mode === 'hybrid') {
    primary = reciprocalRankFusion([lexical.map((r) => r.id), dense.map((r) => r.id)], opts.rrfK ?? 60);
    order = [...primary.keys()].sort((a, b) => primary.get(b)! - primary.get(a)! || a - b);
  } else if (mode === 'bm25') {
    primary = bm25;
    order = lexical.map((r) => r.id);
  } else {
    primary = new Map(dense.map((r) => [r.id, 1 - r.distance]));
    order = dense.map((r) => r.id);
  }
  order = order.slice(0, n);

  const rows = new Map((await kb.details(order, terms, qvec)).map((r) => [r.id, r]));
  const { n: total, df } = await kb.termStats(terms);
  const coverage = lexicalCoverage(words, total, df);
  let hits: SearchHit[] = order.map((id) => {
    const row = rows.get(id)!;
    return toHit(row, primary.get(id)!, {
      bm25: bm25.get(id) ?? null,
      lexical: coverage(new Set(row.matched)),
      dense: row.cosine,
      rrf: mode === 'hybrid' ? primary.get(id)! : null,
      rerank: null,
    });
  });

  if (opts.reranker && hits.length) {
    hits = hits.slice(0, Math.max(k, opts.rerankCandidates ?? Math.max(10, 2 * k)));
    const p = opts.reranker.score(query, hits.map((h) => h.text));
    hits.forEach((h, i) => {
      h.scores.rerank = p[i];
      h.score = p[i];
    });
    hits = hits.map((h, i) => ({ h, i })).sort((a, b) => b.h.score - a.h.score || a.i - b.i).map((x) => x.h);
  }
  if (opts.freshness) hits = preferNewer(hits);

  const minLexical = opts.minLexical ?? 0.25;
  const minDense = opts.minDense ?? 0.5;
  const minRerank = opts.minRerank ?? 0.5;
  for (const h of hits) {
    const s = h.scores;
    if (s.rerank !== null) h.relevant = s.rerank >= minRerank;
    else {
      const lexicalOk = mode !== 'dense' && s.lexical >= minLexical;
      const denseOk = mode !== 'bm25' && s.dense !== null && s.dense >= minDense;
      h.relevant = lexicalOk || denseOk;
    }
  }
  return hits.slice(0, k).map((h, i) => ({ ...h, rank: i + 1 }));
}

function toHit(row: ChunkRow, score: number, scores: HitScores): SearchHit {
  return {
    rank: 0,
    chunkId: row.id,
    path: row.path,
    title: row.title,
    heading: row.heading,
    locator: row.locator,
    text: row.text,
    date: isoDate(row.date),
    dateMs: row.date,
    dateSource: row.dateSource,
    score,
    scores,
    relevant: false,
  };
}

/**
 * Lexical relevance: how much of the query's words a chunk contains, each word weighted by its
 * rarest term's idf and counted by the share of its terms present (a chunk with 优惠 covers
 * half of the query word 优惠活动). Words absent from the whole knowledge base weigh as much as
 * the rarest words in it, so a question about something it never mentions scores low everywhere.
 */
export function lexicalCoverage(words: readonly string[][], total: number, df: ReadonlyMap<string, number>): (matched: ReadonlySet<string>) => number {
  // A word the knowledge base never uses weighs as much as one that a single chunk uses.
  const idf = (t: string): number => {
    const d = Math.max(1, df.get(t) ?? 0);
    return Math.log(1 + (total - d + 0.5) / (d + 0.5));
  };
  const weights = words.map((terms) => Math.max(...terms.map(idf)));
  const sum = weights.reduce((a, b) => a + b, 0);
  return (matched) => {
    if (sum === 0) return 0;
    let covered = 0;
    words.forEach((terms, i) => (covered += (weights[i] * terms.filter((t) => matched.has(t)).length) / terms.length));
    return covered / sum;
  };
}

/** Two chunks whose term sets overlap this much (Jaccard) say things about the same subject. */
export const SAME_SUBJECT_JACCARD = 0.3;

/**
 * The freshness rule: hits from different documents about the same subject (their chunks' term
 * sets overlap by {@link SAME_SUBJECT_JACCARD} or more) form a group; the group keeps its places
 * in the ranking but fills them newest document first. Unrelated hits never move.
 */
export function preferNewer(hits: SearchHit[]): SearchHit[] {
  const termSets = hits.map((h) => new Set(lexicalTerms(h.text)));
  const dates = hits.map((h) => h.dateMs);
  const parent = hits.map((_, i) => i);
  const find = (i: number): number => (parent[i] === i ? i : (parent[i] = find(parent[i])));
  for (let i = 0; i < hits.length; i++) {
    for (let j = i + 1; j < hits.length; j++) {
      if (hits[i].path === hits[j].path) continue;
      let both = 0;
      for (const t of termSets[i]) if (termSets[j].has(t)) both++;
      const union = termSets[i].size + termSets[j].size - both;
      if (union > 0 && both / union >= SAME_SUBJECT_JACCARD) parent[find(j)] = find(i);
    }
  }
  const groups = new Map<number, number[]>();
  hits.forEach((_, i) => groups.set(find(i), [...(groups.get(find(i)) ?? []), i]));
  const out = hits.slice();
  for (const slots of groups.values()) {
    if (slots.length < 2) continue;
    const newestFirst = slots.slice().sort((a, b) => dates[b] - dates[a] || a - b);
    slots.forEach((slot, j) => (out[slot] = hits[newestFirst[j]]));
  }
  return out;
}
