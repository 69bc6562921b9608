import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';

import { initModel } from '../src/io/init-model.js';
import { DEFAULT_QUERY_INSTRUCTION, Embedder, modelFingerprint } from '../src/rag/embed.js';
import { RERANK_PREFIX, RERANK_SUFFIX, Reranker } from '../src/rag/rerank.js';
import { noGrad } from '../src/tensor/tensor.js';
import { Tokenizer } from '../src/text/tokenizer.js';

const scratch = mkdtempSync(join(tmpdir(), 'tunekit-rag-models-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
const tinyDir = join(scratch, 'tiny');
const model = initModel({ preset: 'tiny', out: tinyDir, seed: 3 });
model.eval();
const tokenizer = Tokenizer.fromFolder(tinyDir);

const TEXTS = [
  '周一至周五：上午10点开门，晚上9点半关门。',
  'Every dumpling is folded by hand with eighteen pleats.',
  '蟹粉小笼包',
  'We deliver within 5 km of the restaurant; delivery is free on orders over ¥50. 外卖配送范围是餐厅周边5公里。',
];

function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(a.length, b.length, `${what}: lengths`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  assert.ok(worst <= tol, `${what}: max difference ${worst} > ${tol}`);
}

/** The obviously-correct path: one text alone, no padding, pooled by hand. */
function referenceEmbedding(ids: number[], pooling: 'last' | 'mean'): Float32Array {
  const C = model.config.hiddenSize;
  const h = noGrad(() => model.hidden({ ids: Int32Array.from(ids), batch: 1, length: ids.length })).data;
  const v = new Float64Array(C);
  if (pooling === 'last') for (let c = 0; c < C; c++) v[c] = h[(ids.length - 1) * C + c];
  else for (let t = 0; t < ids.length; t++) for (let c = 0; c < C; c++) v[c] += h[t * C + c] / ids.length;
  const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  return Float32Array.from(v, (x) => x / norm);
}

describe('Embedder', () => {
  for (const pooling of ['last', 'mean'] as const) {
    test(`${pooling} pooling: batched with padding equals each text alone, unit length`, () => {
      const e = new Embedder(model, tokenizer, tinyDir, { pooling, batchTokens: 10_000 });
      const batched = e.embedDocuments(TEXTS);
      TEXTS.forEach((text, i) => {
        const ref = referenceEmbedding(e.encode(text), pooling);
        assertClose(batched[i], ref, 2e-5, `text ${i}`);
        const norm = Math.sqrt(batched[i].reduce((s, x) => s + x * x, 0));
        assert.ok(Math.abs(norm - 1) < 1e-5);
      });
      // Different texts, different vectors (the test would pass trivially on a constant).
      assert.ok(Math.abs(batched[0][0] - batched[1][0]) + Math.abs(batched[0][1] - batched[1][1]) > 1e-4);
    });
  }

  test('last pooling ends every input with <|endoftext|>, once; mean pooling adds nothing', () => {
    const end = tokenizer.tokenToId('<|endoftext|>')!;
    const last = new Embedder(model, tokenizer, tinyDir, { pooling: 'last' });
    const plain = tokenizer.encode('你好', { addSpecialTokens: false });
    assert.deepEqual(last.encode('你好'), [...plain, end]);
    assert.deepEqual(last.encode('你好<|endoftext|>'), [...plain, end]);
    const mean = new Embedder(model, tokenizer, tinyDir, { pooling: 'mean' });
    assert.deepEqual(mean.encode('你好'), plain);
    const short = new Embedder(model, tokenizer, tinyDir, { pooling: 'last', maxTokens: 4 });
    assert.equal(short.encode(TEXTS[3]).length, 4);
    assert.equal(short.encode(TEXTS[3])[3], end);
  });

  test('queries carry Qwen3-Embedding\'s instruction under last pooling, documents do not', () => {
    const e = new Embedder(model, tokenizer, tinyDir);
    assert.equal(e.queryText('几点开门'), `Instruct: ${DEFAULT_QUERY_INSTRUCTION}\nQuery:几点开门`);
    assertClose(e.embedQuery('几点开门'), referenceEmbedding(e.encode(e.queryText('几点开门')), 'last'), 2e-5, 'query');
    assert.equal(new Embedder(model, tokenizer, tinyDir, { pooling: 'mean' }).queryText('q'), 'q');
    assert.equal(new Embedder(model, tokenizer, tinyDir, { queryInstruction: '' }).queryText('q'), 'q');
  });

  test('the fingerprint changes with the weights and the config', () => {
    const other = join(scratch, 'other');
    initModel({ preset: 'tiny', out: other, configOverrides: { num_hidden_layers: 1 } });
    assert.equal(modelFingerprint(tinyDir), modelFingerprint(tinyDir));
    assert.notEqual(modelFingerprint(tinyDir), modelFingerprint(other));
  });
});

describe('Reranker', () => {
  const reranker = new Reranker(model, tokenizer, { batchTokens: 10_000 });

  test('the prompt is Qwen3-Reranker\'s, with the document cut to fit', () => {
    const ids = reranker.encodePair('几点开门', '上午十点');
    const text = tokenizer.decode(ids);
    assert.equal(text, `${RERANK_PREFIX}<Instruct>: ${reranker.instruction}\n<Query>: 几点开门\n<Document>: 上午十点${RERANK_SUFFIX}`);
    const cut = new Reranker(model, tokenizer, { maxTokens: ids.length - 2 }).encodePair('几点开门', '上午十点');
    assert.equal(cut.length, ids.length - 2);
  });

  test('P(yes) equals the softmax over the full logits of "yes" and "no", batched or not', () => {
    const query = '外卖送多远？';
    const scores = reranker.score(query, TEXTS);
    TEXTS.forEach((doc, i) => {
      const ids = reranker.encodePair(query, doc);
      const logits = noGrad(() => model.forward({ ids: Int32Array.from(ids), batch: 1, length: ids.length })).data;
      const V = model.config.vocabSize;
      const row = logits.subarray((ids.length - 1) * V, ids.length * V);
      const yes = row[reranker.yesId];
      const no = row[reranker.noId];
      const p = Math.exp(yes) / (Math.exp(yes) + Math.exp(no));
      assert.ok(Math.abs(scores[i] - p) < 1e-5, `doc ${i}: ${scores[i]} vs ${p}`);
      assert.ok(scores[i] > 0 && scores[i] < 1);
    });
    assert.notEqual(reranker.yesId, reranker.noId);
  });
});
