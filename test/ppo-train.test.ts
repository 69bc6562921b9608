/**
 * Stage ppo end to end on the tiny model. A short SFT warm-up teaches it to answer either
 * "Hello! Welcome." or "No." (about half each); PPO, continuing from that adapter with a
 * rule-based reward for answers containing "Hello", must make such answers clearly more frequent
 * than under the reference (the SFT model, the new adapter off) — measured by sampling after
 * training, and in the logged mean reward. Also: the logged metrics and saved files, and a
 * reward model sharing the policy's base weights scores as one loaded on its own.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { generate } from '../src/infer/generate.js';
import { loadRewardModel, scoreConversations } from '../src/infer/reward.js';
import { initModel } from '../src/io/init-model.js';
import { loadModel, saveModel } from '../src/io/model-folder.js';
import { loadAdapter } from '../src/io/peft-adapter.js';
import type { CausalLM } from '../src/models/decoder.js';
import { initializeWeights } from '../src/models/init.js';
import { setLoraEnabled } from '../src/nn/apply-lora.js';
import { resolveTemplate } from '../src/text/chat-template.js';
import { readStopTokenIds } from '../src/text/stop-tokens.js';
import { Tokenizer } from '../src/text/tokenizer.js';
import { loadTrainConfig } from '../src/train/config.js';
import { encodePrompt } from '../src/train/preference-data.js';
import { runTraining } from '../src/train/run.js';
import { stackFrozenAdapter } from '../src/train/stages/stacked-adapter.js';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tunekit-ppo-'));
const modelDir = path.join(scratch, 'tiny');
const dataDir = path.join(scratch, 'data');
const sftDir = path.join(scratch, 'sft');
const ppoDir = path.join(scratch, 'ppo');
const QUESTIONS = ['What time do you open?', 'Do you have soup dumplings?', 'How much is the crab dumpling?', 'Where are you?', 'Can I book a table?', 'Is there parking?', 'Do you deliver?', 'Are you open on Monday?'];
const ppoLines: string[] = [];

function train(settings: Record<string, unknown>, lines: string[] = []) {
  return runTraining(loadTrainConfig(null, { model_name_or_path: modelDir, dataset_dir: dataDir, lora_target: 'all', seed: 11, ...settings }).config, {
    log: (l) => lines.push(l),
  });
}

/** Fraction of sampled answers (temperature 1) that contain "Hello", over every prompt. */
function helloRate(model: CausalLM, samples: number): number {
  const tokenizer = Tokenizer.fromFolder(modelDir);
  const template = resolveTemplate(null, tokenizer);
  const stop = readStopTokenIds(modelDir, tokenizer);
  let hits = 0;
  for (let k = 0; k < samples; k++) {
    const prompt = encodePrompt({ messages: [{ role: 'user', content: QUESTIONS[k % QUESTIONS.length] }] }, tokenizer, template);
    const { text } = generate(model, tokenizer, prompt, {
      temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1, maxNewTokens: 8, seed: 1000 + k, stopTokenIds: stop, stopStrings: [],
    });
    if (text.includes('Hello')) hits++;
  }
  return hits / samples;
}

before(async () => {
  // Weights ~N(0, 0.2²) rather than 0.02: with tied embeddings that small, a LoRA-only model
  // cannot become confident enough for the answers to differ visibly in a few steps.
  const model = initModel({ preset: 'tiny', out: modelDir, seed: 1 });
  initializeWeights(model, 1, 0.2);
  saveModel(model, modelDir, {});
  fs.mkdirSync(dataDir);
  const sft = QUESTIONS.flatMap((q) => [{ instruction: q, input: '', output: 'Hello! Welcome.' }, { instruction: q, input: '', output: 'No.' }]);
  fs.writeFileSync(path.join(dataDir, 'sft.json'), JSON.stringify(sft));
  fs.writeFileSync(path.join(dataDir, 'prompts.json'), JSON.stringify(QUESTIONS.map((q) => ({ instruction: q, input: '' }))));
  await train({ stage: 'sft', dataset: 'sft.json', output_dir: sftDir, per_device_train_batch_size: 8, learning_rate: 1e-2, num_train_epochs: 30, logging_steps: 10 });
  await train(
    {
      stage: 'ppo', adapter_name_or_path: sftDir, dataset: 'prompts.json', output_dir: ppoDir, per_device_train_batch_size: 8,
      learning_rate: 2e-3, lr_scheduler_type: 'constant', max_steps: 60, logging_steps: 4, save_steps: 40, max_new_tokens: 8, ppo_epochs: 4,
      reward_function: { contains: 'Hello', weight: 1 },
    },
    ppoLines,
  );
});

