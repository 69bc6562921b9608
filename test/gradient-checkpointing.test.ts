/**
 * Activation checkpointing (`gradient_checkpointing: true`): the generic `checkpoint` block, the
 * decoder running each layer through it, and the trainer turning it on from a config. With it on,
 * every trainable parameter's gradient must equal the one without it (within 1e-6; in fact bit for
 * bit, as the recomputation runs the same kernels on the same values), including with LoRA dropout, whose
 * masks the recomputation must draw again identically. Layers below the lowest trainable
 * parameter are not recomputed. Runs of every stage give the same losses with it on and off.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { parseDecoderConfig } from '../src/models/config.js';
import { CausalLM } from '../src/models/decoder.js';
import type { DecoderLayer } from '../src/models/decoder.js';
import { initializeWeights } from '../src/models/init.js';
import { PRESETS } from '../src/models/presets.js';
import { applyLora, loraLayers } from '../src/nn/apply-lora.js';
import { Tensor, checkpoint, dropout, linear, noGrad, silu, sum } from '../src/tensor/index.js';
import { Rng } from '../src/tensor/random.js';
import { TRAIN_DEFAULTS, gradientCheckpointingOn, loadTrainConfig } from '../src/train/config.js';
import { causalLmLoss } from '../src/train/loss.js';
import type { LabelledBatch } from '../src/train/loss.js';
import { runTraining } from '../src/train/run.js';
import type { TrainResult } from '../src/train/trainer.js';
import { EXAMPLES_DATA, losses, maxAbsDiff, readTensors, removeDir, shortRunSettings, tempDir, tinyModelDir } from './helpers/train-fixtures.js';

const VOCAB = 50;

function tinyModel(preset: string): CausalLM {
  const model = new CausalLM(parseDecoderConfig({ ...PRESETS[preset].config, vocab_size: VOCAB }));
  initializeWeights(model, 1, 0.2);
  return model;
}

/** LoRA on every linear layer with B ≠ 0, so every adapter matrix gets a gradient that matters. */
function withLora(model: CausalLM, loraDropout: number): CausalLM {
  applyLora(model, { r: 4, targets: 'all', dropout: loraDropout, seed: 2 });
  const rng = new Rng(9);
  for (const [, l] of loraLayers(model)) rng.fillNormal(l.lora_B.weight.data, 0.3);
  return model;
}

/** Two rows, the first with two padding tokens on the left; every real token after the first is trained. */
function batchOf(): LabelledBatch {
  const B = 2;
  const T = 9;
  const rng = new Rng(5);
  const ids = new Int32Array(B * T);
  const labels = new Int32Array(B * T);
  const keyMask = new Uint8Array(B * T).fill(1);
  const positions = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    const pad = b === 0 ? 2 : 0;
    for (let t = 0; t < T; t++) {
      const i = b * T + t;
      ids[i] = rng.int(VOCAB);
      labels[i] = t < pad ? -100 : ids[i];
      keyMask[i] = t < pad ? 0 : 1;
      positions[i] = t < pad ? 1 : t - pad;
    }
  }
  return { ids, labels, keyMask, positions, batch: B, length: T };
}

interface Pass {
  loss: number;
  grads: Map<string, Float32Array>;
  /** The dropout generator's state after forward and backward. */
  rngAfter: unknown;
}

/** One training micro-step's forward and backward, as the trainer runs it. */
function pass(model: CausalLM, checkpointing: boolean, dropoutSeed = 3): Pass {
  model.zeroGrad();
  model.train();
  model.gradientCheckpointing = checkpointing;
  const rng = new Rng(dropoutSeed);
  for (const [, l] of loraLayers(model)) l.dropoutRng = rng;
  const batch = batchOf();
  const { loss, tokens } = causalLmLoss(model, batch, 10);
  assert.ok(tokens > 0);
  loss.backward();
  const grads = new Map<string, Float32Array>();
  for (const [name, t] of model.trainableParameters()) {
    assert.ok(t.grad, `${name} has a gradient`);
    grads.set(name, t.grad.data.slice());
  }
  model.gradientCheckpointing = false;
  return { loss: loss.item(), grads, rngAfter: rng.getState() };
}

