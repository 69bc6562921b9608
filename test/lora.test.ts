/**
 * LoRA as PEFT defines it: y = W₀x + b + scaling·B·A·x with scaling = alpha/r (alpha/√r with
 * rsLoRA), A Kaiming-uniform (a = √5) or N(0, 1/r²), B zero at the start; only A and B train;
 * merge folds scaling·B·A into W₀ reversibly.
 *
 * Every check that involves the update first makes B non-zero (at B = 0 the adapter is the
 * identity and a broken formula would still pass), and asserts the adapter visibly moves the
 * output, so agreement below the tolerance means something.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { UserError } from '../src/errors.js';
import { initModel } from '../src/io/init-model.js';
import { loadModel, saveModel } from '../src/io/model-folder.js';
import { parseDecoderConfig } from '../src/models/config.js';
import { CausalLM } from '../src/models/decoder.js';
import { initializeWeights } from '../src/models/init.js';
import { PRESETS } from '../src/models/presets.js';
import {
  ALL_LINEAR_TARGETS,
  DEFAULT_LORA_TARGETS,
  applyLora,
  loraLayers,
  mergeAndUnload,
  setLoraEnabled,
  trainableSummary,
} from '../src/nn/apply-lora.js';
import { Linear } from '../src/nn/layers.js';
import { LoraLinear, loraScaling } from '../src/nn/lora.js';
import type { LoraSettings } from '../src/nn/lora.js';
import { Rng, Tensor, crossEntropy, noGrad, reshape } from '../src/tensor/index.js';

const V = 97;

function tinyModel(seed = 1): CausalLM {
  const model = new CausalLM(parseDecoderConfig({ ...PRESETS.tiny.config, vocab_size: V }));
  initializeWeights(model, seed);
  return model;
}

function randomTensor(shape: number[], rng: Rng, std = 1): Tensor {
  const t = Tensor.zeros(shape);
  rng.fillNormal(t.data, std);
  return t;
}

/** Makes every B non-zero so the adapter changes the output. */
function randomizeB(model: CausalLM, seed: number, std = 0.05): void {
  const rng = new Rng(seed);
  for (const [, layer] of loraLayers(model)) rng.fillNormal(layer.lora_B.weight.data, std);
}

const IDS = Int32Array.from([3, 17, 42, 8, 95, 1, 60, 33, 12, 77, 5, 29]);
const INPUT = { ids: IDS, batch: 2, length: 6 };

