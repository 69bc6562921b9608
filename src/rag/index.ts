/**
 * Retrieval-augmented generation over a knowledge base that changes every day: loaders,
 * splitting, incremental indexing, an embedded (PGlite) or PostgreSQL store with pgvector,
 * BM25 + dense retrieval fused by reciprocal rank, reranking, freshness, and answers that cite
 * their sources.
 */
export { answerWithSources, citedSources, formatContext, formatSourceList, numberSources, questionLanguage, retrieveContext } from './answer.js';
export type { AnswerOptions, AnswerResult, ContextOptions, Language, RetrievedContext, Source } from './answer.js';
export { DEFAULT_QUERY_INSTRUCTION, Embedder, l2normalize, modelFingerprint } from './embed.js';
export type { EmbedderOptions, Pooling } from './embed.js';
export { evaluateRetrieval, matchesSource, readQaFile } from './eval.js';
export type { EvalReport, QaItem, QuestionResult } from './eval.js';
export { htmlToText } from './html.js';
export {
  DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP_TOKENS, displayPath, indexKnowledgeBase, knowledgeBaseEmbedder, resolveIndexSettings,
  watchKnowledgeBase,
} from './indexer.js';
export type { IndexOptions, IndexReport, IndexSettings, KbWatcher, WatchOptions } from './indexer.js';
export { collectFiles, DOCUMENT_EXTENSIONS, documentKind, loadDocument, markdownSections, SkippedFile } from './loaders.js';
export type { DocumentKind, DocumentSection, LoadedDocument, LoadOptions } from './loaders.js';
export { DEFAULT_RERANK_INSTRUCTION, Reranker } from './rerank.js';
export type { RerankerOptions } from './rerank.js';
export { cachedEmbedder, preferNewer, reciprocalRankFusion, SEARCH_MODES, searchKnowledgeBase } from './search.js';
export type { HitScores, SearchHit, SearchMode, SearchOptions } from './search.js';
export { chunkHeader, splitDocument, splitSentences } from './split.js';
export type { Chunk, SplitOptions } from './split.js';
export { connectPostgres, isPostgresUrl, openEmbeddedSql, pgliteSql, pgSql } from './sql.js';
export type { Sql, SqlQueryable } from './sql.js';
export { embeddedKbDir, KnowledgeBase } from './store.js';
export type { ChunkRow, KbStats, StoredDocument } from './store.js';
export { lexicalTerms, stem } from './terms.js';
