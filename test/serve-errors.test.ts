/**
 * What the server refuses, over raw HTTP: malformed and mistyped requests, unknown models,
 * prompts that do not fit the context, missing or wrong API keys, a full queue. Every refusal is
 * OpenAI's error JSON with the status OpenAI uses. Also the queue's order and a request that
 * leaves while it waits.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import OpenAI from 'openai';

import { parseAdapterFlag } from '../src/serve/adapters.js';
import { FairQueue } from '../src/serve/queue.js';
import { loadServedModels } from '../src/serve/models.js';
import type { ServedModels } from '../src/serve/models.js';
import { serveModels } from '../src/serve/server.js';
import type { RunningServer, ServerEvent } from '../src/serve/server.js';
import { removeDir, tempDir, tinyModelDir } from './helpers/adapter-fixtures.js';

let root: string;
let models: ServedModels;
let server: RunningServer;
const events: ServerEvent[] = [];

before(async () => {
  root = tempDir('serve-errors');
  models = loadServedModels({ model: tinyModelDir(root, 'tiny') });
  server = await serveModels(models, { port: 0, maxQueue: 1, onEvent: (e) => events.push(e) });
});

after(async () => {
  await server?.close();
  if (root) removeDir(root);
});

interface ErrorJson {
  error: { message: string; type: string; param: string | null; code: string | null };
}

async function post(path: string, body: unknown, headers: Record<string, string> = {}, base = server.url): Promise<{ status: number; json: ErrorJson }> {
  const res = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as ErrorJson };
}

function assertError(r: { status: number; json: ErrorJson }, status: number, param: string | null, code: string | null = null, message?: RegExp): void {
  assert.equal(r.status, status, JSON.stringify(r.json));
  assert.deepEqual(Object.keys(r.json), ['error']);
  assert.deepEqual(Object.keys(r.json.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(typeof r.json.error.message, 'string');
  assert.equal(r.json.error.param, param);
  assert.equal(r.json.error.code, code);
  if (message) assert.match(r.json.error.message, message);
}

const chat = (extra: Record<string, unknown>) => ({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2, ...extra });

describe('request validation', () => {
  it('refuses a body that is not JSON, or not an object', async () => {
    assertError(await post('/v1/chat/completions', '{"model": "tiny", '), 400, null, null, /parse the JSON body/);
    assertError(await post('/v1/chat/completions', '[1, 2]'), 400, null, null, /JSON object/);
    assertError(await post('/v1/chat/completions', ''), 400, null, null, /empty/);
  });

  it('names the field of a missing or mistyped parameter', async () => {
    assertError(await post('/v1/chat/completions', { model: 'tiny' }), 400, 'messages', null, /Missing required parameter: 'messages'/);
    assertError(await post('/v1/chat/completions', chat({ model: undefined })), 400, 'model');
    assertError(await post('/v1/chat/completions', chat({ messages: 'hi' })), 400, 'messages');
    assertError(await post('/v1/chat/completions', chat({ messages: [{ role: 'robot', content: 'x' }] })), 400, 'messages[0].role', null, /robot/);
    assertError(await post('/v1/chat/completions', chat({ messages: [{ role: 'user', content: 3 }] })), 400, 'messages[0].content');
    assertError(await post('/v1/chat/completions', chat({ temperature: 'hot' })), 400, 'temperature', null, /must be a number/);
    assertError(await post('/v1/chat/completions', chat({ temperature: 3 })), 400, 'temperature', null, /≤ 2/);
    assertError(await post('/v1/chat/completions', chat({ top_p: 0 })), 400, 'top_p');
    assertError(await post('/v1/chat/completions', chat({ max_tokens: 0 })), 400, 'max_tokens');
    assertError(await post('/v1/chat/completions', chat({ max_tokens: 2.5 })), 400, 'max_tokens', null, /integer/);
    assertError(await post('/v1/chat/completions', chat({ stream: 'yes' })), 400, 'stream');
    assertError(await post('/v1/chat/completions', chat({ stop: [1] })), 400, 'stop');
    assertError(await post('/v1/chat/completions', chat({ n: 2 })), 400, 'n');
    assertError(await post('/v1/chat/completions', chat({ tools: [{ type: 'function' }] })), 400, 'tools');
    assertError(await post('/v1/completions', { model: 'tiny', prompt: { text: 'x' } }), 400, 'prompt');
    assertError(await post('/v1/completions', { model: 'tiny', prompt: [5, 999999] }), 400, 'prompt', null, /outside the vocabulary/);
    assertError(await post('/v1/embeddings', { model: 'tiny', input: '' }), 400, 'input', null, /empty/);
    assertError(await post('/v1/embeddings', { model: 'tiny', input: 'x', encoding_format: 'hex' }), 400, 'encoding_format');
    assertError(await post('/v1/embeddings', { model: 'tiny', input: 'x', dimensions: 32 }), 400, 'dimensions');
  });

  it('answers an unknown model with 404 model_not_found, listing the models served', async () => {
    assertError(await post('/v1/chat/completions', chat({ model: 'llama' })), 404, 'model', 'model_not_found', /llama.*tiny/);
    assertError(await post('/v1/embeddings', { model: 'llama', input: 'x' }), 404, 'model', 'model_not_found');
    const res = await fetch(`${server.url}/v1/models/llama`);
    assert.equal(res.status, 404);
  });

  it('refuses prompt + max_tokens over the context length (2048 for the tiny model) with context_length_exceeded', async () => {
    const r = await post('/v1/chat/completions', chat({ max_tokens: 2040 }));
    assertError(r, 400, 'messages', 'context_length_exceeded', /maximum context length is 2048 tokens/);
    assert.match(r.json.error.message, /in the messages, 2040 in the completion/);
    const long = 'a '.repeat(3000);
    assertError(await post('/v1/completions', { model: 'tiny', prompt: long }), 400, 'prompt', 'context_length_exceeded');
    assertError(await post('/v1/embeddings', { model: 'tiny', input: long }), 400, 'input', 'context_length_exceeded');
    // Just fitting is fine: prompt + max_tokens = 2048.
    const ids = models.pipeline.tokenizer.encode('hello');
    const ok = await fetch(`${server.url}/v1/completions`, {
      method: 'POST', body: JSON.stringify({ model: 'tiny', prompt: ids, max_tokens: 2048 - ids.length, stop: ['\n'] }),
    });
    assert.equal(ok.status, 200);
  });

  it('answers unknown paths with 404 and wrong methods with 405, in the same error shape', async () => {
    const missing = await fetch(`${server.url}/v1/images/generations`, { method: 'POST', body: '{}' });
    assertError({ status: missing.status, json: (await missing.json()) as ErrorJson }, 404, null, 'unknown_url');
    const wrong = await fetch(`${server.url}/v1/chat/completions`);
    assertError({ status: wrong.status, json: (await wrong.json()) as ErrorJson }, 405, null, 'method_not_allowed');
    const health = await fetch(`${server.url}/health`);
    assert.equal(health.status, 200);
    assert.equal(((await health.json()) as { status: string }).status, 'ok');
  });
});

describe('API key', () => {
  let keyed: RunningServer;
  before(async () => {
    keyed = await serveModels(models, { port: 0, apiKey: 'sk-test-123' });
  });
  after(async () => {
    await keyed?.close();
  });

  it('requires the key on /v1 (401 without it or with a wrong one) and accepts the right one', async () => {
    assertError(await post('/v1/chat/completions', chat({}), {}, keyed.url), 401, null, 'invalid_api_key', /didn't provide an API key/);
    assertError(await post('/v1/chat/completions', chat({}), { Authorization: 'Bearer sk-test-12' }, keyed.url), 401, null, 'invalid_api_key', /Incorrect API key/);
    assertError(await post('/v1/chat/completions', chat({}), { Authorization: 'Bearer sk-test-1234' }, keyed.url), 401, null, 'invalid_api_key');
    const models401 = await fetch(`${keyed.url}/v1/models`);
    assert.equal(models401.status, 401);
    const good = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: 'sk-test-123', maxRetries: 0 });
    const r = await good.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });
    assert.equal(r.choices.length, 1);
    const bad = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: 'nope', maxRetries: 0 });
    await assert.rejects(bad.models.list(), OpenAI.AuthenticationError);
    assert.equal((await fetch(`${keyed.url}/health`)).status, 200, '/health needs no key');
  });
});

describe('the queue', () => {
  /** A request that runs long: the end-of-turn token is ignored, so it runs to max_tokens. */
  const long = (signal?: AbortSignal) =>
    fetch(`${server.url}/v1/completions`, {
      method: 'POST', signal, body: JSON.stringify({ model: 'tiny', prompt: 'x', max_tokens: 600, ignore_eos: true, temperature: 0 }),
    });

  it('serves one request at a time, lets max-queue wait, and answers 429 beyond that', async () => {
    const first = long();
    await until(() => server.queue.stats.running);
    const second = long();
    await until(() => server.queue.stats.waiting === 1);
    const third = await post('/v1/completions', { model: 'tiny', prompt: 'x', max_tokens: 1 });
    assertError(third, 429, null, 'rate_limit_exceeded', /busy/);
    const [a, b] = await Promise.all([first, second]);
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.equal(((await a.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens, 600);
    await b.json();
    assert.deepEqual(server.queue.stats, { running: false, waiting: 0 });
  });

  it('drops a waiting request whose client leaves, without generating for it', async () => {
    const before = events.filter((e) => e.type === 'generation').length;
    const first = long();
    await until(() => server.queue.stats.running);
    const leaving = new AbortController();
    const second = long(leaving.signal).catch((e: unknown) => e);
    await until(() => server.queue.stats.waiting === 1);
    leaving.abort();
    await until(() => server.queue.stats.waiting === 0);
    assert.equal((await first).status, 200);
    assert.ok((await second) instanceof Error);
    await until(() => !server.queue.stats.running);
    const generations = events.filter((e) => e.type === 'generation').slice(before);
    assert.equal(generations.length, 1, 'only the first request generated');
  });

  it('FairQueue grants turns first come, first served, and refuses past its bound', async () => {
    const q = new FairQueue(2);
    const order: string[] = [];
    const r1 = await q.acquire();
    const p2 = q.acquire().then((rel) => (order.push('2'), rel));
    const p3 = q.acquire().then((rel) => (order.push('3'), rel));
    await assert.rejects(q.acquire(), (e: Error & { status?: number }) => e.status === 429);
    r1();
    r1(); // a second release does nothing
    const r2 = await p2;
    assert.deepEqual(order, ['2']);
    assert.deepEqual(q.stats, { running: true, waiting: 1 });
    r2();
    (await p3)();
    assert.deepEqual(order, ['2', '3']);
    assert.deepEqual(q.stats, { running: false, waiting: 0 });
  });
});

describe('--adapter flag', () => {
  it('takes NAME=DIR or DIR', () => {
    assert.deepEqual(parseAdapterFlag('support=out/lora'), { name: 'support', dir: 'out/lora' });
    assert.deepEqual(parseAdapterFlag('out/lora'), { dir: 'out/lora' });
    assert.deepEqual(parseAdapterFlag('./a=b'), { dir: './a=b' });
  });
});

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 2));
  }
}
