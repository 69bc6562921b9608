/**
 * The server over real HTTP on 127.0.0.1 (a random free port), driven by the official `openai`
 * client: chat and text completions (streamed too), embeddings and the model list, for the base
 * model and two adapters served over it. Every answer is compared with the library computing
 * the same thing directly, so a wrong adapter, a lost token or a broken stream fails.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import OpenAI from 'openai';

import { generate } from '../src/infer/generate.js';
import { generateAsync } from '../src/infer/generate-async.js';
import { encodeChatPrompt, loadPipeline } from '../src/infer/pipeline.js';
import type { Pipeline } from '../src/infer/pipeline.js';
import { GREEDY } from '../src/infer/sampling.js';
import { embedIds } from '../src/serve/embeddings.js';
import { startServer } from '../src/serve/server.js';
import type { RunningServer, ServerEvent } from '../src/serve/server.js';
import type { ChatMessage } from '../src/text/chat-template.js';
import { makeAdapter, removeDir, tempDir, tinyModelDir } from './helpers/adapter-fixtures.js';

const MESSAGES: ChatMessage[] = [
  { role: 'system', content: '你是餐厅的客服。' },
  { role: 'user', content: '今天营业到几点？' },
];
const MAX_TOKENS = 12;

let root: string;
let modelDir: string;
let server: RunningServer;
let client: OpenAI;
const events: ServerEvent[] = [];
/** Direct pipelines, one per served id, to compare with. */
const direct = new Map<string, Pipeline>();

before(async () => {
  root = tempDir('serve-http');
  modelDir = tinyModelDir(root, 'tiny');
  const alpha = makeAdapter(modelDir, path.join(root, 'alpha'), { seed: 1 });
  const beta = makeAdapter(modelDir, path.join(root, 'adapters', 'second'), { seed: 2, r: 8, targets: 'all' });
  server = await startServer({
    model: modelDir,
    adapters: [{ dir: alpha }, { name: 'beta', dir: beta }],
    port: 0,
    onEvent: (e) => events.push(e),
  });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  direct.set('tiny', loadPipeline(modelDir));
  direct.set('alpha', loadPipeline(modelDir, { adapter: alpha }));
  direct.set('beta', loadPipeline(modelDir, { adapter: beta }));
});

after(async () => {
  await server?.close();
  if (root) removeDir(root);
});

function expectedChat(id: string, messages: ChatMessage[], maxNewTokens = MAX_TOKENS) {
  const p = direct.get(id)!;
  return generate(p.model, p.tokenizer, encodeChatPrompt(p, messages), {
    ...GREEDY, maxNewTokens, seed: 0, stopTokenIds: p.stopTokenIds, stopStrings: [],
  });
}

function lastGeneration(): Extract<ServerEvent, { type: 'generation' }> {
  const g = events.filter((e) => e.type === 'generation');
  return g[g.length - 1] as Extract<ServerEvent, { type: 'generation' }>;
}

