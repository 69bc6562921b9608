/**
 * The endpoints' work, between a checked request body and the response: choose the adapter,
 * build the prompt (with retrieved context under `--kb`), check it fits the context, wait for
 * the model's turn, generate or embed, and answer in OpenAI's shapes, streamed as server-sent
 * events when asked.
 */
import { randomInt, randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { setImmediate as nextTurn } from 'node:timers/promises';

import { generateAsync } from '../infer/generate-async.js';
import type { GenerateOptions, GenerateResult } from '../infer/decoding.js';
import { encodeChatPrompt } from '../infer/pipeline.js';
import type { Pipeline } from '../infer/pipeline.js';
import { embedIds, embeddingToBase64 } from './embeddings.js';
import { contextLengthExceeded, invalidParam } from './errors.js';
import { adapterFor } from './models.js';
import type { ServedModels } from './models.js';
import type { FairQueue } from './queue.js';
import { parseChatRequest, parseCompletionRequest, parseEmbeddingRequest } from './requests.js';
import type { SamplingRequest } from './requests.js';
import type { Retriever } from './retrieval.js';

/** What the server reports after each generation (tests and the CLI's log read it). */
export interface GenerationEvent {
  type: 'generation';
  endpoint: 'chat' | 'completion';
  model: string;
  promptTokens: number;
  completionTokens: number;
  finishReason: GenerateResult['finishReason'];
  stream: boolean;
  ms: number;
}

export interface HandlerContext {
  models: ServedModels;
  queue: FairQueue;
  retriever: Retriever | null;
  /** max_tokens when a request gives none (capped by what the context leaves). */
  defaultMaxTokens: number;
  emit: (e: GenerationEvent) => void;
}

/** One request's view of the exchange: the response, and a signal that aborts when the client leaves. */
export interface Exchange {
  res: ServerResponse;
  signal: AbortSignal;
}

export function listModels(ctx: HandlerContext): unknown {
  return { object: 'list', data: ctx.models.ids.map((id) => modelObject(ctx, id)) };
}

export function modelObject(ctx: HandlerContext, id: string): unknown {
  adapterFor(ctx.models, id);
  const root = ctx.models.baseId;
  return { id, object: 'model', created: ctx.models.created, owned_by: 'tunekit', root, parent: id === root ? null : root };
}

export async function chatCompletions(ctx: HandlerContext, body: Record<string, unknown>, ex: Exchange): Promise<unknown> {
  const req = parseChatRequest(body);
  const adapter = adapterFor(ctx.models, req.model);
  if (!ctx.retriever) {
    return runGeneration(ctx, ex, { endpoint: 'chat', req, adapter, promptIds: encodeChatPrompt(ctx.models.pipeline, req.messages) });
  }
  const found = await ctx.retriever.retrieve(req.messages, ex.signal);
  if (found.reply !== null) return cannedReply(ex, req, found.reply, found.sources);
  const promptIds = encodeChatPrompt(ctx.models.pipeline, found.messages);
  return runGeneration(ctx, ex, { endpoint: 'chat', req, adapter, promptIds, sources: found.sources });
}

export async function completions(ctx: HandlerContext, body: Record<string, unknown>, ex: Exchange): Promise<unknown> {
  const req = parseCompletionRequest(body);
  const adapter = adapterFor(ctx.models, req.model);
  const { tokenizer, model } = ctx.models.pipeline;
  let promptIds: number[];
  if (typeof req.prompt === 'string') promptIds = tokenizer.encode(req.prompt);
  else {
    const bad = req.prompt.find((id) => id >= model.config.vocabSize);
    if (bad !== undefined) throw invalidParam('prompt', `token id ${bad} is outside the vocabulary (size ${model.config.vocabSize})`);
    promptIds = req.prompt;
  }
  if (promptIds.length === 0) throw invalidParam('prompt', "'prompt' encodes to no tokens");
  return runGeneration(ctx, ex, { endpoint: 'completion', req, adapter, promptIds });
}

export async function embeddings(ctx: HandlerContext, body: Record<string, unknown>, ex: Exchange): Promise<unknown> {
  const req = parseEmbeddingRequest(body);
  const adapter = adapterFor(ctx.models, req.model);
  const { tokenizer, model } = ctx.models.pipeline;
  const { maxPositions, vocabSize, hiddenSize } = model.config;
  if (req.dimensions !== null && req.dimensions !== hiddenSize) {
    throw invalidParam('dimensions', `this model's embeddings have ${hiddenSize} dimensions; 'dimensions' ${req.dimensions} is not supported`);
  }
  const many = req.inputs.length > 1;
  const ids = req.inputs.map((input, i) => {
    const where = many ? `input[${i}]` : 'input';
    const out = typeof input === 'string' ? tokenizer.encode(input, { addSpecialTokens: false }) : input;
    if (out.length === 0) throw invalidParam('input', `${where} encodes to no tokens`);
    const bad = out.find((id) => id >= vocabSize);
    if (bad !== undefined) throw invalidParam('input', `${where}: token id ${bad} is outside the vocabulary (size ${vocabSize})`);
    if (out.length > maxPositions) {
      throw invalidParam('input', `${where} has ${out.length} tokens; this model's maximum context length is ${maxPositions} tokens`, 'context_length_exceeded');
    }
    return out;
  });
  const release = await ctx.queue.acquire(ex.signal);
  const data: unknown[] = [];
  try {
    ctx.models.adapters.use(adapter);
    for (let i = 0; i < ids.length; i++) {
      if (i > 0) await nextTurn();
      ex.signal.throwIfAborted();
      const v = embedIds(model, ids[i]);
      data.push({ object: 'embedding', index: i, embedding: req.encodingFormat === 'base64' ? embeddingToBase64(v) : Array.from(v) });
    }
  } finally {
    release();
  }
  const tokens = ids.reduce((n, x) => n + x.length, 0);
  return { object: 'list', data, model: req.model, usage: { prompt_tokens: tokens, total_tokens: tokens } };
}

interface GenerationJob {
  endpoint: 'chat' | 'completion';
  req: SamplingRequest;
  adapter: string | null;
  promptIds: number[];
  sources?: unknown[];
}

/**
 * Checks the length, waits for the model, generates. Returns the response body, or null when
 * the answer was streamed (the response is then ended here).
 */
async function runGeneration(ctx: HandlerContext, ex: Exchange, job: GenerationJob): Promise<unknown> {
  const { req, promptIds, endpoint } = job;
  const p = ctx.models.pipeline;
  const limit = p.model.config.maxPositions;
  const param = endpoint === 'chat' ? 'messages' : 'prompt';
  if (req.maxTokens !== null && promptIds.length + req.maxTokens > limit) {
    throw contextLengthExceeded(param, limit, promptIds.length, req.maxTokens);
  }
  if (promptIds.length >= limit) throw contextLengthExceeded(param, limit, promptIds.length, 1);
  const maxNewTokens = req.maxTokens ?? Math.min(ctx.defaultMaxTokens, limit - promptIds.length);
  const options = generateOptions(req, p, maxNewTokens, ex.signal);

  const release = await ctx.queue.acquire(ex.signal);
  const started = performance.now();
  const shape = responseShape(endpoint, req.model);
  let result: GenerateResult;
  try {
    ctx.models.adapters.use(job.adapter);
    if (req.stream) {
      const sse = new EventStream(ex.res);
      if (endpoint === 'chat') sse.send(shape.chunk({ role: 'assistant', content: '' }, null, req.includeUsage));
      options.onText = (piece) => sse.send(shape.chunk({ content: piece }, null, req.includeUsage));
      result = await generateAsync(p.model, p.tokenizer, promptIds, options);
      if (result.finishReason !== 'aborted') {
        sse.send(shape.chunk({}, result.finishReason, req.includeUsage, job.sources));
        if (req.includeUsage) sse.send({ ...shape.chunkHead(), choices: [], usage: usage(result) });
        sse.done();
      }
    } else {
      result = await generateAsync(p.model, p.tokenizer, promptIds, options);
    }
  } finally {
    release();
  }
  ctx.emit({
    type: 'generation', endpoint, model: req.model, promptTokens: result.promptTokens, completionTokens: result.ids.length,
    finishReason: result.finishReason, stream: req.stream, ms: performance.now() - started,
  });
  if (req.stream || result.finishReason === 'aborted') return null;
  return { ...shape.head(), choices: [shape.choice(result)], usage: usage(result), ...(job.sources ? { sources: job.sources } : {}) };
}

/** A chat answer given without the model (retrieval found nothing), in the same shapes. */
function cannedReply(ex: Exchange, req: SamplingRequest, text: string, sources: unknown[]): unknown {
  const shape = responseShape('chat', req.model);
  const result: GenerateResult = { text, ids: [], promptTokens: 0, finishReason: 'stop', prefillMs: 0, decodeMs: 0 };
  if (!req.stream) return { ...shape.head(), choices: [shape.choice(result)], usage: usage(result), sources };
  const sse = new EventStream(ex.res);
  sse.send(shape.chunk({ role: 'assistant', content: '' }, null, req.includeUsage));
  sse.send(shape.chunk({ content: text }, null, req.includeUsage));
  sse.send(shape.chunk({}, 'stop', req.includeUsage, sources));
  if (req.includeUsage) sse.send({ ...shape.chunkHead(), choices: [], usage: usage(result) });
  sse.done();
  return null;
}

/** The request's sampling over the model's generation_config.json, over OpenAI's defaults. */
function generateOptions(req: SamplingRequest, p: Pipeline, maxNewTokens: number, signal: AbortSignal): GenerateOptions {
  const d = p.defaults;
  return {
    maxNewTokens,
    temperature: req.temperature ?? d.temperature ?? 1,
    topP: req.topP ?? d.topP ?? 1,
    topK: req.topK ?? d.topK ?? 0,
    repetitionPenalty: req.repetitionPenalty ?? d.repetitionPenalty ?? 1,
    seed: req.seed ?? randomInt(2 ** 31),
    stopTokenIds: req.ignoreEos ? [] : p.stopTokenIds,
    stopStrings: req.stop,
    signal,
  };
}

function usage(r: GenerateResult): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
  return { prompt_tokens: r.promptTokens, completion_tokens: r.ids.length, total_tokens: r.promptTokens + r.ids.length };
}

