/**
 * Stage rm and `tunekit reward`: a value head on the last real token, trained with
 * −log σ(r_chosen − r_rejected) (LoRA on the body, the head fully trained), saved beside the
 * adapter as value_head.safetensors with TRL's names; the CLI scores held-out pairs (the same
 * numbers as the library) and prints the pairwise accuracy.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import { padIdOf } from '../src/data/index.js';
import { loadRewardModel, scoreConversations } from '../src/infer/reward.js';
import { initModel } from '../src/io/init-model.js';
import { loadModel } from '../src/io/model-folder.js';
import { loadAdapter } from '../src/io/peft-adapter.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { Rng, noGrad } from '../src/tensor/index.js';
import { resolveTemplate } from '../src/text/chat-template.js';
import { Tokenizer } from '../src/text/tokenizer.js';
import { loadTrainConfig } from '../src/train/config.js';
import { encodePair, makePairBatches } from '../src/train/preference-data.js';
import { runTraining } from '../src/train/run.js';
import { rewardModelLoss } from '../src/train/stages/rm.js';
import { ValueHead } from '../src/train/stages/value-head.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tunekit-rm-'));
const modelDir = path.join(scratch, 'tiny');
const dataDir = path.join(scratch, 'data');
const out = path.join(scratch, 'rm');

const POLITE = ['Hello! Thank you for asking, we are glad to help.', 'Hello! Thank you, it is a pleasure to help you.', 'Hello! Thank you so much for your question.'];
const CURT = ['No.', 'Yes.', 'Closed.', 'Maybe.'];
const pairsFor = (qs: string[], k: number) => qs.map((q, i) => ({ instruction: q, input: '', chosen: POLITE[(i + k) % 3], rejected: CURT[(i + k) % 4] }));
const TRAIN = pairsFor(['Open now?', 'Soup dumplings?', 'Crab price?', 'Where?', 'Book a table?', 'Parking?', 'Delivery?', 'Monday?', 'Best dish?', 'Cards?'], 0);
const HELD = pairsFor(['Vegetarian food?', 'Any wait tonight?', 'Order ahead?', 'Basket size?', 'Kids menu?'], 1);

/** The CLI in a child process (`reward` registered here too, until main.ts lists it). */
const CLI = [
  "import { COMMANDS, main } from './src/cli/main.ts';",
  "import { rewardCommand } from './src/cli/commands/reward.ts';",
  'COMMANDS.reward ??= rewardCommand;',
  'process.exitCode = await main(process.argv.slice(1));',
].join(' ');

function tunekit(args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', CLI, ...args], { cwd: ROOT, encoding: 'utf8' });
}

before(async () => {
  initModel({ preset: 'tiny', out: modelDir, seed: 4 });
  fs.mkdirSync(dataDir);
  fs.writeFileSync(path.join(dataDir, 'train.json'), JSON.stringify(TRAIN));
  fs.writeFileSync(path.join(dataDir, 'held.json'), JSON.stringify(HELD));
  await runTraining(
    loadTrainConfig(null, {
      model_name_or_path: modelDir, stage: 'rm', dataset: path.join(dataDir, 'train.json'), eval_dataset: path.join(dataDir, 'held.json'),
      output_dir: out, per_device_train_batch_size: 5, learning_rate: 5e-3, num_train_epochs: 4, logging_steps: 2, eval_steps: 4,
      lora_target: 'all', seed: 3,
    }).config,
    { log: () => {} },
  );
});

after(() => fs.rmSync(scratch, { recursive: true, force: true }));

