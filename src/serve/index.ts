/** The OpenAI-compatible HTTP server: `startServer` loads a model and its adapters and listens. */
export { startServer, serveModels } from './server.js';
export type { RunningServer, ServeOptions, ServerEvent, ServerOptions, RequestEvent } from './server.js';
export type { GenerationEvent } from './handlers.js';
export { loadServedModels, adapterFor } from './models.js';
export type { LoadModelsOptions, ServedModels } from './models.js';
export { AdapterSet, folderId, parseAdapterFlag } from './adapters.js';
export type { AdapterSpec } from './adapters.js';
export { FairQueue } from './queue.js';
export { ApiError, toErrorResponse } from './errors.js';
export type { ApiErrorBody, ApiErrorType } from './errors.js';
export { embedIds, embeddingToBase64 } from './embeddings.js';
export { knowledgeBaseRetriever, openKnowledgeBaseRetriever, retrievalQuery } from './retrieval.js';
export type { Retrieval, Retriever } from './retrieval.js';
