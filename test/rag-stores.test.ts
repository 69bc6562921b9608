/**
 * The two stores behind one SQL path: the embedded default (PGlite on disk, driven here through
 * the CLI as a user would) and PostgreSQL through `pg`, against a real Postgres with pgvector —
 * a PGlite that this test serves over the wire protocol with @electric-sql/pglite-socket, since
 * Debian's PostgreSQL has no pgvector. Same documents, same model: same results.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { PGlite } from '@electric-sql/pglite';
import { vector } from '@electric-sql/pglite-pgvector';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';

import { ragCommand } from '../src/cli/commands/rag.js';
import { UserError } from '../src/errors.js';
import { initModel } from '../src/io/init-model.js';
import { saveModel } from '../src/io/model-folder.js';
import { Embedder } from '../src/rag/embed.js';
import { displayPath, indexKnowledgeBase } from '../src/rag/indexer.js';
import { searchKnowledgeBase } from '../src/rag/search.js';
import type { SearchMode } from '../src/rag/search.js';
import { KnowledgeBase } from '../src/rag/store.js';

const ROOT = join(import.meta.dirname, '..');
const DOCS = join(ROOT, 'examples', 'kb', 'docs');
const scratch = mkdtempSync(join(tmpdir(), 'tunekit-rag-stores-'));
const bagDir = join(scratch, 'bag');
const tinyDir = join(scratch, 'tiny');
const kbDir = join(scratch, 'kb', 'menu');

let server: PGLiteSocketServer;
let served: PGlite;
let url: string;

/**
 * Runs `tunekit rag …` in this process, capturing what it prints through console (the test
 * runner owns process.stdout, so only commands that do not stream are run here).
 */
async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const saved = { log: console.log, error: console.error };
  console.log = (...a: unknown[]) => void (out += `${a.join(' ')}\n`);
  console.error = (...a: unknown[]) => void (err += `${a.join(' ')}\n`);
  try {
    const code = await ragCommand.run(argv);
    return { code, out, err };
  } finally {
    Object.assign(console, saved);
  }
}

before(async () => {
  // The bag-of-tokens model of rag-kb.test.ts: a tiny model with attention and MLP outputs zeroed.
  const m = initModel({ preset: 'tiny', out: bagDir, configOverrides: { hidden_size: 512, intermediate_size: 64, num_hidden_layers: 1 } });
  for (const [name, p] of m.namedParameters()) if (/o_proj|down_proj/.test(name)) p.data.fill(0);
  saveModel(m, bagDir);
  initModel({ preset: 'tiny', out: tinyDir });
  served = await PGlite.create({ extensions: { vector } });
  server = new PGLiteSocketServer({ db: served, port: 0, host: '127.0.0.1' });
  await server.start();
  url = `postgres://postgres@${server.getServerConn()}/postgres`;
});

after(async () => {
  await server?.stop();
  await served?.close();
  rmSync(scratch, { recursive: true, force: true });
});