describe('stage rm', () => {
  it('saves the adapter and value_head.safetensors with TRL names and shapes', () => {
    for (const f of ['adapter_model.safetensors', 'adapter_config.json', 'value_head.safetensors', 'tokenizer.json']) assert.ok(fs.existsSync(path.join(out, f)), f);
    const head = readSafetensors(path.join(out, 'value_head.safetensors'));
    assert.deepEqual(head.names().sort(), ['v_head.summary.bias', 'v_head.summary.weight']);
    assert.deepEqual(head.info('v_head.summary.weight').shape, [1, 64]);
    assert.deepEqual(head.info('v_head.summary.bias').shape, [1]);
    head.close();
  });

  it('logs loss and reward metrics; the held-out accuracy ends above 0.5', () => {
    const log = fs.readFileSync(path.join(out, 'trainer_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
    const train = log.filter((e) => e.loss !== undefined);
    const evals = log.filter((e) => e.eval_loss !== undefined);
    assert.ok(train.every((e) => Number.isFinite(e['rewards/accuracies']) && Number.isFinite(e['rewards/margins'])));
    assert.ok(train[train.length - 1].loss < train[0].loss, 'the loss falls');
    assert.ok(evals[evals.length - 1]['eval_rewards/accuracies'] > 0.5, JSON.stringify(evals[evals.length - 1]));
  });

  it('tunekit reward prints each pair\'s scores, as the library computes them, and the pairwise accuracy', () => {
    const run = tunekit(['reward', '--model', modelDir, '--adapter', out, '--data', path.join(dataDir, 'held.json')]);
    assert.equal(run.status, 0, run.stderr);
    const lines = run.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, number | string>);
    assert.equal(lines.length, HELD.length + 1);
    const summary = lines[lines.length - 1];
    assert.equal(summary.pairs, HELD.length);
    assert.ok((summary.accuracy as number) > 0.5, `pairwise accuracy ${summary.accuracy}`);
    assert.match(run.stderr, new RegExp(`pairwise accuracy: ${summary.correct}/${HELD.length}`));

    const rm = loadRewardModel(out, { baseModel: modelDir });
    const scores = scoreConversations(rm, HELD.map((r) => ({ messages: [{ role: 'user', content: r.instruction }, { role: 'assistant', content: r.chosen }] })));
    HELD.forEach((_, i) => {
      assert.match(String(lines[i].source), new RegExp(`held\\.json: row ${i + 1}$`));
      assert.ok(Math.abs((lines[i].chosen as number) - scores[i]) < 1e-4, `row ${i}: CLI ${lines[i].chosen} vs library ${scores[i]}`);
    });
  });

  it('tunekit reward scores conversations too, and a bad call is a one-line error', () => {
    const convs = path.join(scratch, 'convs.json');
    fs.writeFileSync(convs, JSON.stringify([{ instruction: 'Open?', input: '', output: 'Hello! Yes, come in.' }]));
    const run = tunekit(['reward', '--model', modelDir, '--adapter', out, '--data', convs]);
    assert.equal(run.status, 0, run.stderr);
    const [row] = run.stdout.trim().split('\n').map((l) => JSON.parse(l) as { source: string; score: number });
    assert.ok(Number.isFinite(row.score));
    const bad = tunekit(['reward', '--model', modelDir, '--data', convs]);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /tunekit: error: .*has no value_head\.safetensors; train a reward model with stage: rm/);
  });

  it('the loss gradient, head included, agrees with a finite difference along a random direction', () => {
    const model = loadModel(modelDir);
    loadAdapter(model, out);
    model.eval();
    const head = ValueHead.load(out, 64);
    const tokenizer = Tokenizer.fromFolder(modelDir);
    const enc = { tokenizer, template: resolveTemplate(null, tokenizer), cutoffLen: 256 };
    const pairs = HELD.slice(0, 2).map((r, i) => encodePair({ messages: [{ role: 'user', content: r.instruction }], chosen: r.rejected, rejected: r.chosen, source: { file: 'h', row: i } }, enc).pair);
    const [batch] = makePairBatches(pairs, 2, padIdOf(tokenizer));
    const fn = rewardModelLoss(head);
    const params = [...model.trainableParameters(), ...head.parameters()].map(([, t]) => t);
    const rng = new Rng(5);
    const dirs = params.map((p) => rng.fillNormal(new Float32Array(p.size), 1));
    fn(model, batch, 2).loss.backward();
    let analytic = 0;
    params.forEach((p, k) => p.grad?.data.forEach((g, i) => (analytic += g * dirs[k][i])));
    const at = (eps: number) => {
      params.forEach((p, k) => p.data.forEach((_, i) => (p.data[i] += eps * dirs[k][i])));
      const v = noGrad(() => fn(model, batch, 2).loss.item());
      params.forEach((p, k) => p.data.forEach((_, i) => (p.data[i] -= eps * dirs[k][i])));
      return v;
    };
    const numeric = (at(1e-3) - at(-1e-3)) / 2e-3;
    assert.ok(head.weight.grad && head.bias.grad, 'the head is trained');
    assert.ok(Math.abs(numeric) > 1e-4, `directional derivative ${numeric}`);
    assert.ok(Math.abs(analytic - numeric) < 2e-2 * Math.abs(numeric), `analytic ${analytic} vs numeric ${numeric}`);
  });
});

describe('stage rm resumed from a checkpoint', () => {
  it('ends with the same adapter and value head as an uninterrupted run', async () => {
    const settings = (dir: string, extra: Record<string, unknown>) =>
      loadTrainConfig(null, {
        model_name_or_path: modelDir, stage: 'rm', dataset: path.join(dataDir, 'train.json'), output_dir: dir, per_device_train_batch_size: 2,
        learning_rate: 5e-3, num_train_epochs: 1, logging_steps: 1, lora_target: 'all', seed: 3, ...extra,
      }).config;
    const whole = path.join(scratch, 'rm-whole');
    const parts = path.join(scratch, 'rm-parts');
    await runTraining(settings(whole, {}), { log: () => {} });
    await runTraining(settings(parts, { save_steps: 2 }), { log: () => {} });
    await runTraining(settings(parts, { resume_from_checkpoint: path.join(parts, 'checkpoint-2'), overwrite_output_dir: true }), { log: () => {} });
    for (const file of ['adapter_model.safetensors', 'value_head.safetensors']) {
      const a = readSafetensors(path.join(whole, file));
      const b = readSafetensors(path.join(parts, file));
      for (const name of a.names()) assert.deepEqual(b.get(name), a.get(name), `${file}: ${name}`);
      a.close();
      b.close();
    }
  });
});

describe('stage rm with full fine-tuning', () => {
  it('saves the whole model with the value head; tunekit reward --model alone reads it', async () => {
    const full = path.join(scratch, 'rm-full');
    await runTraining(
      loadTrainConfig(null, {
        model_name_or_path: modelDir, stage: 'rm', finetuning_type: 'full', dataset: path.join(dataDir, 'train.json'), output_dir: full,
        per_device_train_batch_size: 5, learning_rate: 1e-3, max_steps: 2, logging_steps: 1,
      }).config,
      { log: () => {} },
    );
    for (const f of ['config.json', 'model.safetensors', 'value_head.safetensors']) assert.ok(fs.existsSync(path.join(full, f)), f);
    const run = tunekit(['reward', '--model', full, '--data', path.join(dataDir, 'held.json')]);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /"pairs":5/);
  });
});
