/**
 * Request bodies of the OpenAI API, checked field by field. Every problem is an `ApiError`
 * naming the field (`param`) and what was expected, as OpenAI answers. Fields tunekit does not
 * act on are ignored, as vLLM does, except those whose non-default value would change the
 * answer (tools, logprobs, n > 1, penalties, …): those are refused rather than silently dropped.
 */
import type { ChatMessage } from '../text/chat-template.js';
import { invalidParam } from './errors.js';

type Body = Record<string, unknown>;

/** What every generating endpoint takes besides its prompt. */
export interface SamplingRequest {
  model: string;
  /** null: as many as the context allows, up to the server's default. */
  maxTokens: number | null;
  temperature: number | null;
  topP: number | null;
  topK: number | null;
  repetitionPenalty: number | null;
  seed: number | null;
  stop: string[];
  /** vLLM's extension: keep going past the end-of-turn token (benchmarks, tests). */
  ignoreEos: boolean;
  stream: boolean;
  /** `stream_options.include_usage`: a last chunk with the token counts. */
  includeUsage: boolean;
}

export interface ChatRequest extends SamplingRequest {
  messages: ChatMessage[];
}

export interface CompletionRequest extends SamplingRequest {
  /** Text, or token ids. */
  prompt: string | number[];
}

export interface EmbeddingRequest {
  model: string;
  inputs: Array<string | number[]>;
  encodingFormat: 'float' | 'base64';
  dimensions: number | null;
}

/** Parsed JSON must be an object. */
export function asBody(value: unknown): Body {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalidParam(null, `The request body must be a JSON object, got ${describe(value)}`);
  }
  return value as Body;
}

export function parseChatRequest(body: Body): ChatRequest {
  const raw = body.messages;
  if (raw === undefined) throw invalidParam('messages', "Missing required parameter: 'messages'");
  if (!Array.isArray(raw) || raw.length === 0) throw invalidParam('messages', `'messages' must be a non-empty array, got ${describe(raw)}`);
  const messages = raw.map((m, i) => parseMessage(m, `messages[${i}]`));
  refuseUnless(body, 'tools', (v) => v === null || (Array.isArray(v) && v.length === 0), 'tool calls are not supported');
  refuseUnless(body, 'tool_choice', (v) => v === null || v === 'none', 'tool calls are not supported');
  refuseUnless(body, 'response_format', (v) => v === null || (isObject(v) && v.type === 'text'), 'only {"type": "text"} is supported');
  refuseUnless(body, 'logprobs', (v) => v === null || v === false, 'logprobs are not supported');
  refuseUnless(body, 'top_logprobs', (v) => v === null || v === 0, 'logprobs are not supported');
  const maxTokens = optionalInt(body, 'max_completion_tokens', 1) ?? optionalInt(body, 'max_tokens', 1);
  return { ...parseSampling(body), maxTokens, messages };
}

export function parseCompletionRequest(body: Body): CompletionRequest {
  const raw = body.prompt;
  let prompt: string | number[];
  if (raw === undefined) throw invalidParam('prompt', "Missing required parameter: 'prompt'");
  if (typeof raw === 'string') prompt = raw;
  else if (isTokenIds(raw)) prompt = raw;
  else if (Array.isArray(raw) && raw.length === 1 && (typeof raw[0] === 'string' || isTokenIds(raw[0]))) prompt = raw[0] as string | number[];
  else if (Array.isArray(raw) && raw.length > 1) throw invalidParam('prompt', 'Only one prompt per request is supported; send one request per prompt');
  else throw invalidParam('prompt', `'prompt' must be a string or an array of token ids, got ${describe(raw)}`);
  if (prompt.length === 0) throw invalidParam('prompt', "'prompt' is empty");
  refuseUnless(body, 'echo', (v) => v === null || v === false, 'echo is not supported');
  refuseUnless(body, 'suffix', (v) => v === null || v === '', 'suffix is not supported');
  refuseUnless(body, 'logprobs', (v) => v === null || v === 0, 'logprobs are not supported');
  refuseUnless(body, 'best_of', (v) => v === null || v === 1, 'best_of > 1 is not supported');
  return { ...parseSampling(body), maxTokens: optionalInt(body, 'max_tokens', 1), prompt };
}

export function parseEmbeddingRequest(body: Body): EmbeddingRequest {
  const model = requiredModel(body);
  const raw = body.input;
  if (raw === undefined) throw invalidParam('input', "Missing required parameter: 'input'");
  let inputs: Array<string | number[]>;
  if (typeof raw === 'string' || isTokenIds(raw)) inputs = [raw];
  else if (Array.isArray(raw) && raw.length > 0 && raw.every((x) => typeof x === 'string')) inputs = raw as string[];
  else if (Array.isArray(raw) && raw.length > 0 && raw.every(isTokenIds)) inputs = raw as number[][];
  else throw invalidParam('input', `'input' must be a string, an array of strings, or token ids, got ${describe(raw)}`);
  if (inputs.length > 2048) throw invalidParam('input', `'input' has ${inputs.length} items; at most 2048 per request`);
  inputs.forEach((x, i) => {
    if (x.length === 0) throw invalidParam('input', `'input'${inputs.length > 1 ? `[${i}]` : ''} is empty`);
  });
  const format = body.encoding_format ?? 'float';
  if (format !== 'float' && format !== 'base64') throw invalidParam('encoding_format', `'encoding_format' must be "float" or "base64", got ${describe(format)}`);
  return { model, inputs, encodingFormat: format, dimensions: optionalInt(body, 'dimensions', 1) };
}