function logits(model: CausalLM): Float32Array {
  model.eval();
  return noGrad(() => model.forward(INPUT).data.slice());
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function stats(x: Float32Array): { mean: number; std: number; maxAbs: number } {
  let s = 0;
  let maxAbs = 0;
  for (const v of x) {
    s += v;
    maxAbs = Math.max(maxAbs, Math.abs(v));
  }
  const mean = s / x.length;
  let ss = 0;
  for (const v of x) ss += (v - mean) ** 2;
  return { mean, std: Math.sqrt(ss / x.length), maxAbs };
}

/** W₀x + b + scaling·B·(A·x) for every row of x, in float64. */
function loraByHand(x: Tensor, w: Tensor, b: Tensor, a: Tensor, bm: Tensor, scaling: number): Float64Array {
  const [out, inF] = w.shape;
  const r = a.shape[0];
  const rows = x.size / inF;
  const y = new Float64Array(rows * out);
  for (let n = 0; n < rows; n++) {
    const ax = new Float64Array(r);
    for (let k = 0; k < r; k++) for (let i = 0; i < inF; i++) ax[k] += a.data[k * inF + i] * x.data[n * inF + i];
    for (let o = 0; o < out; o++) {
      let base = b.data[o];
      for (let i = 0; i < inF; i++) base += w.data[o * inF + i] * x.data[n * inF + i];
      let update = 0;
      for (let k = 0; k < r; k++) update += bm.data[o * r + k] * ax[k];
      y[n * out + o] = base + scaling * update;
    }
  }
  return y;
}

describe('LoraLinear', () => {
  function wrapped(settings: LoraSettings, seed: number): { layer: LoraLinear; x: Tensor } {
    const rng = new Rng(seed);
    const base = new Linear(6, 5, true);
    rng.fillNormal(base.weight.data, 0.5);
    rng.fillNormal(base.bias!.data, 0.5);
    const layer = new LoraLinear(base, settings, new Rng(seed + 1));
    rng.fillNormal(layer.lora_B.weight.data, 0.5);
    layer.eval();
    return { layer, x: randomTensor([2, 4, 6], rng) };
  }

  function checkForward(settings: LoraSettings, expectedScaling: number): void {
    const { layer, x } = wrapped(settings, 7);
    assert.equal(layer.scaling, expectedScaling);
    const y = noGrad(() => layer.forward(x));
    assert.deepEqual(y.shape, [2, 4, 5]);
    const want = loraByHand(x, layer.base.weight, layer.base.bias!, layer.lora_A.weight, layer.lora_B.weight, expectedScaling);
    assert.ok(maxAbsDiff(y.data, want) < 1e-5, `LoRA output differs from W₀x + b + s·BAx by ${maxAbsDiff(y.data, want)}`);
    // The update is far above the tolerance, so a wrong scaling or a missing term would show.
    const baseOnly = loraByHand(x, layer.base.weight, layer.base.bias!, layer.lora_A.weight, layer.lora_B.weight, 0);
    assert.ok(maxAbsDiff(want, baseOnly) > 0.1, 'the adapter must move the output for this check to mean anything');
  }

  it('computes W₀x + b + (alpha/r)·B·A·x', () => {
    const settings: LoraSettings = { r: 3, alpha: 5, dropout: 0, useRslora: false, init: 'kaiming' };
    assert.equal(loraScaling(settings), 5 / 3);
    checkForward(settings, 5 / 3);
  });

  it('scales by alpha/√r with rsLoRA', () => {
    const settings: LoraSettings = { r: 4, alpha: 6, dropout: 0, useRslora: true, init: 'kaiming' };
    assert.equal(loraScaling(settings), 3);
    assert.notEqual(loraScaling({ ...settings, useRslora: false }), 3);
    checkForward(settings, 3);
  });

  it("initialises A Kaiming-uniform (a = √5) and B to zero, as PEFT's default", () => {
    const inF = 256;
    const layer = new LoraLinear(new Linear(inF, 8), { r: 16, alpha: 32, dropout: 0, useRslora: false, init: 'kaiming' }, new Rng(3));
    const a = stats(layer.lora_A.weight.data);
    const bound = 1 / Math.sqrt(inF);
    assert.ok(a.maxAbs <= bound, `A exceeds ±1/√in: ${a.maxAbs} > ${bound}`);
    assert.ok(a.maxAbs > 0.98 * bound, `A does not fill ±1/√in: max ${a.maxAbs}`);
    const wantStd = 1 / Math.sqrt(3 * inF);
    assert.ok(Math.abs(a.std / wantStd - 1) < 0.05, `std(A) = ${a.std}, expected ≈ ${wantStd}`);
    assert.ok(Math.abs(a.mean) < 0.1 * wantStd, `mean(A) = ${a.mean}`);
    assert.ok(layer.lora_B.weight.data.every((v) => v === 0), 'B must start at zero');
  });

  it('initialises A ~ N(0, (1/r)²) with init gaussian', () => {
    const r = 4;
    const layer = new LoraLinear(new Linear(512, 8), { r, alpha: 8, dropout: 0, useRslora: false, init: 'gaussian' }, new Rng(4));
    const a = stats(layer.lora_A.weight.data);
    assert.ok(Math.abs(a.std * r - 1) < 0.06, `std(A) = ${a.std}, expected ≈ ${1 / r}`);
    assert.ok(Math.abs(a.mean) < 0.1 / r, `mean(A) = ${a.mean}`);
    assert.ok(layer.lora_B.weight.data.every((v) => v === 0), 'B must start at zero');
  });

  it('keeps the base tensors under their own names and freezes them', () => {
    const base = new Linear(6, 5, true);
    const layer = new LoraLinear(base, { r: 2, alpha: 4, dropout: 0, useRslora: false, init: 'kaiming' }, new Rng(0));
    const params = new Map(layer.namedParameters());
    assert.deepEqual([...params.keys()], ['weight', 'bias', 'lora_A.weight', 'lora_B.weight']);
    assert.equal(params.get('weight'), base.weight);
    assert.equal(params.get('bias'), base.bias);
    assert.deepEqual(params.get('lora_A.weight')!.shape, [2, 6]);
    assert.deepEqual(params.get('lora_B.weight')!.shape, [5, 2]);
    assert.equal(base.weight.requiresGrad, false);
    assert.equal(base.bias!.requiresGrad, false);
  });
});

describe('applyLora', () => {
  it('wraps q_proj and v_proj of every layer by default', () => {
    assert.deepEqual(DEFAULT_LORA_TARGETS, ['q_proj', 'v_proj']);
    const model = tinyModel();
    const applied = applyLora(model, { r: 4 });
    assert.deepEqual(applied.targetModules, ['q_proj', 'v_proj']);
    const want = ['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.v_proj', 'model.layers.1.self_attn.q_proj', 'model.layers.1.self_attn.v_proj'];
    assert.deepEqual([...applied.paths].sort(), want);
    assert.deepEqual(loraLayers(model).map(([p]) => p).sort(), want);
    assert.equal(applied.settings.alpha, 8, 'alpha defaults to 2·r');
  });

  it('wraps all seven projections of every layer with targets "all"', () => {
    const model = tinyModel();
    const applied = applyLora(model, { r: 2, targets: 'all' });
    assert.deepEqual(applied.targetModules, [...ALL_LINEAR_TARGETS].sort());
    assert.equal(applied.paths.length, 7 * 2);
    for (const layer of [0, 1]) {
      for (const name of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) assert.ok(applied.paths.includes(`model.layers.${layer}.self_attn.${name}`), name);
      for (const name of ['gate_proj', 'up_proj', 'down_proj']) assert.ok(applied.paths.includes(`model.layers.${layer}.mlp.${name}`), name);
    }
    assert.equal(model.getModule('model.embed_tokens') instanceof LoraLinear, false);
  });

  it('rejects a target the model does not have, naming it and the available ones', () => {
    const model = tinyModel();
    assert.throws(
      () => applyLora(model, { r: 4, targets: ['q_proj', 'qkv_proj'] }),
      (e: unknown) => e instanceof UserError && /qkv_proj/.test(e.message) && /gate_proj/.test(e.message),
    );
  });

  it('trains only lora_A and lora_B: a backward pass leaves every base gradient null', () => {
    const model = tinyModel();
    applyLora(model, { r: 4, targets: 'all', seed: 5 });
    randomizeB(model, 6);
    const trainable = model.trainableParameters().map(([n]) => n);
    assert.equal(trainable.length, 2 * 7 * 2);
    for (const name of trainable) assert.match(name, /\.lora_[AB]\.weight$/);

    model.train();
    const out = model.forward(INPUT);
    const labels = IDS.map((v) => (v + 1) % V);
    const loss = crossEntropy(reshape(out, [INPUT.batch * INPUT.length, V]), labels);
    loss.backward();
    for (const [name, t] of model.namedParameters()) {
      if (/\.lora_[AB]\.weight$/.test(name)) {
        assert.ok(t.grad, `${name} has no gradient`);
        assert.ok(t.grad.data.some((g) => g !== 0), `${name} has an all-zero gradient`);
      } else {
        assert.equal(t.grad, null, `${name} is frozen but got a gradient`);
      }
    }
  });

  it("prints PEFT's trainable-parameter summary with the counts worked out by hand", () => {
    // tiny: C = 64, I = 128, 2 layers, 2 KV heads × head_dim 16 = 32, V = 97, tied head, q/k/v bias.
    const C = 64;
    const I = 128;
    const KV = 32;
    const perLayer = (C * C + C) + 2 * (C * KV + KV) + C * C + 3 * C * I + 2 * C;
    const all = V * C + 2 * perLayer + C;
    assert.equal(all, 80_512);
    const model = tinyModel();
    assert.equal(trainableSummary(model), 'trainable params: 80,512 || all params: 80,512 || trainable%: 100.0000');

    applyLora(model, { r: 8 });
    // q_proj: A [8, 64] + B [64, 8]; v_proj: A [8, 64] + B [32, 8]; two layers.
    const lora = 2 * (8 * C + C * 8 + 8 * C + KV * 8);
    assert.equal(lora, 3_584);
    assert.equal(trainableSummary(model), 'trainable params: 3,584 || all params: 84,096 || trainable%: 4.2618');
  });
});

describe('merge, unmerge, disable', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tunekit-lora-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('gives the same logits unmerged, merged, and merged-saved-reloaded; unmerge restores W₀', () => {
    const baseDir = path.join(dir, 'base');
    initModel({ preset: 'tiny', out: baseDir, seed: 11 });
    const model = loadModel(baseDir);
    const baseLogits = logits(model);
    const original = new Map([...model.namedParameters()].map(([n, t]) => [n, t.data.slice()]));

    applyLora(model, { r: 4, alpha: 8, targets: 'all', seed: 12 });
    randomizeB(model, 13);
    const adapterLogits = logits(model);
    assert.ok(maxAbsDiff(adapterLogits, baseLogits) > 1e-3, 'the adapter must change the logits');

    // Merge by hand in float64 for one layer, then through LoraLinear.merge.
    const [qPath, q] = loraLayers(model).find(([p]) => p.endsWith('layers.1.self_attn.q_proj'))!;
    const [out, inF] = q.base.weight.shape;
    const r = q.lora_A.outFeatures;
    const wantW = new Float64Array(out * inF);
    for (let o = 0; o < out; o++) {
      for (let i = 0; i < inF; i++) {
        let d = 0;
        for (let k = 0; k < r; k++) d += q.lora_B.weight.data[o * r + k] * q.lora_A.weight.data[k * inF + i];
        wantW[o * inF + i] = original.get(`${qPath}.weight`)![o * inF + i] + q.scaling * d;
      }
    }
    for (const [, l] of loraLayers(model)) l.merge();
    assert.ok(maxAbsDiff(q.base.weight.data, wantW) < 1e-6, 'merged W ≠ W₀ + scaling·B·A');
    const mergedLogits = logits(model);
    assert.ok(maxAbsDiff(mergedLogits, adapterLogits) < 1e-5, `merged vs adapter: ${maxAbsDiff(mergedLogits, adapterLogits)}`);

    for (const [, l] of loraLayers(model)) l.unmerge();
    for (const [name, t] of model.namedParameters()) {
      const was = original.get(name);
      if (was) assert.ok(maxAbsDiff(t.data, was) < 1e-6, `unmerge did not restore ${name}`);
    }
    assert.ok(maxAbsDiff(logits(model), adapterLogits) < 1e-5);

    mergeAndUnload(model);
    assert.equal(loraLayers(model).length, 0);
    assert.deepEqual([...model.namedParameters()].map(([n]) => n), [...original.keys()]);
    const mergedDir = path.join(dir, 'merged');
    saveModel(model, mergedDir, { copyFrom: baseDir });
    assert.ok(fs.existsSync(path.join(mergedDir, 'tokenizer.json')));
    const reloaded = loadModel(mergedDir);
    const reloadedLogits = logits(reloaded);
    assert.ok(maxAbsDiff(reloadedLogits, adapterLogits) < 1e-5, `reloaded merged vs adapter: ${maxAbsDiff(reloadedLogits, adapterLogits)}`);
  });

  it("with the adapter disabled gives exactly the base model's logits", () => {
    const model = tinyModel(21);
    const baseLogits = logits(model);
    applyLora(model, { r: 4, targets: 'all', seed: 22 });
    randomizeB(model, 23);
    const adapterLogits = logits(model);
    assert.ok(maxAbsDiff(adapterLogits, baseLogits) > 1e-3, 'the adapter must change the logits');
    setLoraEnabled(model, false);
    assert.deepEqual(logits(model), baseLogits);
    setLoraEnabled(model, true);
    assert.deepEqual(logits(model), adapterLogits);
  });
});
