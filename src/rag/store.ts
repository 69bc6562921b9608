/**
 * A knowledge base's tables and every query on them, one SQL text for both engines.
 *
 *   kb_meta       key → value: chunk size, overlap, the embedding model, its pooling and size
 *   kb_documents  one row per file: path, title, kind, content hash, size, mtime, date
 *   kb_chunks     text, heading, locator, token count, BM25 length, embedding vector(D)
 *   kb_terms      the BM25 postings: (term, chunk, term frequency)
 *
 * BM25 is computed in SQL from the postings, so lexical search scales with the database as
 * dense search does (pgvector's HNSW index over cosine distance). Deleting a document cascades
 * to its chunks and their postings.
 */
import { resolve } from 'node:path';

import { UserError } from '../errors.js';
import { connectPostgres, isPostgresUrl, openEmbeddedSql, redactUrl } from './sql.js';
import type { Sql, SqlQueryable } from './sql.js';

export const STORE_VERSION = '1';

/** pgvector's HNSW index takes vectors of at most this many dimensions. */
export const HNSW_MAX_DIM = 2000;

/** BM25's usual constants. */
const K1 = 1.2;
const B = 0.75;

export interface NewDocument {
  path: string;
  title: string;
  kind: string;
  hash: string;
  size: number;
  mtime: number;
  /** ms since the epoch: the front matter's date, else the modified time. */
  date: number;
  dateSource: 'front matter' | 'modified';
}

export interface StoredDocument extends NewDocument {
  id: number;
  chunks: number;
}

export interface NewChunk {
  ord: number;
  heading: string;
  locator: string;
  text: string;
  tokens: number;
  /** BM25 term frequencies. */
  terms: Map<string, number>;
  embedding: Float32Array | null;
}

export interface ChunkRow {
  id: number;
  ord: number;
  heading: string;
  locator: string;
  text: string;
  tokens: number;
  path: string;
  title: string;
  kind: string;
  date: number;
  dateSource: 'front matter' | 'modified';
  /** Cosine similarity to the query embedding, when both exist. */
  cosine: number | null;
  /** Which of the query's terms the chunk contains. */
  matched: string[];
}

export interface KbStats {
  documents: number;
  chunks: number;
  embedded: number;
  dim: number | null;
}

export interface OpenOptions {
  /** Make the store when it does not exist (indexing); otherwise a missing store is an error. */
  create?: boolean;
  /** Folder that `.tunekit/kb/NAME` is under; default the working directory. */
  cwd?: string;
}

/** The on-disk folder a `--kb` value names: a path as given, or `.tunekit/kb/NAME`. */
export function embeddedKbDir(target: string, cwd = process.cwd()): string {
  if (/[\\/]/.test(target) || target.startsWith('.') || target === '~') return resolve(cwd, target);
  if (!/^[\w.-]+$/u.test(target)) {
    throw new UserError(`--kb "${target}": a name may hold letters, digits, "-", "_" and "."; or give a folder path or a postgres:// URL`);
  }
  return resolve(cwd, '.tunekit', 'kb', target);
}

export function vectorLiteral(v: Float32Array): string {
  let s = '[';
  for (let i = 0; i < v.length; i++) s += (i ? ',' : '') + String(v[i]);
  return `${s}]`;
}

export class KnowledgeBase {
  private metaCache: Record<string, string> | null = null;
  private readonly t: { meta: string; documents: string; chunks: string; terms: string };

  private constructor(
    readonly sql: Sql,
    /** As the user named it, for messages. */
    readonly name: string,
    readonly schema: string | null,
  ) {
    const q = (table: string): string => (schema ? `"${schema}".${table}` : table);
    this.t = { meta: q('kb_meta'), documents: q('kb_documents'), chunks: q('kb_chunks'), terms: q('kb_terms') };
  }

  /**
   * Opens the knowledge base `target` names: a `postgres://` URL (tables in its `?schema=`, else
   * the connection's default schema), a folder path, or a name under `.tunekit/kb/`.
   */
  static async open(target: string, opts: OpenOptions = {}): Promise<KnowledgeBase> {
    if (isPostgresUrl(target)) {
      const url = new URL(target);
      const schema = url.searchParams.get('schema');
      url.searchParams.delete('schema');
      const sql = await connectPostgres(url.toString());
      return KnowledgeBase.fromSql(sql, { name: redactUrl(target), schema, create: opts.create });
    }
    const dir = embeddedKbDir(target, opts.cwd);
    const sql = await openEmbeddedSql(dir, { create: opts.create ?? false, name: target });
    return KnowledgeBase.fromSql(sql, { name: target, schema: null, create: opts.create });
  }

