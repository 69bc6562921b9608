/**
 * sequenceLogprob: the summed log-probability of ids[start..] equals a log-softmax over the full
 * forward's logits, summed in float64 at the scored positions.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { sequenceLogprob } from '../src/infer/logprobs.js';
import { initModel } from '../src/io/init-model.js';
import { loadModel } from '../src/io/model-folder.js';
import type { CausalLM } from '../src/models/decoder.js';
import { noGrad } from '../src/tensor/tensor.js';
import { removeDir, tempDir } from './helpers/adapter-fixtures.js';

let root: string;
const models: Record<string, CausalLM> = {};

before(() => {
  root = tempDir('infer-logprobs');
  for (const preset of ['tiny', 'tiny-llama']) {
    const dir = path.join(root, preset);
    initModel({ preset, out: dir, seed: 4 });
    models[preset] = loadModel(dir);
  }
});

after(() => {
  if (root) removeDir(root);
});

/** Σ_{i ≥ start} log softmax(logits[i - 1])[ids[i]], from one full forward, in float64. */
function referenceLogprob(model: CausalLM, ids: number[], start: number): number {
  const v = model.config.vocabSize;
  const logits = noGrad(() => model.forward({ ids: Int32Array.from(ids), batch: 1, length: ids.length })).data;
  let sum = 0;
  for (let i = start; i < ids.length; i++) {
    const row = logits.subarray((i - 1) * v, i * v);
    let max = -Infinity;
    for (const x of row) max = Math.max(max, x);
    let z = 0;
    for (const x of row) z += Math.exp(x - max);
    sum += row[ids[i]] - max - Math.log(z);
  }
  return sum;
}

for (const preset of ['tiny', 'tiny-llama']) {
  describe(`sequenceLogprob on ${preset}`, () => {
    const ids = [5, 300, 17, 900, 42, 42, 7, 1000, 3, 250];

    it('equals the log-softmax sum of a full forward, for every start', () => {
      const model = models[preset];
      for (let start = 1; start <= ids.length; start++) {
        const got = sequenceLogprob(model, ids, start);
        assert.equal(got.tokens, ids.length - start);
        const want = referenceLogprob(model, ids, start);
        assert.ok(Math.abs(got.logprob - want) <= 1e-4 * Math.max(1, Math.abs(want)), `start ${start}: ${got.logprob} vs ${want}`);
      }
    });

    it('is additive: scoring from 1 is the sum over every later token', () => {
      const model = models[preset];
      const whole = sequenceLogprob(model, ids, 1).logprob;
      const head = sequenceLogprob(model, ids.slice(0, 5), 1).logprob;
      const tail = sequenceLogprob(model, ids, 5).logprob;
      assert.ok(Math.abs(whole - (head + tail)) < 1e-3, `${whole} vs ${head} + ${tail}`);
      assert.ok(whole < 0);
    });

    it('start = length scores nothing; start outside 1..length is refused', () => {
      const model = models[preset];
      assert.deepEqual(sequenceLogprob(model, ids, ids.length), { logprob: 0, tokens: 0 });
      for (const bad of [0, -1, ids.length + 1, 1.5]) {
        assert.throws(() => sequenceLogprob(model, ids, bad), RangeError);
      }
    });
  });
}