function assertSameGradients(off: Pass, on: Pass): void {
  assert.equal(on.loss, off.loss);
  assert.deepEqual([...on.grads.keys()], [...off.grads.keys()]);
  for (const [name, g] of off.grads) {
    const h = on.grads.get(name) as Float32Array;
    let worst = 0;
    for (let i = 0; i < g.length; i++) worst = Math.max(worst, Math.abs(g[i] - h[i]));
    assert.ok(worst <= 1e-6, `${name}: gradients differ by ${worst}`);
    assert.ok(g.some((v) => v !== 0), `${name}: the gradient is not all zero (the test would be trivial)`);
  }
  // The recomputation puts the generator back: later draws are those of a run without it.
  assert.deepEqual(on.rngAfter, off.rngAfter);
}

function gradOf(t: Tensor): Float32Array {
  assert.ok(t.grad, 'a gradient was accumulated');
  return t.grad.data;
}

/** Counts each layer's forward calls while `fn` runs. */
function countLayerForwards(model: CausalLM, fn: () => void): number[] {
  const counts = model.model.layers.items.map(() => 0);
  const originals = model.model.layers.items.map((layer) => layer.forward);
  model.model.layers.items.forEach((layer: DecoderLayer, i) => {
    layer.forward = (...args) => {
      counts[i]++;
      return originals[i].apply(layer, args);
    };
  });
  try {
    fn();
  } finally {
    model.model.layers.items.forEach((layer, i) => (layer.forward = originals[i]));
  }
  return counts;
}

describe('checkpoint()', () => {
  const W = Tensor.from(Array.from({ length: 12 }, (_, i) => Math.sin(i + 1)), [3, 4], true);
  const f = (rng: Rng) => (x: Tensor) => silu(linear(dropout(x, 0.3, rng), W));
  const xValues = Array.from({ length: 8 }, (_, i) => Math.cos(i) * 2);

  function run(useCheckpoint: boolean): { y: number[]; gx: Float32Array; gw: Float32Array; rng: unknown; calls: number } {
    W.grad = null;
    const x = Tensor.from(xValues, [2, 4], true);
    const rng = new Rng(4);
    let calls = 0;
    const fn = (h: Tensor) => {
      calls++;
      return f(rng)(h);
    };
    const y = useCheckpoint ? checkpoint(fn, [x], { params: [W], rngs: [rng] }) : fn(x);
    sum(y).backward();
    return { y: Array.from(y.data), gx: gradOf(x), gw: gradOf(W), rng: rng.getState(), calls };
  }

  it('gives the same values and input and parameter gradients, recomputing once with the same dropout mask', () => {
    const plain = run(false);
    const ckpt = run(true);
    assert.deepEqual(ckpt.y, plain.y);
    assert.deepEqual(Array.from(ckpt.gx), Array.from(plain.gx));
    assert.deepEqual(Array.from(ckpt.gw), Array.from(plain.gw));
    assert.ok(plain.gx.some((v) => v === 0) && plain.gx.some((v) => v !== 0), 'the mask drops some inputs and keeps others');
    assert.deepEqual(ckpt.rng, plain.rng);
    assert.equal(plain.calls, 1);
    assert.equal(ckpt.calls, 2);
  });

  it('without restoring the generator the recomputation would draw another mask (the check above can fail)', () => {
    W.grad = null;
    const x = Tensor.from(xValues, [2, 4], true);
    const rng = new Rng(4);
    const y = checkpoint(f(rng), [x], { params: [W] });
    sum(y).backward();
    const unrestored = Array.from(gradOf(W));
    const plain = run(false);
    assert.notDeepEqual(unrestored, Array.from(plain.gw));
  });

  it('records nothing and recomputes nothing when no gradient is needed or grad is off', () => {
    const frozen = Tensor.from(Array.from(W.data), [3, 4]);
    let calls = 0;
    const fn = (h: Tensor) => {
      calls++;
      return linear(h, frozen);
    };
    const y = checkpoint(fn, [Tensor.from(xValues, [2, 4])], { params: [frozen] });
    assert.equal(y.node, null);
    assert.equal(y.requiresGrad, false);
    const z = noGrad(() => checkpoint(fn, [Tensor.from(xValues, [2, 4], true)], { params: [W] }));
    assert.equal(z.node, null);
    assert.equal(calls, 2);
  });

  it('keeps an input that is returned unchanged out of the graph it already has', () => {
    const x = Tensor.from(xValues, [2, 4], true);
    const y = checkpoint((h) => h, [x]);
    assert.notEqual(y, x);
    assert.equal(x.node, null);
    sum(y).backward();
    assert.deepEqual(Array.from(gradOf(x)), new Array(8).fill(1));
  });
});

