/**
 * A knowledge base end to end over one in-memory PGlite (with pgvector), one schema per
 * knowledge base: retrieval quality on the bilingual example, incremental indexing, freshness,
 * evaluation, answers with sources, watch, and the error cases.
 *
 * Two tiny models stand in for an embedding model. Random weights carry no meaning, so dense
 * retrieval with them is checked "on structure only": a chunk's own text finds that chunk. The
 * second, the "bag" model, is the tiny preset with its attention and MLP outputs zeroed: each
 * hidden state is then the (normalised) embedding of its token, and mean pooling gives a
 * bag-of-tokens vector in 512 random dimensions, so texts sharing byte-level tokens are close.
 * That is enough meaning to check ranking, fusion and thresholds without any download.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { PGlite } from '@electric-sql/pglite';
import { vector } from '@electric-sql/pglite-pgvector';

import { UserError } from '../src/errors.js';
import { loadPipeline } from '../src/infer/pipeline.js';
import { initModel } from '../src/io/init-model.js';
import { saveModel } from '../src/io/model-folder.js';
import { answerWithSources, retrieveContext } from '../src/rag/answer.js';
import { Embedder } from '../src/rag/embed.js';
import { Reranker } from '../src/rag/rerank.js';
import { evaluateRetrieval, readQaFile } from '../src/rag/eval.js';
import { indexKnowledgeBase, watchKnowledgeBase } from '../src/rag/indexer.js';
import type { IndexReport } from '../src/rag/indexer.js';
import { searchKnowledgeBase } from '../src/rag/search.js';
import type { SearchMode } from '../src/rag/search.js';
import { pgliteSql } from '../src/rag/sql.js';
import { KnowledgeBase } from '../src/rag/store.js';

const ROOT = join(import.meta.dirname, '..');
const DOCS = join(ROOT, 'examples', 'kb', 'docs');
const scratch = mkdtempSync(join(tmpdir(), 'tunekit-rag-kb-'));
const tinyDir = join(scratch, 'tiny');
const bagDir = join(scratch, 'bag');

let db: PGlite;
let bag: Embedder;
let main: KnowledgeBase;
const warnings: string[] = [];
const quiet = { onWarning: (m: string) => warnings.push(m) };

async function kbIn(schema: string, create = true): Promise<KnowledgeBase> {
  return KnowledgeBase.fromSql(pgliteSql(db, 'memory'), { name: schema, schema, create });
}

before(async () => {
  initModel({ preset: 'tiny', out: tinyDir, seed: 1 });
  const m = initModel({ preset: 'tiny', out: bagDir, configOverrides: { hidden_size: 512, intermediate_size: 64, num_hidden_layers: 1 } });
  for (const [name, p] of m.namedParameters()) if (/o_proj|down_proj/.test(name)) p.data.fill(0);
  saveModel(m, bagDir);
  bag = Embedder.load(bagDir, { pooling: 'mean' });
  db = await PGlite.create({ extensions: { vector } });
  main = await kbIn('main');
  const report = await indexKnowledgeBase(main, { inputs: [DOCS], embedder: bag, ...quiet });
  assert.equal(report.added.length, 7);
});

after(async () => {
  await db?.close();
  rmSync(scratch, { recursive: true, force: true });
});

/** Paraphrased questions, Chinese and English, and a phrase only the right chunk holds. */
const QUERIES: [string, string][] = [
  ['周末几点开门？', '周末（周六、周日）及节假日'],
  ['有没有素食的菜', '香菇青菜包'],
  ['能带宠物进去吗', '导盲犬除外'],
  ['停车方便吗', '免费停车两小时'],
  ['外卖能送多远', '周边5公里'],
  ['蟹粉小笼包多少钱', '蟹粉小笼包（6只）¥48'],
  ['Do you have anything for vegans?', 'Mushroom and greens buns'],
  ['Can I reserve a table for Saturday?', 'a day ahead to reserve'],
  ['Where do you deliver to?', 'We deliver within 5 km'],
  ['Are dogs allowed inside?', 'except guide dogs'],
];

