/**
 * Short real training runs on the tiny random model: LoRA SFT, full fine-tuning and continued
 * pre-training each lower the loss; a run leaves a PEFT adapter, tokenizer files, a JSON-lines
 * log, a loss-curve PNG and train_results.json; gradient accumulation over micro-batches gives the
 * same update as one large batch (the loss is normalised by the tokens of the whole group).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PNG } from 'pngjs';

import { loadModel } from '../src/io/model-folder.js';
import { learningRateAt } from '../src/train/schedule.js';
import {
  EXAMPLES_DATA,
  losses,
  maxAbsDiff,
  pngSize,
  readTensors,
  readTrainerLog,
  removeDir,
  runQuiet,
  shortRunSettings,
  tempDir,
  tinyModelDir,
} from './helpers/train-fixtures.js';
import type { QuietRun } from './helpers/train-fixtures.js';

let root: string;
let model: string;

before(() => {
  root = tempDir('train-run');
  model = tinyModelDir(root);
});
after(() => removeDir(root));

/** Mean of the first and of the last `n` logged losses, so one noisy batch cannot decide. */
function ends(values: number[], n = 2): { first: number; last: number } {
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  return { first: mean(values.slice(0, n)), last: mean(values.slice(-n)) };
}

describe('LoRA SFT on the tiny model', () => {
  let out: string;
  let run: QuietRun;
  const settings = () => ({
    ...shortRunSettings(model, out),
    learning_rate: 1e-2,
    num_train_epochs: 10,
    lr_scheduler_type: 'cosine',
    warmup_ratio: 0.1,
  });

  before(async () => {
    out = path.join(root, 'lora');
    run = await runQuiet(settings());
  });

  it('lowers the training loss clearly', () => {
    const l = losses(run.result);
    assert.equal(l.length, 40, '8 examples / batch 2 × 10 epochs, one log entry per step');
    assert.ok(l.every(Number.isFinite));
    // A uniform guess over the 1024-token vocabulary costs ln 1024 ≈ 6.93; the random model starts there.
    assert.ok(Math.abs(l[0] - Math.log(1024)) < 0.1, `first loss ${l[0]}`);
    const { first, last } = ends(l);
    assert.ok(last < first - 0.3, `loss went from ${first} to ${last}`);
    assert.equal(run.result.globalStep, 40);
    assert.equal(run.result.stoppedEarly, false);
    assert.ok(run.lines.some((line) => /trainable params: 16,384 \|\| all params: 156,224 \|\| trainable%: 10\.48/.test(line)), 'PEFT-style parameter count');
  });

  it('writes a PEFT adapter with trained, non-zero B matrices on every linear layer', () => {
    const cfg = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.peft_type, 'LORA');
    assert.equal(cfg.task_type, 'CAUSAL_LM');
    assert.equal(cfg.r, 8);
    assert.equal(cfg.lora_alpha, 16);
    assert.equal(cfg.base_model_name_or_path, model);
    assert.deepEqual([...cfg.target_modules].sort(), ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
    const w = readTensors(path.join(out, 'adapter_model.safetensors'));
    assert.equal(w.size, 2 * 7 * 2, '2 layers × 7 targets × (A, B)');
    const q = 'base_model.model.model.layers.0.self_attn.q_proj';
    assert.equal(w.get(`${q}.lora_A.weight`)?.length, 8 * 64);
    const bNorms = [...w].filter(([n]) => n.endsWith('lora_B.weight')).map(([, x]) => Math.hypot(...x));
    assert.equal(bNorms.length, 14);
    assert.ok(bNorms.every((n) => n > 1e-3), `every B trained: ${bNorms.map((n) => n.toFixed(4)).join(' ')}`);
  });

  it('copies the tokenizer files and writes train_results.json', () => {
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) {
      assert.equal(fs.readFileSync(path.join(out, f), 'utf8'), fs.readFileSync(path.join(model, f), 'utf8'), f);
    }
    const results = JSON.parse(fs.readFileSync(path.join(out, 'train_results.json'), 'utf8'));
    assert.equal(results.global_step, 40);
    assert.equal(results.epoch, 10);
    const l = losses(run.result);
    assert.ok(Math.abs(results.train_loss - l.reduce((a, b) => a + b, 0) / l.length) < 1e-3, 'train_loss is the mean step loss');
    assert.ok(results.train_runtime > 0);
  });

  it('logs every step to trainer_log.jsonl with the learning rate the schedule gives', () => {
    const log = readTrainerLog(out);
    assert.equal(log.length, 40);
    log.forEach((e, i) => {
      assert.equal(e.current_steps, i + 1);
      assert.equal(e.total_steps, 40);
      assert.equal(typeof e.loss, 'number');
      assert.ok(Number.isFinite(e.loss as number));
      assert.ok(Math.abs((e.epoch as number) - (i + 1) / 4) < 1e-4, `epoch ${e.epoch} at step ${i + 1}`);
      // warmup_ratio 0.1 of 40 steps = 4 warm-up steps; the update of step i+1 uses lr(i).
      assert.ok(Math.abs((e.lr as number) - learningRateAt('cosine', 1e-2, i, 40, 4)) < 1e-12, `lr at step ${i + 1}: ${e.lr}`);
    });
    assert.equal(log[0].lr, 0, 'warm-up starts from 0 as in transformers');
    assert.deepEqual(log.map((e) => e.loss), losses(run.result));
  });

  it('plots the loss curve as a valid PNG', () => {
    const file = path.join(out, 'training_loss.png');
    const { width, height } = pngSize(file);
    assert.ok(width >= 200 && width <= 4000 && height >= 100 && height <= 4000, `${width}×${height}`);
    const png = PNG.sync.read(fs.readFileSync(file)); // checks every chunk's CRC and inflates the pixels
    assert.equal(png.width, width);
    assert.equal(png.height, height);
    const colours = new Set<number>();
    for (let i = 0; i < png.data.length && colours.size < 3; i += 4) colours.add(png.data.readUInt32BE(i));
    assert.ok(colours.size >= 3, 'the image is not blank');
  });

  it('refuses to train into an output_dir that holds a run, unless told to overwrite', async () => {
    await assert.rejects(runQuiet({ ...settings(), max_steps: 1 }), (e: Error) => e.name === 'UserError' && /overwrite_output_dir/.test(e.message));
    const again = await runQuiet({ ...settings(), max_steps: 1, overwrite_output_dir: true });
    assert.equal(again.result.globalStep, 1);
    assert.equal(readTrainerLog(out).length, 1, 'the old log is replaced');
  });
});

