/**
 * `serve --kb`: a chat request is answered from the knowledge base. The sources retrieved for
 * the last user message become the system message (after the client's own system prompt), the
 * response lists them, and a question the knowledge base knows nothing about gets its "not
 * found" reply without the model being asked.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { PGlite } from '@electric-sql/pglite';
import { vector } from '@electric-sql/pglite-pgvector';
import OpenAI from 'openai';

import { encodeChatPrompt } from '../src/infer/pipeline.js';
import { retrieveContext } from '../src/rag/answer.js';
import { indexKnowledgeBase } from '../src/rag/indexer.js';
import { pgliteSql } from '../src/rag/sql.js';
import { KnowledgeBase } from '../src/rag/store.js';
import { loadServedModels } from '../src/serve/models.js';
import type { ServedModels } from '../src/serve/models.js';
import { knowledgeBaseRetriever } from '../src/serve/retrieval.js';
import { serveModels } from '../src/serve/server.js';
import type { RunningServer, ServerEvent } from '../src/serve/server.js';
import { removeDir, tempDir, tinyModelDir } from './helpers/adapter-fixtures.js';

const DOCS = path.resolve('examples', 'kb', 'docs');

let root: string;
let db: PGlite;
let kb: KnowledgeBase;
let models: ServedModels;
let server: RunningServer;
let client: OpenAI;
const events: ServerEvent[] = [];

before(async () => {
  root = tempDir('serve-kb');
  // An in-memory PGlite: what `--kb NAME` opens on disk, without the disk.
  db = await PGlite.create({ extensions: { vector } });
  kb = await KnowledgeBase.fromSql(pgliteSql(db, 'memory'), { name: 'kb', schema: 'kb', create: true });
  await indexKnowledgeBase(kb, { inputs: [path.join(DOCS, 'hours.txt'), path.join(DOCS, 'menu.md')], onWarning: () => {} });
  models = loadServedModels({ model: tinyModelDir(root, 'tiny') });
  server = await serveModels(models, { port: 0, retriever: knowledgeBaseRetriever(kb), onEvent: (e) => events.push(e) });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});

after(async () => {
  await server?.close();
  await kb?.close();
  await db?.close();
  if (root) removeDir(root);
});

describe('serve --kb', () => {
  it('puts the retrieved sources in the system message and returns them', async () => {
    const system = '你是小笼大师的客服。';
    const question = '周末几点开门？';
    const r = await client.chat.completions.create({
      model: 'tiny', max_tokens: 4, temperature: 0,
      messages: [{ role: 'system', content: system }, { role: 'user', content: question }],
    });
    const sources = (r as unknown as { sources: Array<{ n: number; path: string }> }).sources;
    assert.ok(sources.length > 0);
    assert.ok(sources.some((s) => s.path.endsWith('hours.txt')), JSON.stringify(sources));
    const ctx = await retrieveContext(kb, question, { system });
    assert.ok(ctx.message?.content.startsWith(system), 'the client’s system prompt comes first');
    const want = encodeChatPrompt(models.pipeline, [ctx.message!, { role: 'user', content: question }]);
    assert.equal(r.usage?.prompt_tokens, want.length, 'the prompt is the conversation with the sources');
  });

  it('answers "not found" without the model when nothing relevant is retrieved, streamed too', async () => {
    const generations = events.filter((e) => e.type === 'generation').length;
    const question = 'zqxv wkjp?';
    const ctx = await retrieveContext(kb, question);
    assert.equal(ctx.found, false);
    const r = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: question }] });
    assert.equal(r.choices[0].message.content, ctx.notFound);
    assert.equal(r.choices[0].finish_reason, 'stop');
    const stream = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: question }], stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    assert.equal(text, ctx.notFound);
    assert.equal(events.filter((e) => e.type === 'generation').length, generations, 'the model was not run');
  });
});
