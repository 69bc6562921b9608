/**
 * Stage dpo end to end on the tiny model: a clear preference (a polite full sentence over a
 * one-word answer) raises the chosen-over-rejected log-probability margin on held-out pairs
 * beyond where it started, the implicit-reward accuracy on them rises above 0.5, TRL's metric
 * names are logged, and an interrupted run resumed from its checkpoint ends where an
 * uninterrupted one does. Also: continuing from an SFT adapter keeps it as the reference.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { padIdOf } from '../src/data/index.js';
import { initModel } from '../src/io/init-model.js';
import { loadModel } from '../src/io/model-folder.js';
import { loadAdapter } from '../src/io/peft-adapter.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { setLoraEnabled } from '../src/nn/apply-lora.js';
import { noGrad } from '../src/tensor/index.js';
import { resolveTemplate } from '../src/text/chat-template.js';
import { Tokenizer } from '../src/text/tokenizer.js';
import { loadTrainConfig } from '../src/train/config.js';
import { encodePair, makePairBatches } from '../src/train/preference-data.js';
import type { EncodedPair } from '../src/train/preference-data.js';
import { runTraining } from '../src/train/run.js';
import { cachedReference, dpoLoss } from '../src/train/stages/dpo.js';
import { rowLogprobs } from '../src/train/stages/sequence.js';
import { stackFrozenAdapter } from '../src/train/stages/stacked-adapter.js';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tunekit-dpo-train-'));
const modelDir = path.join(scratch, 'tiny');
const dataDir = path.join(scratch, 'data');

const POLITE = [
  'Hello! Thank you for asking, we are glad to help you today.',
  'Hello! Thank you for your question, it is a pleasure to help.',
  'Hello! Thank you so much, we will gladly help you with that.',
  'Hello! Thank you for asking, we hope to see you soon.',
];
const CURT = ['No.', 'Yes.', 'Maybe.', 'Dunno.', 'Closed.', 'Ask later.'];
const TRAIN_Q = [
  'What time do you open?', 'Do you have soup dumplings?', 'How much is the crab dumpling?', 'Where are you?',
  'Can I book a table?', 'Is there parking?', 'Do you deliver?', 'Are you open on Monday?',
  'What is your best dish?', 'Do you take cards?', 'Is it spicy?', 'Can kids come?',
];
const HELD_Q = ['Do you have vegetarian food?', 'Is there a wait tonight?', 'Can I order ahead?', 'How big is a basket?'];

const rowsFor = (qs: string[], offset: number) =>
  qs.map((q, i) => ({ instruction: q, input: '', chosen: POLITE[(i + offset) % POLITE.length], rejected: CURT[(i + offset) % CURT.length] }));

function settings(out: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model_name_or_path: modelDir, stage: 'dpo', dataset: 'pref_train', eval_dataset: 'pref_held', dataset_dir: dataDir, output_dir: out,
    per_device_train_batch_size: 4, learning_rate: 5e-3, num_train_epochs: 6, logging_steps: 3, eval_steps: 6, lora_rank: 8,
    lora_target: 'all', save_steps: 1000, seed: 7, ...extra,
  };
}

function run(s: Record<string, unknown>, lines: string[] = []) {
  return runTraining(loadTrainConfig(null, s).config, { log: (l) => lines.push(l) });
}

function heldOutPairs(): EncodedPair[] {
  const tokenizer = Tokenizer.fromFolder(modelDir);
  const enc = { tokenizer, template: resolveTemplate(null, tokenizer), cutoffLen: 1024 };
  return rowsFor(HELD_Q, 1).map((r, i) =>
    encodePair({ messages: [{ role: 'user', content: r.instruction }], chosen: r.chosen, rejected: r.rejected, source: { file: 'held', row: i + 1 } }, enc).pair,
  );
}

before(() => {
  initModel({ preset: 'tiny', out: modelDir, seed: 2 });
  fs.mkdirSync(dataDir);
  fs.writeFileSync(path.join(dataDir, 'train.json'), JSON.stringify(rowsFor(TRAIN_Q, 0)));
  fs.writeFileSync(path.join(dataDir, 'held.json'), JSON.stringify(rowsFor(HELD_Q, 1)));
  fs.writeFileSync(
    path.join(dataDir, 'dataset_info.json'),
    JSON.stringify({ pref_train: { file_name: 'train.json', ranking: true }, pref_held: { file_name: 'held.json', ranking: true } }),
  );
});

after(() => fs.rmSync(scratch, { recursive: true, force: true }));

describe('stage dpo', () => {
  const out = path.join(scratch, 'dpo');
  const lines: string[] = [];

  before(async () => {
    await run(settings(out), lines);
  });

  it('raises the held-out chosen-over-rejected margin and the implicit-reward accuracy above 0.5', () => {
    const pairs = heldOutPairs();
    const [batch] = makePairBatches(pairs, pairs.length, padIdOf(Tokenizer.fromFolder(modelDir)));
    const model = loadModel(modelDir);
    loadAdapter(model, out);
    model.eval();
    const n = pairs.length;
    const margin = (lp: Float32Array) => Array.from({ length: n }, (_, i) => lp[i] - lp[n + i]).reduce((a, b) => a + b, 0) / n;
    const after = noGrad(() => margin(rowLogprobs(model, batch).sums.data));
    setLoraEnabled(model, false);
    const before = noGrad(() => margin(rowLogprobs(model, batch).sums.data));
    setLoraEnabled(model, true);
    assert.ok(after > before + 1, `held-out margin log π(chosen) − log π(rejected): before ${before.toFixed(3)}, after ${after.toFixed(3)}`);

    const fn = dpoLoss({ beta: 0.1, loss: 'sigmoid', ftx: 0, simpoGamma: 0.5 }, cachedReference(model, true));
    const metrics = noGrad(() => fn(model, batch, n)).metrics as Record<string, number>;
    assert.ok(metrics['rewards/accuracies'] > 0.5, `held-out rewards/accuracies ${metrics['rewards/accuracies']}`);
    assert.ok(metrics['rewards/margins'] > 0, `held-out rewards/margins ${metrics['rewards/margins']}`);
  });

  it("logs loss and TRL's reward metrics for training and evaluation", () => {
    const log = fs.readFileSync(path.join(out, 'trainer_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
    const trainEntries = log.filter((e) => e.loss !== undefined);
    const evalEntries = log.filter((e) => e.eval_loss !== undefined);
    assert.ok(trainEntries.length >= 2 && evalEntries.length >= 2);
    for (const key of ['rewards/chosen', 'rewards/rejected', 'rewards/accuracies', 'rewards/margins', 'logps/chosen', 'logps/rejected']) {
      assert.ok(trainEntries.every((e) => Number.isFinite(e[key])), `training entries lack ${key}`);
      assert.ok(evalEntries.every((e) => Number.isFinite(e[`eval_${key}`])), `eval entries lack eval_${key}`);
    }
    const lastEval = evalEntries[evalEntries.length - 1];
    assert.ok(lastEval['eval_rewards/accuracies'] > 0.5, `eval_rewards/accuracies ${lastEval['eval_rewards/accuracies']}`);
    assert.ok(trainEntries[trainEntries.length - 1].loss < trainEntries[0].loss, 'the DPO loss falls');
    assert.ok(lines.some((l) => l.includes('reference: the same model with the new adapter off')));
    for (const f of ['adapter_model.safetensors', 'adapter_config.json', 'training_loss.png', 'train_results.json']) assert.ok(fs.existsSync(path.join(out, f)), f);
  });

  it('resumed from a checkpoint, ends where an uninterrupted run ends', async () => {
    const whole = path.join(scratch, 'whole');
    const parts = path.join(scratch, 'parts');
    const short = { num_train_epochs: 2, logging_steps: 1, eval_dataset: null };
    await run(settings(whole, short));
    await run(settings(parts, { ...short, save_steps: 3 }));
    fs.rmSync(path.join(parts, 'adapter_model.safetensors'));
    const lines: string[] = [];
    await run(settings(parts, { ...short, resume_from_checkpoint: path.join(parts, 'checkpoint-3') }), lines);
    assert.ok(lines.some((l) => l.startsWith('resuming from') && l.endsWith('at step 3')), lines.join('\n'));
    const a = readSafetensors(path.join(whole, 'adapter_model.safetensors'));
    const b = readSafetensors(path.join(parts, 'adapter_model.safetensors'));
    for (const name of a.names()) assert.deepEqual(b.get(name), a.get(name), name);
    a.close();
    b.close();
  });
});

describe('stage dpo over an SFT adapter', () => {
  it('keeps the SFT adapter frozen as the reference and records it beside the new adapter', async () => {
    const sft = path.join(scratch, 'sft');
    fs.writeFileSync(path.join(dataDir, 'sft.json'), JSON.stringify(TRAIN_Q.map((q, i) => ({ instruction: q, input: '', output: POLITE[i % 4] }))));
    await run({ ...settings(sft), stage: 'sft', dataset: 'sft.json', eval_dataset: null, num_train_epochs: 2 });
    const out = path.join(scratch, 'dpo-over-sft');
    const lines: string[] = [];
    await run(settings(out, { adapter_name_or_path: sft, num_train_epochs: 1, eval_dataset: null }), lines);
    assert.ok(lines.some((l) => l.includes(`continuing from the adapter ${sft}: kept frozen`)), lines.join('\n'));
    const note = JSON.parse(fs.readFileSync(path.join(out, 'base_adapter.json'), 'utf8')) as { base_adapter: string };
    assert.equal(note.base_adapter, path.resolve(sft));

    // With the new adapter off, the model is exactly base + SFT adapter.
    const pairs = heldOutPairs();
    const [batch] = makePairBatches(pairs, pairs.length, padIdOf(Tokenizer.fromFolder(modelDir)));
    const stacked = loadModel(modelDir);
    stackFrozenAdapter(stacked, sft);
    loadAdapter(stacked, out);
    setLoraEnabled(stacked, false);
    const sftModel = loadModel(modelDir);
    loadAdapter(sftModel, sft);
    const bare = loadModel(modelDir);
    const lp = (m: typeof bare) => noGrad(() => Array.from(rowLogprobs(m.eval(), batch).sums.data));
    const ref = lp(stacked);
    const expected = lp(sftModel);
    ref.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-3, `row ${i}: ${v} vs SFT model ${expected[i]}`));
    assert.ok(Math.abs(lp(bare)[0] - expected[0]) > 1e-2, 'the SFT adapter changes the model (else this check proves nothing)');
  });
});