describe('retrieval on the bilingual example', () => {
  for (const mode of ['bm25', 'dense', 'hybrid'] as SearchMode[]) {
    test(`${mode}: the right chunk ranks first for paraphrased Chinese and English questions`, async () => {
      for (const [query, expected] of QUERIES) {
        const hits = await searchKnowledgeBase(main, query, { mode, k: 3 });
        assert.ok(hits[0]?.text.includes(expected), `${mode} "${query}": first hit is\n${hits[0]?.text}`);
        // Cosine thresholds belong to a real embedding model; the bag model's cosines are low.
        if (mode !== 'dense') assert.ok(hits[0].relevant, `${mode} "${query}" is judged relevant (${JSON.stringify(hits[0].scores)})`);
      }
    });
  }

  test('a hit carries its source, date and every score the mode computed', async () => {
    const [h] = await searchKnowledgeBase(main, '蟹粉小笼包今日第二笼半价', { mode: 'hybrid', k: 1 });
    assert.equal(h.path, join(DOCS, 'promotions.md'));
    assert.equal(h.title, "今日优惠 Today's promotions");
    assert.equal(h.date, '2026-11-28');
    assert.equal(h.dateSource, 'front matter');
    assert.ok(h.scores.bm25! > 0 && h.scores.rrf! > 0 && h.scores.dense! > 0 && h.scores.lexical > 0.5);
    assert.equal(h.score, h.scores.rrf);
  });

  test('nothing relevant: a question the knowledge base never mentions', async () => {
    for (const q of ['火星的首都是哪里？', 'What is the capital of Mars?']) {
      const hits = await searchKnowledgeBase(main, q, { mode: 'bm25' });
      assert.ok(hits.every((h) => !h.relevant), q);
    }
  });

  for (const pooling of ['last', 'mean'] as const) {
    test(`dense with random weights (${pooling} pooling), on structure only: each chunk's own text finds it`, async () => {
      const kb = await kbIn(`random_${pooling}`);
      await indexKnowledgeBase(kb, { inputs: [DOCS], embedder: Embedder.load(tinyDir, { pooling, queryInstruction: '' }), ...quiet });
      const chunks = await db.query<{ id: number; text: string }>(`SELECT id, text FROM random_${pooling}.kb_chunks ORDER BY id`);
      assert.ok(chunks.rows.length > 20);
      for (const c of chunks.rows.filter((_, i) => i % 3 === 0)) {
        const [h] = await searchKnowledgeBase(kb, c.text, { mode: 'dense', k: 1 });
        assert.equal(h.chunkId, c.id);
        assert.ok(Math.abs(h.scores.dense! - 1) < 1e-5, `cosine ${h.scores.dense}`);
      }
    });
  }

  test('reranking: the judge\'s P(yes) orders the candidates and decides relevance', async () => {
    const reranker = Reranker.load(tinyDir);
    const query = '周末几点开门？';
    const hits = await searchKnowledgeBase(main, query, { mode: 'hybrid', k: 5, reranker, rerankCandidates: 6 });
    assert.equal(hits.length, 5);
    const judged = reranker.score(query, hits.map((h) => h.text));
    hits.forEach((h, i) => {
      assert.equal(h.score, h.scores.rerank);
      assert.ok(Math.abs(h.score - judged[i]) < 1e-6);
      assert.equal(h.relevant, h.score >= 0.5);
      if (i) assert.ok(hits[i - 1].score >= h.score);
    });
    const none = await searchKnowledgeBase(main, query, { mode: 'hybrid', k: 5, reranker, minRerank: 1.01 });
    assert.ok(none.every((h) => !h.relevant));
  });

  test('freshness: of two promotions, the newer ranks first', async () => {
    const query = '蟹粉小笼包有什么优惠';
    const plain = await searchKnowledgeBase(main, query, { mode: 'bm25', k: 2 });
    assert.match(plain[0].path, /promotions-2026-10\.md$/, 'without freshness the older matches best');
    const fresh = await searchKnowledgeBase(main, query, { mode: 'bm25', k: 2, freshness: true });
    assert.deepEqual(fresh.map((h) => h.path.split('/').pop()), ['promotions.md', 'promotions-2026-10.md']);
  });

  test('rag eval: hit@k and MRR from the ranks of the expected documents', async () => {
    const cwd = process.cwd();
    process.chdir(ROOT);
    try {
      const items = readQaFile('examples/kb/qa.jsonl');
      assert.equal(items.length, 14);
      const report = await evaluateRetrieval(main, items, { mode: 'hybrid', k: 5 });
      const ranks = report.results.map((r) => r.rank);
      assert.equal(report.hitAt1, ranks.filter((r) => r === 1).length / 14);
      assert.equal(report.mrr, ranks.reduce((s: number, r) => s + (r ? 1 / r : 0), 0) / 14);
      assert.ok(report.hitAt1 >= 0.85 && report.hitAtK === 1, JSON.stringify(report.results.filter((r) => r.rank !== 1)));
      const made = join(scratch, 'qa.jsonl');
      writeFileSync(made, '{"question": "周末几点开门？", "source": "hours.txt"}\n{"question": "周末几点开门？", "source": "nowhere.md"}\n');
      const two = await evaluateRetrieval(main, readQaFile(made), { mode: 'bm25', k: 3 });
      assert.deepEqual([two.hitAt1, two.hitAtK, two.mrr], [0.5, 0.5, 0.5]);
      writeFileSync(made, '{"question": "q"}\n');
      assert.throws(() => readQaFile(made), /qa\.jsonl: line 1: expected "source"/);
    } finally {
      process.chdir(cwd);
    }
  });
});