describe('the decoder with gradientCheckpointing', () => {
  for (const preset of ['tiny', 'tiny-llama', 'tiny-qwen3']) {
    it(`${preset}, LoRA on every linear layer with lora_dropout 0.1: every adapter gradient equals the one without`, () => {
      const model = withLora(tinyModel(preset), 0.1);
      const off = pass(model, false);
      const on = pass(model, true);
      assertSameGradients(off, on);
      // The dropout masks matter: another seed gives other gradients.
      const other = pass(model, true, 4);
      assert.notDeepEqual(Array.from(other.grads.values())[0], Array.from(off.grads.values())[0]);
    });
  }

  it('LoRA without dropout, and the same model evaluated: equal gradients, and no graph at all under noGrad', () => {
    const model = withLora(tinyModel('tiny'), 0);
    assertSameGradients(pass(model, false), pass(model, true));
    model.gradientCheckpointing = true;
    const h = noGrad(() => model.hidden(batchOf()));
    assert.equal(h.node, null);
  });

  it('full fine-tuning: every weight, embeddings and norms included, gets the same gradient', () => {
    const model = tinyModel('tiny-llama');
    assertSameGradients(pass(model, false), pass(model, true));
  });

  it('recomputes only the layers whose backward is needed: none below the lowest trainable parameter', () => {
    const model = tinyModel('tiny');
    model.freeze();
    for (const [name, t] of model.namedParameters()) if (name.startsWith('model.layers.1.') || name === 'model.norm.weight') t.requiresGrad = true;
    let off: Pass | undefined;
    let on: Pass | undefined;
    const plain = countLayerForwards(model, () => (off = pass(model, false)));
    const ckpt = countLayerForwards(model, () => (on = pass(model, true)));
    assert.deepEqual(plain, [1, 1]);
    assert.deepEqual(ckpt, [1, 2], 'layer 0 runs once (nothing below layer 1 needs a gradient); layer 1 is recomputed');
    assertSameGradients(off as Pass, on as Pass);
    assert.ok([...(off as Pass).grads.keys()].every((n) => !n.startsWith('model.layers.0.')));
  });
});

describe('gradient_checkpointing in the config', () => {
  const required = { model_name_or_path: 'm', dataset: 'd', output_dir: 'o' };

  it('is a real key, off by default, with no "ignored" note; disable_gradient_checkpointing wins', () => {
    assert.equal(TRAIN_DEFAULTS.gradient_checkpointing, false);
    assert.equal(TRAIN_DEFAULTS.disable_gradient_checkpointing, false);
    const { config, notes } = loadTrainConfig(null, { ...required, gradient_checkpointing: true, disable_gradient_checkpointing: false });
    assert.deepEqual(notes, []);
    assert.equal(config.gradient_checkpointing, true);
    assert.equal(gradientCheckpointingOn(config), true);
    assert.equal(gradientCheckpointingOn(loadTrainConfig(null, required).config), false);
    assert.equal(gradientCheckpointingOn(loadTrainConfig(null, { ...required, disable_gradient_checkpointing: true }).config), false);
    assert.equal(gradientCheckpointingOn(loadTrainConfig(null, { ...required, gradient_checkpointing: true, disable_gradient_checkpointing: true }).config), false);
  });

  it('rejects a value that is not a boolean with a one-line error like the other boolean keys', () => {
    for (const key of ['gradient_checkpointing', 'disable_gradient_checkpointing']) {
      assert.throws(
        () => loadTrainConfig(null, { ...required, [key]: 'yes' }),
        (e: Error) => {
          assert.equal(e.message, `command line: "${key}" must be true or false, got "yes"`);
          return true;
        },
      );
    }
  });
});