describe('serve over HTTP with the openai client', () => {
  it('lists the base model and each adapter by name', async () => {
    const page = await client.models.list();
    assert.deepEqual(page.data.map((m) => m.id), ['tiny', 'alpha', 'beta']);
    assert.equal(page.data[1].owned_by, 'tunekit');
    const one = await client.models.retrieve('beta');
    assert.equal(one.id, 'beta');
  });

  it('answers a chat completion with each model exactly as generate() does, the adapters each their own', async () => {
    const texts = new Set<string>();
    for (const id of ['tiny', 'alpha', 'beta']) {
      const r = await client.chat.completions.create({ model: id, messages: MESSAGES, max_tokens: MAX_TOKENS, temperature: 0 });
      const want = expectedChat(id, MESSAGES);
      assert.equal(r.model, id);
      assert.equal(r.object, 'chat.completion');
      assert.equal(r.choices[0].message.role, 'assistant');
      assert.equal(r.choices[0].message.content, want.text, `model ${id}`);
      assert.equal(r.choices[0].finish_reason, want.finishReason);
      assert.deepEqual(r.usage, {
        prompt_tokens: want.promptTokens, completion_tokens: want.ids.length, total_tokens: want.promptTokens + want.ids.length,
      });
      texts.add(r.choices[0].message.content ?? '');
    }
    assert.equal(texts.size, 3, 'base and the two adapters should answer differently');
  });

  it('switches adapters per request, in any order, without drifting', async () => {
    for (const id of ['beta', 'tiny', 'alpha', 'beta', 'alpha', 'tiny']) {
      const r = await client.chat.completions.create({ model: id, messages: MESSAGES, max_tokens: 6, temperature: 0 });
      assert.equal(r.choices[0].message.content, expectedChat(id, MESSAGES, 6).text, `model ${id}`);
    }
  });

  it('streams a chat completion as server-sent events: role first, the same text, finish_reason, usage', async () => {
    const stream = await client.chat.completions.create({
      model: 'alpha', messages: MESSAGES, max_tokens: MAX_TOKENS, temperature: 0, stream: true, stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const want = expectedChat('alpha', MESSAGES);
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
    assert.equal(text, want.text);
    assert.ok(chunks.length > 3, 'the answer should arrive in several chunks');
    const withFinish = chunks.filter((c) => c.choices[0]?.finish_reason);
    assert.equal(withFinish.length, 1);
    assert.equal(withFinish[0].choices[0].finish_reason, want.finishReason);
    const last = chunks[chunks.length - 1];
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage?.completion_tokens, want.ids.length);
    assert.equal(new Set(chunks.map((c) => c.id)).size, 1, 'one id for every chunk');
  });

  it('answers text completions, plain and streamed, as generate() on the raw prompt', async () => {
    const prompt = '欢迎光临，我们的招牌菜是';
    const p = direct.get('beta')!;
    const want = generate(p.model, p.tokenizer, p.tokenizer.encode(prompt), {
      ...GREEDY, maxNewTokens: MAX_TOKENS, seed: 0, stopTokenIds: p.stopTokenIds, stopStrings: [],
    });
    const r = await client.completions.create({ model: 'beta', prompt, max_tokens: MAX_TOKENS, temperature: 0 });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.choices[0].text, want.text);
    assert.equal(r.usage?.prompt_tokens, want.promptTokens);
    const stream = await client.completions.create({ model: 'beta', prompt, max_tokens: MAX_TOKENS, temperature: 0, stream: true });
    let text = '';
    let finish: string | null = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.text ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(text, want.text);
    assert.equal(finish, want.finishReason);
  });

  it('honours stop strings: the text ends before the stop string', async () => {
    const full = expectedChat('alpha', MESSAGES).text;
    const stop = full.slice(3, 5);
    assert.ok(stop.length === 2);
    const r = await client.chat.completions.create({ model: 'alpha', messages: MESSAGES, max_tokens: MAX_TOKENS, temperature: 0, stop: [stop] });
    assert.equal(r.choices[0].message.content, full.slice(0, full.indexOf(stop)));
    assert.equal(r.choices[0].finish_reason, 'stop');
  });

  it('returns unit-length embeddings (base64 by default in the client, float on request) from the chosen adapter', async () => {
    const input = ['营业时间是几点', 'opening hours'];
    const viaClient = await client.embeddings.create({ model: 'alpha', input });
    assert.equal(viaClient.data.length, 2);
    assert.equal(viaClient.usage.prompt_tokens, input.reduce((n, s) => n + direct.get('alpha')!.tokenizer.encode(s, { addSpecialTokens: false }).length, 0));
    for (const [i, text] of input.entries()) {
      const p = direct.get('alpha')!;
      const want = embedIds(p.model, p.tokenizer.encode(text, { addSpecialTokens: false }));
      const got = viaClient.data[i].embedding;
      assert.equal(got.length, 64);
      for (let c = 0; c < want.length; c++) assert.equal(got[c], want[c]);
      assert.ok(Math.abs(got.reduce((s, x) => s + x * x, 0) - 1) < 1e-5);
    }
    const res = await fetch(`${server.url}/v1/embeddings`, {
      method: 'POST', body: JSON.stringify({ model: 'tiny', input: input[0], encoding_format: 'float' }),
    });
    const body = (await res.json()) as { data: Array<{ embedding: number[] }> };
    const p = direct.get('tiny')!;
    const base = embedIds(p.model, p.tokenizer.encode(input[0], { addSpecialTokens: false }));
    assert.deepEqual(body.data[0].embedding, Array.from(base));
    assert.notDeepEqual(body.data[0].embedding, viaClient.data[0].embedding, 'the adapter changes the embedding');
  });

  it('reports an unknown model as a 404 the client raises as NotFoundError', async () => {
    await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: MESSAGES }), (e: unknown) => {
      assert.ok(e instanceof OpenAI.NotFoundError);
      assert.equal(e.status, 404);
      assert.equal(e.code, 'model_not_found');
      assert.match(e.message, /tiny, alpha, beta/);
      return true;
    });
  });

  it('stops generating when a streaming client disconnects', async () => {
    const maxTokens = 1500;
    const stream = await client.chat.completions.create({
      model: 'alpha', messages: MESSAGES, max_tokens: maxTokens, temperature: 0, stream: true,
      // vLLM's extension: never stop at the end-of-turn token, so only the disconnect can stop it early.
      ...({ ignore_eos: true } as object),
    });
    let seen = 0;
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta.content) seen++;
      if (seen === 3) break; // leaving the loop aborts the request
    }
    const done = await waitFor(() => events.find((e) => e.type === 'generation' && e.finishReason === 'aborted'));
    assert.equal(done.type, 'generation');
    if (done.type !== 'generation') return;
    assert.ok(done.completionTokens >= 3 && done.completionTokens < maxTokens / 2, `stopped after ${done.completionTokens} tokens`);
    const req = await waitFor(() => events.find((e) => e.type === 'request' && e.status === 499));
    assert.equal(req.type, 'request');
    // The server is free again and answers the next request.
    const r = await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, max_tokens: 2, temperature: 0 });
    assert.equal(r.choices[0].message.content, expectedChat('tiny', MESSAGES, 2).text);
    assert.equal(lastGeneration().finishReason, 'length');
  });
});

describe('generateAsync', () => {
  it('produces the same tokens as generate, also when sampling', async () => {
    const p = direct.get('beta')!;
    const ids = encodeChatPrompt(p, MESSAGES);
    const opts = { temperature: 0.9, topK: 20, topP: 0.9, repetitionPenalty: 1.1, maxNewTokens: 16, seed: 7, stopTokenIds: [], stopStrings: [] };
    const pieces: string[] = [];
    const a = await generateAsync(p.model, p.tokenizer, ids, { ...opts, onText: (s) => pieces.push(s) });
    const b = generate(p.model, p.tokenizer, ids, opts);
    assert.deepEqual(a.ids, b.ids);
    assert.equal(a.text, b.text);
    assert.equal(pieces.join(''), b.text);
  });
});

/** Polls until `find` returns something (the server reports after the response has ended). */
async function waitFor<T>(find: () => T | undefined, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = find();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('timed out waiting for the server');
    await new Promise((r) => setTimeout(r, 10));
  }
}