describe('the embedded store, through the CLI', () => {
  test('rag index builds it on disk and reports what it did', async () => {
    const r = await cli('index', DOCS, '--kb', kbDir, '--embed-model', bagDir, '--pooling', 'mean');
    assert.equal(r.code, 0);
    assert.match(r.out, /7 added, 0 updated, 0 removed, 0 unchanged; \d+ chunks written/);
    assert.match(r.out, /now 7 documents, \d+ chunks, 512-dimensional embeddings/);
    assert.match(r.err, /menu\.md: \d+ chunks/);
    const again = await cli('index', DOCS, '--kb', kbDir, '--json');
    const report = JSON.parse(again.out);
    assert.deepEqual([report.added, report.unchanged, report.chunks], [[], 7, 0]);
  });

  test('rag search shows chunks, scores and sources; --json for programs', async () => {
    const text = await cli('search', '周末几点开门？', '--kb', kbDir, '--k', '2');
    assert.match(text.out, /^1\. .*hours\.txt \(\d{4}-\d\d-\d\d\)\n {3}rrf [\d.]+ {2}bm25 [\d.]+ {2}cos [\d.]+ {2}lexical [\d.]+\n {3}营业时间/);
    const json = JSON.parse((await cli('search', 'Do you have anything for vegans?', '--kb', kbDir, '--mode', 'bm25', '--json')).out);
    assert.match(json.hits[0].text, /Mushroom and greens buns/);
    assert.equal(json.hits[0].path, displayPath(join(DOCS, 'menu.md')));
  });

  test('rag eval prints hit@1, hit@k and MRR for every mode', async () => {
    const r = await cli('eval', '--kb', kbDir, '--data', join(ROOT, 'examples', 'kb', 'qa.jsonl'), '--k', '3');
    assert.match(r.out, /14 questions/);
    assert.match(r.out, /mode +hit@1 +hit@3 +MRR/);
    for (const mode of ['bm25', 'dense', 'hybrid']) assert.match(r.out, new RegExp(`\\n${mode} +[01]\\.\\d{3} +[01]\\.\\d{3} +[01]\\.\\d{3}`));
  });

  test('rag ask answers with the chat model and lists sources; rag list shows the documents', async () => {
    const r = await cli('ask', 'Can I reserve a table for Saturday?', '--kb', kbDir, '--model', tinyDir, '--max-new-tokens', '4', '--mode', 'bm25', '--json');
    const result = JSON.parse(r.out);
    assert.equal(result.found, true);
    assert.match(result.sources[0].path, /faq\.jsonl$/);
    assert.match(result.text, /Sources:\n\[1\] /);
    const none = await cli('ask', '火星的首都是哪里？', '--kb', kbDir, '--model', tinyDir, '--mode', 'bm25');
    assert.equal(none.out.trim(), '抱歉，知识库中没有找到与这个问题相关的内容，所以无法回答。');
    const list = await cli('list', '--kb', kbDir);
    assert.match(list.out, /7 documents, \d+ chunks; 512-dimensional embeddings from .*bag \(mean pooling\); chunks of 256 tokens, overlap 32/);
  });

  test('clear errors: a missing store, a second opener, an unknown subcommand, a bad flag', async () => {
    await assert.rejects(cli('search', 'x', '--kb', 'no-such-kb'), (e: Error) => e instanceof UserError && /no knowledge base "no-such-kb" \(looked in .*\.tunekit\/kb\/no-such-kb\)/.test(e.message));
    const kb = await KnowledgeBase.open(kbDir);
    try {
      await assert.rejects(cli('search', 'x', '--kb', kbDir), /already open in this process/);
    } finally {
      await kb.close();
    }
    writeFileSync(join(kbDir, 'lock'), '1'); // pid 1 is always alive
    try {
      await assert.rejects(KnowledgeBase.open(kbDir), /is open in another process \(pid 1/);
    } finally {
      rmSync(join(kbDir, 'lock'));
    }
    await assert.rejects(cli('serch', 'x'), /unknown rag command "serch"; did you mean "search"\?/);
    await assert.rejects(cli('search', 'x', '--kb', kbDir, '--mode', 'fuzzy'), /--mode must be one of hybrid, dense, bm25/);
    const notKb = mkdtempSync(join(scratch, 'docs-'));
    writeFileSync(join(notKb, 'a.md'), '# a');
    await assert.rejects(cli('index', DOCS, '--kb', notKb), /exists and is not a tunekit knowledge base/);
  });
});

describe('PostgreSQL with pgvector, through pg', () => {
  test('an unreachable server is one clear line', async () => {
    await assert.rejects(KnowledgeBase.open('postgres://nobody:secret@127.0.0.1:1/none'), (e: Error) => e instanceof UserError && /^cannot connect to postgres:\/\/nobody:\*\*\*@127\.0\.0\.1:1\/none: ECONNREFUSED/.test(e.message));
    await assert.rejects(KnowledgeBase.open(`${url}?schema=missing`), /no knowledge base in postgres:.*\(schema missing\)/);
  });

  test('both stores return the same results for the same index', async () => {
    const bag = Embedder.load(bagDir, { pooling: 'mean' });
    const remote = await KnowledgeBase.open(`${url}?schema=team`, { create: true });
    const local = await KnowledgeBase.open(kbDir);
    try {
      const r = await indexKnowledgeBase(remote, { inputs: [DOCS], embedder: bag, onWarning: () => {} });
      assert.equal(r.added.length, 7);
      assert.deepEqual(await remote.stats(), await local.stats());
      const queries = ['周末几点开门？', '蟹粉小笼包有什么优惠', 'Can I reserve a table for Saturday?', 'Is there anything with peanuts?'];
      for (const mode of ['bm25', 'dense', 'hybrid'] as SearchMode[]) {
        for (const q of queries) {
          const a = await searchKnowledgeBase(remote, q, { mode, k: 5, embedder: bag, freshness: true });
          const b = await searchKnowledgeBase(local, q, { mode, k: 5, embedder: bag, freshness: true });
          const view = (hits: typeof a) => hits.map((h) => [h.path, h.text, h.date, h.relevant]);
          assert.deepEqual(view(a), view(b), `${mode} "${q}"`);
          a.forEach((h, i) => {
            assert.ok(Math.abs(h.score - b[i].score) < 1e-9, `${mode} "${q}" #${i + 1}: ${h.score} vs ${b[i].score}`);
            assert.equal(h.scores.dense === null, b[i].scores.dense === null);
          });
        }
      }
    } finally {
      await remote.close();
      await local.close();
    }
  });

  test('dense search goes through the HNSW index over cosine distance', async () => {
    const kb = await KnowledgeBase.open(`${url}?schema=team`);
    try {
      const [{ indexdef }] = await kb.sql.query<{ indexdef: string }>(`SELECT indexdef FROM pg_indexes WHERE schemaname = 'team' AND indexname = 'kb_chunks_embedding'`);
      assert.match(indexdef, /USING hnsw \(embedding vector_cosine_ops\)/);
      const q = Embedder.load(bagDir, { pooling: 'mean' }).embedQuery('周末几点开门');
      await kb.sql.exec('SET enable_seqscan = off');
      const plan = await kb.sql.query<{ 'QUERY PLAN': string }>(
        `EXPLAIN SELECT id FROM team.kb_chunks ORDER BY embedding <=> $1::vector LIMIT 5`,
        [`[${Array.from(q).join(',')}]`],
      );
      assert.match(plan.map((p) => p['QUERY PLAN']).join('\n'), /Index Scan using kb_chunks_embedding/);
    } finally {
      await kb.sql.exec('RESET enable_seqscan');
      await kb.close();
    }
  });
});