describe('training with gradient_checkpointing: true', () => {
  let scratch: string;
  let modelDir: string;
  let dataDir: string;

  before(() => {
    scratch = tempDir('ckpt');
    modelDir = tinyModelDir(scratch);
    dataDir = path.join(scratch, 'data');
    fs.mkdirSync(dataDir);
    const polite = ['Hello! Thank you for asking, we are glad to help.', 'Hello! It is a pleasure to help you.'];
    const curt = ['No.', 'Closed.', 'Maybe.'];
    const qs = ['Open now?', 'Soup dumplings?', 'Crab price?', 'Where?', 'Book a table?', 'Parking?'];
    fs.writeFileSync(path.join(dataDir, 'pairs.json'), JSON.stringify(qs.map((q, i) => ({ instruction: q, input: '', chosen: polite[i % 2], rejected: curt[i % 3] }))));
    fs.writeFileSync(path.join(dataDir, 'prompts.json'), JSON.stringify(qs.map((q) => ({ instruction: q, input: '' }))));
    fs.writeFileSync(path.join(dataDir, 'dataset_info.json'), JSON.stringify({ pairs: { file_name: 'pairs.json', ranking: true }, prompts: { file_name: 'prompts.json' } }));
  });
  after(() => removeDir(scratch));

  async function runBoth(name: string, settings: Record<string, unknown>, weights: string): Promise<{ off: TrainResult; on: TrainResult; onLines: string[] }> {
    const offDir = path.join(scratch, `${name}-off`);
    const onDir = path.join(scratch, `${name}-on`);
    const off = await runTraining(loadTrainConfig(null, { ...settings, output_dir: offDir }).config, { log: () => {} });
    const onLines: string[] = [];
    const on = await runTraining(loadTrainConfig(null, { ...settings, output_dir: onDir, gradient_checkpointing: true }).config, { log: (l) => onLines.push(l) });
    assert.ok(losses(off).length >= 2);
    assert.deepEqual(losses(on), losses(off));
    assert.deepEqual(on.history.map((e) => e.grad_norm), off.history.map((e) => e.grad_norm));
    assert.ok(maxAbsDiff(readTensors(path.join(onDir, weights)), readTensors(path.join(offDir, weights))) <= 1e-6);
    assert.ok(onLines.some((l) => l.startsWith('gradient checkpointing: on')), onLines.join('\n'));
    return { off, on, onLines };
  }

  it('sft with LoRA and lora_dropout 0.1, from a YAML file: the same losses, gradient norms and adapter', async () => {
    const yaml = path.join(scratch, 'sft.yaml');
    const base = { ...shortRunSettings(modelDir, path.join(scratch, 'sft-yaml-on')), lora_dropout: 0.1 };
    fs.writeFileSync(yaml, `${Object.entries({ ...base, gradient_checkpointing: true }).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join('\n')}\n`);
    const parsed = loadTrainConfig(yaml);
    assert.deepEqual(parsed.notes, []);
    assert.equal(parsed.config.gradient_checkpointing, true);
    const lines: string[] = [];
    const on = await runTraining(parsed.config, { log: (l) => lines.push(l) });
    const off = await runTraining(loadTrainConfig(null, { ...base, output_dir: path.join(scratch, 'sft-yaml-off') }).config, { log: () => {} });
    assert.ok(lines.some((l) => l.startsWith('gradient checkpointing: on')));
    assert.ok(losses(off).length >= 2);
    assert.deepEqual(losses(on), losses(off));
    const adapter = 'adapter_model.safetensors';
    assert.ok(maxAbsDiff(readTensors(path.join(scratch, 'sft-yaml-on', adapter)), readTensors(path.join(scratch, 'sft-yaml-off', adapter))) <= 1e-6);
  });

  it('pt with full fine-tuning', async () => {
    await runBoth('pt', {
      model_name_or_path: modelDir, stage: 'pt', finetuning_type: 'full', dataset: 'restaurant_corpus', dataset_dir: EXAMPLES_DATA,
      cutoff_len: 32, packing: true, max_samples: 8, per_device_train_batch_size: 2, learning_rate: 1e-3, max_steps: 3, logging_steps: 1,
      save_steps: 1000, seed: 42,
    }, 'model.safetensors');
  });

  it('dpo and rm with LoRA and lora_dropout 0.1', async () => {
    const common = {
      model_name_or_path: modelDir, dataset: 'pairs', dataset_dir: dataDir, per_device_train_batch_size: 2, learning_rate: 5e-3,
      max_steps: 3, logging_steps: 1, save_steps: 1000, lora_target: 'all', lora_dropout: 0.1, seed: 7,
    };
    await runBoth('dpo', { ...common, stage: 'dpo' }, 'adapter_model.safetensors');
    await runBoth('rm', { ...common, stage: 'rm' }, 'value_head.safetensors');
  });

  it('ppo with LoRA and a rule-based reward', async () => {
    await runBoth('ppo', {
      model_name_or_path: modelDir, stage: 'ppo', dataset: 'prompts', dataset_dir: dataDir, per_device_train_batch_size: 2, learning_rate: 5e-3,
      max_steps: 2, ppo_epochs: 1, logging_steps: 1, save_steps: 1000, max_new_tokens: 4, lora_target: 'all', lora_dropout: 0.1, seed: 11,
      reward_function: { contains: 'Hello', weight: 1 },
    }, 'adapter_model.safetensors');
  });
});
