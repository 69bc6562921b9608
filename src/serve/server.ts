/**
 * An OpenAI-compatible HTTP server over node:http:
 *
 *   GET  /health                 {"status": "ok", ...}            (no API key needed)
 *   GET  /v1/models              the base model and its adapters
 *   GET  /v1/models/{id}
 *   POST /v1/chat/completions    chat, `stream: true` as server-sent events
 *   POST /v1/completions         plain-text continuation
 *   POST /v1/embeddings          mean-pooled hidden states
 *
 * Requests take turns on the one model through a bounded FIFO queue (429 when full). A client
 * that disconnects aborts its request: it leaves the queue, or its generation stops at the next
 * token. Errors are OpenAI's JSON, mapped to a status in `errors.ts` only.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

import { ApiError, invalidParam, methodNotAllowed, notFound, toErrorResponse, unauthorized } from './errors.js';
import { chatCompletions, completions, embeddings, listModels, modelObject } from './handlers.js';
import type { Exchange, GenerationEvent, HandlerContext } from './handlers.js';
import { loadServedModels } from './models.js';
import type { LoadModelsOptions, ServedModels } from './models.js';
import { FairQueue } from './queue.js';
import { asBody } from './requests.js';
import type { Retriever } from './retrieval.js';

export interface RequestEvent {
  type: 'request';
  method: string;
  path: string;
  /** 499: the client went away before the answer was complete. */
  status: number;
  ms: number;
  /** For 5xx: what went wrong inside (never sent to the client). */
  error?: unknown;
}

export type ServerEvent = RequestEvent | GenerationEvent;

export interface ServerOptions {
  /** Default 127.0.0.1: only this machine can connect. */
  host?: string;
  /** Default 8000; 0 picks a free port. */
  port?: number;
  /** When set, every /v1 request needs `Authorization: Bearer <apiKey>`. */
  apiKey?: string | null;
  /** Requests that may wait behind the running one (default 16); more get 429. */
  maxQueue?: number;
  /** max_tokens when a request gives none (default 512, capped by the context left). */
  defaultMaxTokens?: number;
  /** Retrieval for chat requests (`--kb`), see retrieval.ts. */
  retriever?: Retriever | null;
  /** Called after each request and each generation (logging, tests). */
  onEvent?: (e: ServerEvent) => void;
  /** Largest request body accepted (default 16 MiB). */
  maxBodyBytes?: number;
}

export interface ServeOptions extends LoadModelsOptions, ServerOptions {}

export interface RunningServer {
  /** `http://host:port`, the base URL clients add `/v1` to. */
  url: string;
  host: string;
  port: number;
  models: ServedModels;
  queue: FairQueue;
  server: Server;
  /** Stops accepting, aborts running requests and closes every connection. */
  close(): Promise<void>;
}

/** Loads the model and its adapters and starts listening. */
export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  return serveModels(loadServedModels(opts), opts);
}

/** Serves models already loaded. */
export async function serveModels(models: ServedModels, opts: ServerOptions = {}): Promise<RunningServer> {
  const host = opts.host ?? '127.0.0.1';
  const queue = new FairQueue(opts.maxQueue ?? 16);
  const onEvent = opts.onEvent ?? (() => {});
  const ctx: HandlerContext = {
    models,
    queue,
    retriever: opts.retriever ?? null,
    defaultMaxTokens: opts.defaultMaxTokens ?? 512,
    emit: onEvent,
  };
  const inFlight = new Set<AbortController>();
  const server = createServer((req, res) => {
    const controller = new AbortController();
    inFlight.add(controller);
    res.on('close', () => {
      inFlight.delete(controller);
      if (!res.writableFinished) controller.abort(new ClientGone());
    });
    void handle(ctx, opts, req, res, controller.signal, onEvent);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 8000, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shownHost}:${port}`,
    host,
    port,
    models,
    queue,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of inFlight) c.abort(new ClientGone());
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The reason a request's signal aborts: its client disconnected (or the server is closing). */
class ClientGone extends Error {
  constructor() {
    super('the client disconnected');
    this.name = 'ClientGone';
  }
}

async function handle(
  ctx: HandlerContext,
  opts: ServerOptions,
  req: IncomingMessage,
  res: ServerResponse,
  signal: AbortSignal,
  onEvent: (e: ServerEvent) => void,
): Promise<void> {
  const started = performance.now();
  const method = req.method ?? 'GET';
  const path = new URL(req.url ?? '/', 'http://localhost').pathname.replace(/\/+$/, '') || '/';
  const ex: Exchange = { res, signal };
  let status = 200;
  let failure: unknown;
  try {
    const body = await route(ctx, opts, method, path, req, ex);
    if (body !== null) sendJson(res, 200, body);
  } catch (e) {
    if (signal.aborted) {
      status = 499;
    } else {
      const answer = toErrorResponse(e);
      status = answer.status;
      if (status >= 500) failure = e;
      if (res.headersSent) {
        // Mid-stream: the status is sent already; OpenAI's clients read an error event.
        if (!res.writableEnded && !res.destroyed) res.end(`data: ${JSON.stringify(answer.body)}\n\n`);
      } else {
        sendJson(res, status, answer.body);
      }
    }
  }
  if (signal.aborted && status === 200) status = 499;
  onEvent({ type: 'request', method, path, status, ms: performance.now() - started, ...(failure !== undefined ? { error: failure } : {}) });
}

/** The response body for the route, or null when the handler answered itself (streaming). */
async function route(ctx: HandlerContext, opts: ServerOptions, method: string, path: string, req: IncomingMessage, ex: Exchange): Promise<unknown> {
  if (path === '/health') {
    if (method !== 'GET') throw methodNotAllowed(method, path, 'GET');
    return { status: 'ok', models: ctx.models.ids, queue: ctx.queue.stats };
  }
  if (!path.startsWith('/v1/')) throw notFound(method, path);
  checkApiKey(req, opts.apiKey ?? null);

  if (path === '/v1/models') {
    if (method !== 'GET') throw methodNotAllowed(method, path, 'GET');
    return listModels(ctx);
  }
  if (path.startsWith('/v1/models/')) {
    if (method !== 'GET') throw methodNotAllowed(method, path, 'GET');
    return modelObject(ctx, decodeURIComponent(path.slice('/v1/models/'.length)));
  }
  const post = { '/v1/chat/completions': chatCompletions, '/v1/completions': completions, '/v1/embeddings': embeddings }[path];
  if (!post) throw notFound(method, path);
  if (method !== 'POST') throw methodNotAllowed(method, path, 'POST');
  const body = asBody(await readJson(req, opts.maxBodyBytes ?? 16 * 1024 * 1024));
  return post(ctx, body, ex);
}

/** `Authorization: Bearer KEY`, compared in constant time (hashes of equal length, timingSafeEqual). */
function checkApiKey(req: IncomingMessage, expected: string | null): void {
  if (expected === null) return;
  const header = req.headers.authorization;
  const m = header ? /^Bearer\s+(.+)$/i.exec(header) : null;
  if (!m) throw unauthorized("You didn't provide an API key. Send it in the Authorization header: Authorization: Bearer YOUR_KEY");
  const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();
  if (!timingSafeEqual(digest(m[1].trim()), digest(expected))) throw unauthorized('Incorrect API key provided.');
}

async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new ApiError('invalid_request_error', `The request body is larger than ${limit} bytes`, null, 'request_too_large', 413);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') throw invalidParam(null, 'The request body is empty; expected a JSON object');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw invalidParam(null, `We could not parse the JSON body of your request (${(e as Error).message}). Send valid JSON.`);
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.destroyed || res.writableEnded) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}