describe('full fine-tuning', () => {
  it('lowers the loss and saves the whole model, loadable', async () => {
    const out = path.join(root, 'full');
    const { result } = await runQuiet({ ...shortRunSettings(model, out), finetuning_type: 'full', learning_rate: 3e-3, num_train_epochs: 4 });
    const l = losses(result);
    assert.equal(l.length, 16);
    const { first, last } = ends(l);
    assert.ok(last < first - 0.5, `loss went from ${first} to ${last}`);
    assert.ok(!fs.existsSync(path.join(out, 'adapter_config.json')));
    const trained = loadModel(out);
    const base = loadModel(model);
    const before = new Map(base.namedParameters());
    let moved = 0;
    for (const [name, t] of trained.namedParameters()) {
      const b = before.get(name);
      assert.ok(b, name);
      if (maxAbsDiff(new Map([[name, t.data]]), new Map([[name, b.data]])) > 1e-4) moved++;
    }
    assert.equal(moved, [...trained.namedParameters()].length, 'every parameter was trained');
    assert.ok(fs.existsSync(path.join(out, 'tokenizer.json')));
  });
});

describe('continued pre-training (stage pt)', () => {
  it('lowers the loss on examples/data/restaurant_corpus.txt', async () => {
    const out = path.join(root, 'pt');
    const { result, lines } = await runQuiet({
      ...shortRunSettings(model, out),
      stage: 'pt',
      dataset: 'restaurant_corpus',
      max_samples: null,
      finetuning_type: 'full',
      per_device_train_batch_size: 4,
      learning_rate: 3e-3,
      num_train_epochs: 3,
    });
    const data = lines.find((l) => l.startsWith('data:'));
    assert.match(data ?? '', /data: \d+ training example/);
    const l = losses(result);
    assert.ok(l.length >= 9, `${l.length} steps`);
    const { first, last } = ends(l);
    assert.ok(last < first - 0.5, `loss went from ${first} to ${last}`);
    assert.ok(fs.readFileSync(path.join(EXAMPLES_DATA, 'restaurant_corpus.txt'), 'utf8').length > 0);
  });
});

describe('gradient accumulation', () => {
  // lr 1 with adam_epsilon 1 and no clipping makes the first AdamW step lr·g/(|g| + 1): it
  // depends on the gradient's size, not only its sign (with the usual eps the first step is
  // ±lr whatever the gradient's scale, and a wrongly scaled loss would go unseen).
  const firstStep = async (name: string, extra: Record<string, unknown>) => {
    const out = path.join(root, name);
    const { result } = await runQuiet({
      ...shortRunSettings(model, out),
      max_steps: 1,
      learning_rate: 1,
      adam_epsilon: 1,
      max_grad_norm: 0,
      lora_dropout: 0,
      ...extra,
    });
    return { entry: result.history[0], weights: readTensors(path.join(out, 'adapter_model.safetensors')) };
  };

  it('batch 4 × accumulation 1 gives the same first update as batch 2 × accumulation 2', async () => {
    const whole = await firstStep('accum-4x1', { per_device_train_batch_size: 4, gradient_accumulation_steps: 1 });
    const split = await firstStep('accum-2x2', { per_device_train_batch_size: 2, gradient_accumulation_steps: 2 });
    const half = await firstStep('accum-2x1', { per_device_train_batch_size: 2, gradient_accumulation_steps: 1 });
    // B starts at zero, so the trained B matrices are the update itself.
    const scale = Math.max(...[...whole.weights].filter(([n]) => n.endsWith('lora_B.weight')).flatMap(([, x]) => [...x].map(Math.abs)));
    assert.ok(scale > 0.01, `the update is visible (${scale})`);
    const d = maxAbsDiff(whole.weights, split.weights);
    assert.ok(d <= 1e-5 * scale, `accumulated update differs by ${d} (scale ${scale})`);
    assert.equal(split.entry.loss, whole.entry.loss, 'the logged loss is the mean over the whole group');
    assert.ok(Math.abs(split.entry.grad_norm - whole.entry.grad_norm) <= 1e-4, `grad_norm ${split.entry.grad_norm} vs ${whole.entry.grad_norm}`);
    assert.equal(split.entry.epoch, whole.entry.epoch);
    // The comparison can fail: half the data gives a clearly different update.
    assert.ok(maxAbsDiff(whole.weights, half.weights) > 100 * 1e-5 * scale, 'a different batch gives a different update');
  });
});