describe('answers with sources', () => {
  test('retrieveContext: a system message with numbered, dated sources in the question\'s language', async () => {
    const ctx = await retrieveContext(main, '周末几点开门？', { mode: 'bm25', system: '你是小笼大师的店员。' });
    assert.ok(ctx.found && ctx.message);
    assert.equal(ctx.message.role, 'system');
    assert.equal(ctx.language, 'zh');
    assert.match(ctx.message.content, /^你是小笼大师的店员。\n\n请根据下面编号的资料回答问题/);
    assert.equal(ctx.sources[0].n, 1);
    assert.equal(ctx.sources[0].path, join(DOCS, 'hours.txt'));
    assert.match(ctx.message.content, /\n\[1\] .*hours\.txt \(\d{4}-\d\d-\d\d\)\nhours\n营业时间/);
    const none = await retrieveContext(main, 'What is the capital of Mars?', { mode: 'bm25' });
    assert.equal(none.found, false);
    assert.equal(none.message, null);
    assert.match(none.notFound, /could not find anything/);
  });

  test('answerWithSources: the model answers with the sources in its prompt, and they are listed', async () => {
    const pipeline = loadPipeline(tinyDir);
    let streamed = '';
    const result = await answerWithSources(main, pipeline, 'Can I reserve a table for Saturday?', {
      mode: 'bm25',
      generation: { maxNewTokens: 6, onText: (p) => (streamed += p) },
    });
    assert.equal(result.found, true);
    assert.ok(result.generation);
    assert.equal(streamed, result.generation.text);
    // The prompt held the sources: far longer than the question alone.
    assert.ok(result.generation.promptTokens > 200, `${result.generation.promptTokens} prompt tokens`);
    assert.match(result.sources[0].path, /faq\.jsonl$/);
    assert.ok(result.text.startsWith(result.answer));
    assert.match(result.text, /\n\nSources:\n\[1\] .*faq\.jsonl › line 2/);
  });

  test('answerWithSources: nothing relevant, so it says so and never calls the model', async () => {
    const pipeline = loadPipeline(tinyDir);
    const result = await answerWithSources(main, pipeline, '火星的首都是哪里？', { mode: 'bm25' });
    assert.equal(result.found, false);
    assert.equal(result.generation, null);
    assert.equal(result.answer, '抱歉，知识库中没有找到与这个问题相关的内容，所以无法回答。');
    assert.deepEqual(result.sources, []);
  });
});