function parseSampling(body: Body): Omit<SamplingRequest, 'maxTokens'> {
  const n = optionalInt(body, 'n', 1);
  if (n !== null && n !== 1) throw invalidParam('n', `n=${n}: one choice per request is supported; send n requests`);
  for (const name of ['presence_penalty', 'frequency_penalty']) {
    const v = optionalNumber(body, name, -2, 2);
    if (v !== null && v !== 0) throw invalidParam(name, `${name} is not supported (use repetition_penalty)`);
  }
  refuseUnless(body, 'logit_bias', (v) => v === null || (isObject(v) && Object.keys(v).length === 0), 'logit_bias is not supported');
  const stream = optionalBoolean(body, 'stream') ?? false;
  const options = body.stream_options ?? null;
  if (options !== null && !isObject(options)) throw invalidParam('stream_options', `'stream_options' must be an object, got ${describe(options)}`);
  const includeUsage = options !== null && options.include_usage === true;
  if (options !== null && !stream) throw invalidParam('stream_options', "'stream_options' is allowed only with 'stream': true");
  let topK = optionalInt(body, 'top_k', -1);
  if (topK === -1) topK = 0;
  return {
    model: requiredModel(body),
    temperature: optionalNumber(body, 'temperature', 0, 2),
    topP: optionalNumber(body, 'top_p', 0, 1, true),
    topK,
    repetitionPenalty: optionalNumber(body, 'repetition_penalty', 0, Infinity, true),
    seed: optionalInt(body, 'seed', Number.MIN_SAFE_INTEGER),
    stop: parseStop(body.stop),
    ignoreEos: optionalBoolean(body, 'ignore_eos') ?? false,
    stream,
    includeUsage,
  };
}

const ROLES: Record<string, ChatMessage['role']> = { system: 'system', developer: 'system', user: 'user', assistant: 'assistant' };

function parseMessage(m: unknown, where: string): ChatMessage {
  if (!isObject(m)) throw invalidParam(where, `${where} must be an object with "role" and "content", got ${describe(m)}`);
  if (typeof m.role !== 'string') throw invalidParam(`${where}.role`, `${where}.role must be a string, got ${describe(m.role)}`);
  const role = ROLES[m.role];
  if (!role) {
    throw invalidParam(`${where}.role`, `${where}.role "${m.role}" is not supported; use system, developer, user or assistant`);
  }
  return { role, content: messageText(m.content, `${where}.content`) };
}

/** A string, or an array of text parts (`[{"type": "text", "text": "..."}]`) joined. */
function messageText(content: unknown, where: string): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((part, i) => {
        if (!isObject(part) || part.type !== 'text' || typeof part.text !== 'string') {
          const type = isObject(part) ? describe(part.type) : describe(part);
          throw invalidParam(`${where}[${i}]`, `${where}[${i}] must be a text part {"type": "text", "text": "..."}; got type ${type} (only text is supported)`);
        }
        return part.text;
      })
      .join('');
  }
  throw invalidParam(where, `${where} must be a string or an array of text parts, got ${describe(content)}`);
}

function parseStop(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (typeof v === 'string') return v === '' ? [] : [v];
  if (Array.isArray(v) && v.every((s) => typeof s === 'string')) {
    if (v.length > 4) throw invalidParam('stop', `'stop' has ${v.length} strings; at most 4`);
    return (v as string[]).filter((s) => s !== '');
  }
  throw invalidParam('stop', `'stop' must be a string or an array of strings, got ${describe(v)}`);
}

function requiredModel(body: Body): string {
  if (body.model === undefined) throw invalidParam('model', "Missing required parameter: 'model'");
  if (typeof body.model !== 'string' || body.model === '') throw invalidParam('model', `'model' must be a non-empty string, got ${describe(body.model)}`);
  return body.model;
}

function optionalNumber(body: Body, name: string, min: number, max: number, exclusiveMin = false): number | null {
  const v = body[name];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw invalidParam(name, `'${name}' must be a number, got ${describe(v)}`);
  if (v < min || (exclusiveMin && v === min) || v > max) {
    const range = `${exclusiveMin ? '>' : '≥'} ${min}${max === Infinity ? '' : ` and ≤ ${max}`}`;
    throw invalidParam(name, `'${name}' must be ${range}, got ${v}`);
  }
  return v;
}

function optionalInt(body: Body, name: string, min: number): number | null {
  const v = body[name];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw invalidParam(name, `'${name}' must be an integer, got ${describe(v)}`);
  if (v < min) throw invalidParam(name, `'${name}' must be ≥ ${min}, got ${v}`);
  return v;
}

function optionalBoolean(body: Body, name: string): boolean | null {
  const v = body[name];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'boolean') throw invalidParam(name, `'${name}' must be true or false, got ${describe(v)}`);
  return v;
}

/** Refuses a field set to a value whose effect tunekit does not implement. */
function refuseUnless(body: Body, name: string, ok: (v: unknown) => boolean, why: string): void {
  const v = body[name];
  if (v !== undefined && !ok(v)) throw invalidParam(name, `'${name}': ${why}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isTokenIds(v: unknown): v is number[] {
  return Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 0);
}

/** A value's JSON type, with a short preview, for messages. */
function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return v.length === 0 ? 'an empty array' : 'an array';
  if (typeof v === 'string') return `a string (${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)})`;
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${JSON.stringify(v)}`;
}