  /** A knowledge base over an open connection (tests share one PGlite between schemas). */
  static async fromSql(sql: Sql, opts: { name: string; schema?: string | null; create?: boolean }): Promise<KnowledgeBase> {
    const schema = opts.schema ?? null;
    if (schema !== null && !/^[a-z_][a-z0-9_]*$/.test(schema)) {
      await sql.close();
      throw new UserError(`schema "${schema}": use lower-case letters, digits and "_"`);
    }
    const kb = new KnowledgeBase(sql, opts.name, schema);
    try {
      await kb.init(opts.create ?? false);
    } catch (e) {
      await sql.close();
      throw e;
    }
    return kb;
  }

  private async init(create: boolean): Promise<void> {
    const [{ exists }] = await this.sql.query<{ exists: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS exists`, [this.t.meta]);
    if (exists) {
      const version = (await this.meta()).store_version;
      if (version !== STORE_VERSION) throw new UserError(`knowledge base ${this.name} has store version ${version ?? '(none)'}; this tunekit reads version ${STORE_VERSION}`);
      return;
    }
    if (!create) {
      throw new UserError(`no knowledge base in ${this.name}${this.schema ? ` (schema ${this.schema})` : ''}; build one with: tunekit rag index DIR --kb ${this.name}`);
    }
    try {
      await this.sql.exec('CREATE EXTENSION IF NOT EXISTS vector');
    } catch (e) {
      throw new UserError(`${this.sql.label}: pgvector is not available (CREATE EXTENSION vector: ${(e as Error).message})`);
    }
    const { meta, documents, chunks, terms } = this.t;
    await this.sql.transaction(async (tx) => {
      if (this.schema) await tx.exec(`CREATE SCHEMA IF NOT EXISTS "${this.schema}"`);
      await tx.exec(`
        CREATE TABLE ${meta} (key text PRIMARY KEY, value text NOT NULL);
        CREATE TABLE ${documents} (
          id serial PRIMARY KEY, path text NOT NULL UNIQUE, title text NOT NULL, kind text NOT NULL,
          hash text NOT NULL, size float8 NOT NULL, mtime float8 NOT NULL, date float8 NOT NULL, date_source text NOT NULL);
        CREATE TABLE ${chunks} (
          id serial PRIMARY KEY, doc_id int NOT NULL REFERENCES ${documents}(id) ON DELETE CASCADE, ord int NOT NULL,
          heading text NOT NULL, locator text NOT NULL, text text NOT NULL, tokens int NOT NULL, length int NOT NULL);
        CREATE INDEX kb_chunks_doc ON ${chunks} (doc_id);
        CREATE TABLE ${terms} (
          term text NOT NULL, chunk_id int NOT NULL REFERENCES ${chunks}(id) ON DELETE CASCADE, tf int NOT NULL,
          PRIMARY KEY (term, chunk_id));
        CREATE INDEX kb_terms_chunk ON ${terms} (chunk_id);`);
      await tx.query(`INSERT INTO ${meta} (key, value) VALUES ('store_version', $1)`, [STORE_VERSION]);
    });
    this.metaCache = null;
  }

  async meta(): Promise<Record<string, string>> {
    if (!this.metaCache) {
      const rows = await this.sql.query<{ key: string; value: string }>(`SELECT key, value FROM ${this.t.meta}`);
      this.metaCache = Object.fromEntries(rows.map((r) => [r.key, r.value]));
    }
    return this.metaCache;
  }

  async setMeta(entries: Record<string, string>, tx: SqlQueryable = this.sql): Promise<void> {
    for (const [key, value] of Object.entries(entries)) {
      await tx.query(`INSERT INTO ${this.t.meta} (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, [key, value]);
    }
    this.metaCache = null;
  }

  /** The embeddings' dimension, or null while the knowledge base has none. */
  async dim(): Promise<number | null> {
    const d = (await this.meta()).embed_dim;
    return d ? Number(d) : null;
  }

  /** Adds the vector column (and its HNSW index, when pgvector allows the size). */
  async ensureVectorColumn(dim: number): Promise<void> {
    const have = await this.dim();
    if (have === dim) return;
    if (have !== null) throw new Error(`ensureVectorColumn: the index has ${have} dimensions, asked for ${dim}`);
    await this.sql.transaction(async (tx) => {
      await tx.exec(`ALTER TABLE ${this.t.chunks} ADD COLUMN embedding vector(${dim})`);
      if (dim <= HNSW_MAX_DIM) await tx.exec(`CREATE INDEX kb_chunks_embedding ON ${this.t.chunks} USING hnsw (embedding vector_cosine_ops)`);
      await this.setMeta({ embed_dim: String(dim) }, tx);
    });
  }