after(() => fs.rmSync(scratch, { recursive: true, force: true }));

describe('stage ppo with a rule-based reward', () => {
  it('makes rewarded answers more frequent than under the reference', () => {
    const policy = loadModel(modelDir);
    stackFrozenAdapter(policy, sftDir);
    loadAdapter(policy, ppoDir);
    policy.eval();
    const trained = helloRate(policy, 48);
    setLoraEnabled(policy, false);
    const reference = helloRate(policy, 48);
    assert.ok(reference > 0.1 && reference < 0.9, `the SFT warm-up should answer both ways (Hello rate ${reference})`);
    assert.ok(trained > reference + 0.2, `Hello rate: reference ${reference.toFixed(3)}, after PPO ${trained.toFixed(3)}`);
  });

  it('raises the logged mean reward over training', () => {
    const log = fs.readFileSync(path.join(ppoDir, 'trainer_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
    const scores = log.map((e) => e['ppo/mean_scores']);
    assert.equal(scores.length, 15, 'one log line per round (4 optimizer steps)');
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const first = mean(scores.slice(0, 4));
    const last = mean(scores.slice(-4));
    assert.ok(last > first + 0.15, `mean reward: first rounds ${first.toFixed(3)}, last rounds ${last.toFixed(3)} (${scores.join(', ')})`);
  });

  it('logs reward, KL, policy and value losses, entropy and clip fraction; saves adapter, value head and state', () => {
    const log = fs.readFileSync(path.join(ppoDir, 'trainer_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
    for (const key of ['loss', 'ppo/mean_scores', 'objective/kl', 'objective/kl_coef', 'ppo/loss/policy', 'ppo/loss/value', 'ppo/policy/entropy', 'ppo/policy/clipfrac', 'ppo/policy/approxkl']) {
      assert.ok(log.every((e) => Number.isFinite(e[key])), `missing ${key}`);
    }
    for (const f of ['adapter_model.safetensors', 'value_head.safetensors', 'ppo_state.json', 'base_adapter.json', 'training_loss.png', 'training_reward.png', 'checkpoint-40/value_head.safetensors']) {
      assert.ok(fs.existsSync(path.join(ppoDir, f)), f);
    }
    assert.ok(ppoLines.some((l) => /^round 1: 8 rollouts/.test(l)), ppoLines.join('\n'));
    assert.ok(ppoLines.some((l) => l.includes('reference: the policy with its adapter off')));
  });
});

describe('stage ppo with a reward model', () => {
  it('shares the base weights with the policy and scores as a separately loaded reward model', async () => {
    const rmDir = path.join(scratch, 'rm');
    fs.writeFileSync(
      path.join(dataDir, 'pairs.json'),
      JSON.stringify(QUESTIONS.map((q) => ({ instruction: q, input: '', chosen: 'Hello! Welcome.', rejected: 'No.' }))),
    );
    await train({ stage: 'rm', dataset: 'pairs.json', output_dir: rmDir, per_device_train_batch_size: 8, learning_rate: 5e-3, max_steps: 4, logging_steps: 2 });
    const lines: string[] = [];
    await train(
      {
        stage: 'ppo', adapter_name_or_path: sftDir, dataset: 'prompts.json', output_dir: path.join(scratch, 'ppo-rm'), per_device_train_batch_size: 4,
        max_steps: 2, ppo_epochs: 2, logging_steps: 1, max_new_tokens: 6, reward_model: rmDir, ppo_score_norm: true, ppo_whiten_rewards: true,
      },
      lines,
    );
    assert.ok(lines.some((l) => l.includes(`reward: the reward model ${rmDir} (sharing the base weights)`)), lines.join('\n'));
    const log = JSON.parse(fs.readFileSync(path.join(scratch, 'ppo-rm', 'trainer_log.jsonl'), 'utf8').split('\n')[0]) as Record<string, number>;
    assert.ok(Number.isFinite(log['ppo/mean_scores']));

    const policy = loadModel(modelDir);
    stackFrozenAdapter(policy, sftDir);
    loadAdapter(policy, ppoDir);
    const shared = loadRewardModel(rmDir, { baseModel: modelDir, shareWith: policy });
    const alone = loadRewardModel(rmDir, { baseModel: modelDir });
    assert.equal(shared.model.model.embed_tokens.weight, policy.model.embed_tokens.weight, 'the same tensor, not a copy');
    const convs = QUESTIONS.slice(0, 3).map((q) => ({ messages: [{ role: 'user' as const, content: q }, { role: 'assistant' as const, content: 'Hello! Welcome.' }] }));
    const a = scoreConversations(shared, convs);
    const b = scoreConversations(alone, convs);
    a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) < 1e-5, `${v} vs ${b[i]}`));
  });
});

describe('stage ppo interrupted', () => {
  it('Ctrl-C while a round is being sampled saves a checkpoint without finishing the round; resuming completes the run', async () => {
    const out = path.join(scratch, 'ppo-sigint');
    const settings = {
      stage: 'ppo', adapter_name_or_path: sftDir, dataset: 'prompts.json', output_dir: out, per_device_train_batch_size: 4, ppo_epochs: 1,
      max_steps: 4, logging_steps: 1, save_steps: 1000, max_new_tokens: 4, reward_function: { contains: 'Hello', weight: 1 },
    };
    const listeners = () => [process.listenerCount('SIGINT'), process.listenerCount('SIGTERM')];
    const installed = listeners();
    const lines: string[] = [];
    // One optimizer step per round (4 rollouts, one pass). The signal comes two turns of the event
    // loop after step 1 is logged: while round 2's rollouts are being sampled.
    const stopped = await runTraining(loadTrainConfig(null, { model_name_or_path: modelDir, dataset_dir: dataDir, lora_target: 'all', seed: 11, ...settings }).config, {
      log: (l) => {
        lines.push(l);
        if (l.startsWith('step 1/')) setImmediate(() => setImmediate(() => process.emit('SIGINT')));
      },
    });
    assert.equal(stopped.stoppedEarly, true);
    assert.equal(stopped.globalStep, 1);
    assert.deepEqual(listeners(), installed, 'the trainer removes its SIGINT and SIGTERM handlers');
    assert.ok(lines.some((l) => l.startsWith('interrupted: saved') && l.includes('checkpoint-1')), lines.join('\n'));
    assert.ok(!lines.some((l) => l.startsWith('round 2:')), `round 2 was not finished:\n${lines.join('\n')}`);
    for (const f of ['adapter_model.safetensors', 'value_head.safetensors', 'ppo_state.json']) assert.ok(fs.existsSync(path.join(out, 'checkpoint-1', f)), f);
    assert.ok(!fs.existsSync(path.join(out, 'adapter_model.safetensors')), 'no final adapter for an interrupted run');

    const resumed = await train({ ...settings, resume_from_checkpoint: true });
    assert.equal(resumed.stoppedEarly, false);
    assert.equal(resumed.globalStep, 4);
    assert.ok(fs.existsSync(path.join(out, 'adapter_model.safetensors')));
  });
});