type Finish = 'stop' | 'length' | null;

/** OpenAI's objects for chat completions and (legacy) text completions, one id per response. */
function responseShape(endpoint: 'chat' | 'completion', model: string) {
  const chat = endpoint === 'chat';
  const id = `${chat ? 'chatcmpl' : 'cmpl'}-${randomUUID().replaceAll('-', '')}`;
  const created = Math.floor(Date.now() / 1000);
  const finish = (r: GenerateResult['finishReason']): Finish => (r === 'aborted' ? null : r);
  const chunkHead = () => ({ id, object: chat ? 'chat.completion.chunk' : 'text_completion', created, model, system_fingerprint: null });
  return {
    head: () => ({ id, object: chat ? 'chat.completion' : 'text_completion', created, model, system_fingerprint: null }),
    chunkHead,
    choice: (r: GenerateResult) =>
      chat
        ? { index: 0, message: { role: 'assistant', content: r.text, refusal: null }, logprobs: null, finish_reason: finish(r.finishReason) }
        : { index: 0, text: r.text, logprobs: null, finish_reason: finish(r.finishReason) },
    chunk: (delta: { role?: string; content?: string }, finishReason: Finish, withUsage: boolean, sources?: unknown[]) => ({
      ...chunkHead(),
      choices: [
        chat
          ? { index: 0, delta, logprobs: null, finish_reason: finishReason }
          : { index: 0, text: delta.content ?? '', logprobs: null, finish_reason: finishReason },
      ],
      ...(withUsage ? { usage: null } : {}),
      ...(sources ? { sources } : {}),
    }),
  };
}

/** Server-sent events: `data: {json}` blocks, then `data: [DONE]`. Writes nothing once the client has gone. */
export class EventStream {
  constructor(private readonly res: ServerResponse) {
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
    res.flushHeaders();
  }

  send(data: unknown): void {
    if (this.open) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  done(): void {
    if (!this.open) return;
    this.res.write('data: [DONE]\n\n');
    this.res.end();
  }

  get open(): boolean {
    return !this.res.destroyed && !this.res.writableEnded;
  }
}