  async documents(): Promise<StoredDocument[]> {
    const rows = await this.sql.query<StoredDocument & { date_source: string }>(
      `SELECT d.id, d.path, d.title, d.kind, d.hash, d.size, d.mtime, d.date, d.date_source,
              (SELECT count(*) FROM ${this.t.chunks} c WHERE c.doc_id = d.id)::int AS chunks
       FROM ${this.t.documents} d ORDER BY d.path`,
    );
    return rows.map(({ date_source, ...r }) => ({ ...r, dateSource: date_source as StoredDocument['dateSource'] }));
  }

  /** Replaces a document's chunks (or adds it) in one transaction. */
  async replaceDocument(doc: NewDocument, chunks: readonly NewChunk[]): Promise<void> {
    const dim = await this.dim();
    const withVectors = chunks.some((c) => c.embedding);
    if (withVectors && dim === null) throw new Error('replaceDocument: embeddings given before ensureVectorColumn');
    await this.sql.transaction(async (tx) => {
      await tx.query(`DELETE FROM ${this.t.documents} WHERE path = $1`, [doc.path]);
      const [{ id }] = await tx.query<{ id: number }>(
        `INSERT INTO ${this.t.documents} (path, title, kind, hash, size, mtime, date, date_source)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`,
        [doc.path, doc.title, doc.kind, doc.hash, doc.size, doc.mtime, doc.date, doc.dateSource],
      );
      if (chunks.length === 0) return;
      const lengths = chunks.map((c) => [...c.terms.values()].reduce((a, b) => a + b, 0));
      const params: unknown[] = [
        id,
        chunks.map((c) => c.ord),
        chunks.map((c) => c.heading),
        chunks.map((c) => c.locator),
        chunks.map((c) => c.text),
        chunks.map((c) => c.tokens),
        lengths,
      ];
      let columns = 'doc_id, ord, heading, locator, text, tokens, length';
      let select = '$1, u.ord, u.heading, u.locator, u.text, u.tokens, u.length';
      let from = 'unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[]) AS u(ord, heading, locator, text, tokens, length)';
      if (dim !== null) {
        params.push(chunks.map((c) => (c.embedding ? vectorLiteral(c.embedding) : null)));
        columns += ', embedding';
        select += ', u.embedding::vector';
        from = 'unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[], $8::text[]) AS u(ord, heading, locator, text, tokens, length, embedding)';
      }
      const inserted = await tx.query<{ id: number; ord: number }>(
        `INSERT INTO ${this.t.chunks} (${columns}) SELECT ${select} FROM ${from} RETURNING id, ord`,
        params,
      );
      const idOf = new Map(inserted.map((r) => [r.ord, r.id]));
      const terms: string[] = [];
      const ids: number[] = [];
      const tfs: number[] = [];
      for (const c of chunks) {
        for (const [term, tf] of c.terms) {
          terms.push(term);
          ids.push(idOf.get(c.ord)!);
          tfs.push(tf);
        }
      }
      if (terms.length) {
        await tx.query(`INSERT INTO ${this.t.terms} (term, chunk_id, tf) SELECT * FROM unnest($1::text[], $2::int[], $3::int[])`, [terms, ids, tfs]);
      }
    });
  }

  /** Records a new size and mtime for a file whose content did not change. */
  async touchDocument(path: string, size: number, mtime: number, date: number): Promise<void> {
    await this.sql.query(`UPDATE ${this.t.documents} SET size = $2, mtime = $3, date = $4 WHERE path = $1`, [path, size, mtime, date]);
  }

  async deleteDocuments(paths: readonly string[]): Promise<void> {
    if (paths.length) await this.sql.query(`DELETE FROM ${this.t.documents} WHERE path = ANY($1::text[])`, [paths]);
  }

  /** Drops every document and the embedding settings (for a rebuild with other settings). */
  async clear(): Promise<void> {
    const dim = await this.dim();
    await this.sql.transaction(async (tx) => {
      await tx.exec(`DELETE FROM ${this.t.documents}`);
      if (dim !== null) {
        await tx.exec(`DROP INDEX IF EXISTS ${this.schema ? `"${this.schema}".` : ''}kb_chunks_embedding`);
        await tx.exec(`ALTER TABLE ${this.t.chunks} DROP COLUMN embedding`);
      }
      await tx.exec(`DELETE FROM ${this.t.meta} WHERE key <> 'store_version'`);
    });
    this.metaCache = null;
  }

  async chunksWithoutEmbeddings(): Promise<{ id: number; text: string }[]> {
    return this.sql.query(`SELECT id, text FROM ${this.t.chunks} WHERE embedding IS NULL ORDER BY id`);
  }