describe('incremental indexing', () => {
  const docs = join(scratch, 'docs');
  let kb: KnowledgeBase;
  const texts = async (query: string): Promise<string[]> => (await searchKnowledgeBase(kb, query, { k: 50 })).map((h) => h.text);

  before(async () => {
    cpSync(DOCS, docs, { recursive: true });
    kb = await kbIn('incremental');
  });

  test('a knowledge base without an embedding model: BM25 only, chunks sized by the Qwen tokenizer', async () => {
    const first = await indexKnowledgeBase(kb, { inputs: [docs], ...quiet });
    assert.equal(first.added.length, 7);
    assert.ok(first.chunks > 20);
    assert.equal((await kb.meta()).split_tokenizer, 'qwen3');
    assert.equal((await kb.stats()).dim, null);
    await assert.rejects(searchKnowledgeBase(kb, '周末', { mode: 'dense' }), /has no embeddings .*--mode bm25/);
  });

  test('unchanged files cost nothing; a touched file with the same content is not re-split', async () => {
    const again = await indexKnowledgeBase(kb, { inputs: [docs], ...quiet });
    assert.deepEqual([again.added, again.updated, again.removed, again.unchanged, again.chunks], [[], [], [], 7, 0]);
    const future = new Date(Date.now() + 60_000);
    utimesSync(join(docs, 'menu.md'), future, future);
    const touched = await indexKnowledgeBase(kb, { inputs: [docs], ...quiet });
    assert.deepEqual([touched.updated, touched.unchanged, touched.chunks], [[], 7, 0]);
  });

  test('an edited file: its new text is found, its old text is gone', async () => {
    assert.ok((await texts('堂食暂停')).some((t) => t.includes('堂食暂停')));
    const hours = join(docs, 'hours.txt');
    writeFileSync(hours, '营业时间\n\n每天上午11点开门，晚上10点关门。新增夜宵时段：晚上10点到12点。\n\nOpening hours\n\nEvery day from 11:00 to 22:00, with a late-night menu until midnight.\n');
    const r = await indexKnowledgeBase(kb, { inputs: [docs], ...quiet });
    assert.deepEqual(r.updated, [hours]);
    assert.equal(r.unchanged, 6);
    assert.ok((await texts('夜宵')).some((t) => t.includes('新增夜宵时段')));
    const [top] = await searchKnowledgeBase(kb, 'late-night menu', { k: 1 });
    assert.equal(top.path, hours);
    const all = await db.query<{ text: string }>('SELECT text FROM incremental.kb_chunks');
    assert.ok(!all.rows.some((c) => c.text.includes('堂食暂停') || c.text.includes('上午10点开门')), 'old text still indexed');
    const postings = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM incremental.kb_terms WHERE term = '暂停'`);
    assert.equal(postings.rows[0].n, 0, 'old postings still there');
  });

  test('a removed file loses its chunks; other inputs are left alone', async () => {
    unlinkSync(join(docs, 'faq.jsonl'));
    const r = await indexKnowledgeBase(kb, { inputs: [docs], ...quiet });
    assert.deepEqual(r.removed, [join(docs, 'faq.jsonl')]);
    assert.ok(!(await texts('导盲犬')).some((t) => t.includes('导盲犬')));
    // Indexing only a single file does not remove the documents of the folder.
    const single = await indexKnowledgeBase(kb, { inputs: [join(docs, 'menu.md')], ...quiet });
    assert.deepEqual(single.removed, []);
    assert.equal((await kb.stats()).documents, 6);
  });

  test('binary and broken files are skipped with a warning naming them; a broken file keeps its old chunks', async () => {
    writeFileSync(join(docs, 'logo.md'), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 0, 1, 2]));
    writeFileSync(join(docs, 'extra.jsonl'), '{"text": "独家秘方：姜丝要切得像头发一样细。"}\n');
    warnings.length = 0;
    const r = await indexKnowledgeBase(kb, { inputs: [docs], ...quiet });
    assert.deepEqual(r.skipped.map((s) => s.path), [join(docs, 'logo.md')]);
    assert.match(warnings.join('\n'), /skipped .*logo\.md: binary file/);
    writeFileSync(join(docs, 'extra.jsonl'), '{"text": "half-writ');
    warnings.length = 0;
    const broken = await indexKnowledgeBase(kb, { inputs: [docs], ...quiet });
    assert.deepEqual(broken.skipped.map((s) => s.path).sort(), [join(docs, 'extra.jsonl'), join(docs, 'logo.md')]);
    assert.match(warnings.join('\n'), /extra\.jsonl: line 1: not valid JSON/);
    assert.ok((await texts('姜丝')).some((t) => t.includes('独家秘方')));
  });

  test('adding an embedding model later embeds the existing chunks', async () => {
    const r = await indexKnowledgeBase(kb, { inputs: [docs], embedder: bag, ...quiet });
    const stats = await kb.stats();
    assert.equal(r.backfilled, stats.chunks);
    assert.equal(stats.embedded, stats.chunks);
    const [top] = await searchKnowledgeBase(kb, '新增夜宵时段', { mode: 'dense', k: 1 });
    assert.match(top.text, /新增夜宵时段/);
  });

  test('watch: a new file is indexed shortly after it appears', async () => {
    const reports: IndexReport[] = [];
    const watcher = await watchKnowledgeBase(kb, { inputs: [docs], debounceMs: 50, onIndexed: (r) => reports.push(r), ...quiet });
    try {
      assert.equal(reports.length, 1);
      writeFileSync(join(docs, 'news.md'), '# 新闻\n\n本店将于十二月推出冬季限定的羊肉小笼包。\n');
      const deadline = Date.now() + 10_000;
      while (!reports.some((r) => r.added.length) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      await watcher.idle();
      assert.ok(reports.some((r) => r.added.includes(join(docs, 'news.md'))), JSON.stringify(reports));
      assert.ok((await texts('羊肉小笼包')).some((t) => t.includes('冬季限定')));
    } finally {
      await watcher.close();
    }
  });
});

describe('bad input', () => {
  test('an empty knowledge base', async () => {
    const kb = await kbIn('empty');
    await assert.rejects(searchKnowledgeBase(kb, '周末'), (e: Error) => e instanceof UserError && /knowledge base empty is empty; add documents with: tunekit rag index DIR --kb empty/.test(e.message));
  });

  test('a missing store', async () => {
    await assert.rejects(kbIn('never_made', false), (e: Error) => e instanceof UserError && /no knowledge base in never_made/.test(e.message));
  });

  test('an embedding model whose hidden size differs from the index\'s', async () => {
    const tiny = Embedder.load(tinyDir);
    await assert.rejects(
      searchKnowledgeBase(main, '周末', { embedder: tiny }),
      (e: Error) => e instanceof UserError && /hidden size 64, but knowledge base main holds 512-dimensional embeddings/.test(e.message),
    );
    await assert.rejects(indexKnowledgeBase(main, { inputs: [DOCS], embedder: tiny, ...quiet }), /differs: pass --rebuild/);
  });

  test('settings that would mix chunkings need --rebuild', async () => {
    const kb = await kbIn('rebuild');
    await indexKnowledgeBase(kb, { inputs: [join(DOCS, 'hours.txt')], embedder: bag, chunkTokens: 64, ...quiet });
    await assert.rejects(indexKnowledgeBase(kb, { inputs: [join(DOCS, 'hours.txt')], chunkTokens: 128, ...quiet }), /split with --chunk-tokens 64; pass --rebuild/);
    const many = (await kb.stats()).chunks;
    const rebuilt = await indexKnowledgeBase(kb, { inputs: [join(DOCS, 'hours.txt')], embedder: bag, chunkTokens: 512, rebuild: true, ...quiet });
    assert.deepEqual(rebuilt.added, [join(DOCS, 'hours.txt')]);
    assert.ok((await kb.stats()).chunks < many);
  });

  test('a folder without documents', async () => {
    const empty = mkdtempSync(join(scratch, 'nothing-'));
    writeFileSync(join(empty, 'picture.png'), 'x');
    await assert.rejects(indexKnowledgeBase(main, { inputs: [empty], ...quiet }), /no documents in .*nothing-.* \(tunekit reads \.md/);
  });
});