  async setEmbeddings(rows: readonly { id: number; embedding: Float32Array }[]): Promise<void> {
    if (!rows.length) return;
    await this.sql.query(
      `UPDATE ${this.t.chunks} c SET embedding = u.e::vector FROM unnest($1::int[], $2::text[]) AS u(id, e) WHERE c.id = u.id`,
      [rows.map((r) => r.id), rows.map((r) => vectorLiteral(r.embedding))],
    );
  }

  async stats(): Promise<KbStats> {
    const dim = await this.dim();
    const [row] = await this.sql.query<{ documents: number; chunks: number; embedded: number }>(
      `SELECT (SELECT count(*) FROM ${this.t.documents})::int AS documents, (SELECT count(*) FROM ${this.t.chunks})::int AS chunks,
              ${dim === null ? '0' : `(SELECT count(*) FROM ${this.t.chunks} WHERE embedding IS NOT NULL)::int`} AS embedded`,
    );
    return { ...row, dim };
  }

  /** BM25 over the postings: chunk ids and scores, best first. */
  async lexical(terms: readonly string[], limit: number): Promise<{ id: number; score: number }[]> {
    if (!terms.length) return [];
    return this.sql.query(
      `WITH q AS (SELECT DISTINCT unnest($1::text[]) AS term),
            n AS (SELECT count(*)::float8 AS n, greatest(avg(length), 1)::float8 AS avgdl FROM ${this.t.chunks}),
            idf AS (SELECT t.term, ln(1 + (n.n - count(*) + 0.5) / (count(*) + 0.5)) AS idf
                    FROM ${this.t.terms} t JOIN q ON q.term = t.term CROSS JOIN n GROUP BY t.term, n.n)
       SELECT t.chunk_id AS id,
              sum(idf.idf * t.tf * ${K1 + 1} / (t.tf + ${K1} * (${1 - B} + ${B} * c.length / n.avgdl)))::float8 AS score
       FROM ${this.t.terms} t JOIN idf ON idf.term = t.term JOIN ${this.t.chunks} c ON c.id = t.chunk_id CROSS JOIN n
       GROUP BY t.chunk_id ORDER BY score DESC, t.chunk_id LIMIT $2`,
      [terms, limit],
    );
  }

  /** Nearest chunks by cosine distance (through the HNSW index where there is one). */
  async dense(query: Float32Array, limit: number): Promise<{ id: number; distance: number }[]> {
    await this.sql.exec(`SET hnsw.ef_search = ${Math.max(40, Math.min(1000, Math.ceil(limit)))}`);
    const rows = await this.sql.query<{ id: number; distance: number | null }>(
      `SELECT id, (embedding <=> $1::vector)::float8 AS distance FROM ${this.t.chunks} ORDER BY embedding <=> $1::vector LIMIT $2`,
      [vectorLiteral(query), limit],
    );
    return rows.filter((r): r is { id: number; distance: number } => r.distance !== null);
  }

  /** Chunks with their documents, the cosine to `query` and the query terms each contains. */
  async details(ids: readonly number[], terms: readonly string[], query: Float32Array | null): Promise<ChunkRow[]> {
    if (!ids.length) return [];
    const dim = await this.dim();
    const cosine = dim === null || !query ? 'NULL::float8' : `(1 - (c.embedding <=> $3::vector))::float8`;
    const params: unknown[] = [ids, terms];
    if (dim !== null && query) params.push(vectorLiteral(query));
    const rows = await this.sql.query<ChunkRow & { date_source: string }>(
      `SELECT c.id, c.ord, c.heading, c.locator, c.text, c.tokens, d.path, d.title, d.kind, d.date, d.date_source,
              ${cosine} AS cosine,
              ARRAY(SELECT t.term FROM ${this.t.terms} t WHERE t.chunk_id = c.id AND t.term = ANY($2::text[]) ORDER BY t.term) AS matched
       FROM ${this.t.chunks} c JOIN ${this.t.documents} d ON d.id = c.doc_id WHERE c.id = ANY($1::int[])`,
      params,
    );
    return rows.map(({ date_source, ...r }) => ({ ...r, dateSource: date_source as ChunkRow['dateSource'] }));
  }

  /** How many chunks there are and how many contain each term (for lexical relevance). */
  async termStats(terms: readonly string[]): Promise<{ n: number; df: Map<string, number> }> {
    const [{ n }] = await this.sql.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${this.t.chunks}`);
    const rows = terms.length
      ? await this.sql.query<{ term: string; df: number }>(
          `SELECT term, count(*)::int AS df FROM ${this.t.terms} WHERE term = ANY($1::text[]) GROUP BY term`,
          [terms],
        )
      : [];
    return { n, df: new Map(rows.map((r) => [r.term, r.df])) };
  }

  async close(): Promise<void> {
    await this.sql.close();
  }
}
