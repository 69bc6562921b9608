/**
 * The parts of PPO that are plain arithmetic or plain rules: KL-shaped rewards, GAE against its
 * definition as a discounted sum, whitening, the adaptive KL controller, running score
 * statistics, the rule-based reward_function (parsing and scoring), and the clipped PPO loss on a
 * fixed batch against a hand computation from independently computed log-probabilities.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';

import { UserError } from '../src/errors.js';
import { initModel } from '../src/io/init-model.js';
import { Rng, noGrad } from '../src/tensor/index.js';
import { resolveDatasets } from '../src/data/index.js';
import { loadTrainConfig } from '../src/train/config.js';
import { loadPrompts } from '../src/train/preference-data.js';
import { KlController, RunningMoments, gae, shapedRewards, whiten } from '../src/train/stages/ppo-math.js';
import { makePpoBatch, ppoLoss } from '../src/train/stages/ppo.js';
import type { Rollout } from '../src/train/stages/ppo.js';
import { parseRewardFunction, scoreByRules } from '../src/train/stages/reward-function.js';
import { ValueHead } from '../src/train/stages/value-head.js';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tunekit-ppo-math-'));
after(() => fs.rmSync(scratch, { recursive: true, force: true }));

const close = (a: number, b: number, tol = 1e-9) => assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${a} vs ${b}`);

describe('rewards and advantages', () => {
  it('shapedRewards: −β·(log π − log π_ref) per token, the score added on the last', () => {
    const r = shapedRewards(2, [-1, -2, -0.5], [-1.5, -1, -0.5], 0.1);
    close(r[0], -0.05);
    close(r[1], 0.1);
    close(r[2], 2);
  });

  it('gae equals Σ_k (γλ)^k δ_{t+k}, returns = A + V', () => {
    const rng = new Rng(1);
    const rewards = Array.from({ length: 7 }, () => rng.normal());
    const values = Array.from({ length: 7 }, () => rng.normal());
    const [gamma, lambda] = [0.9, 0.8];
    const { advantages, returns } = gae(rewards, values, gamma, lambda);
    const delta = (t: number) => rewards[t] + gamma * (t + 1 < 7 ? values[t + 1] : 0) - values[t];
    for (let t = 0; t < 7; t++) {
      let a = 0;
      for (let k = t; k < 7; k++) a += (gamma * lambda) ** (k - t) * delta(k);
      close(advantages[t], a, 1e-12);
      close(returns[t], a + values[t], 1e-12);
    }
  });

  it('whiten: mean 0 and unbiased std 1 over all arrays together; shiftMean false keeps the mean', () => {
    const a = [Float64Array.from([1, 2, 3]), Float64Array.from([10])];
    whiten(a);
    const all = [...a[0], ...a[1]];
    close(all.reduce((s, v) => s + v, 0) / 4, 0, 1e-12);
    close(all.reduce((s, v) => s + v * v, 0) / 3, 1, 1e-6);
    const b = [Float64Array.from([1, 2, 3, 10])];
    whiten(b, false);
    close(b[0].reduce((s, v) => s + v, 0) / 4, 4, 1e-12);
  });

  it('the adaptive KL coefficient moves toward the target, at most 20 % × samples/horizon a round', () => {
    const k = new KlController(0.2, 6, 100);
    k.update(100, 10);
    close(k.value, 0.2 * (1 + 0.2 * 0.1));
    k.update(0, 10);
    close(k.value, 0.2 * 1.02 * 0.98);
    const fixed = new KlController(0.2, null, 100);
    fixed.update(100, 10);
    assert.equal(fixed.value, 0.2);
  });

  it('running moments match the statistics of everything seen', () => {
    const m = new RunningMoments();
    const xs = [1, 4, 2, 8, 5, 7, 3];
    m.update(xs.slice(0, 3));
    m.update(xs.slice(3));
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
    const std = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1));
    close(m.mean, mean, 1e-9);
    close(m.std, std, 1e-9);
  });
});

describe('reward_function rules', () => {
  it('sums the weights of the rules an answer passes', () => {
    const fn = parseRewardFunction(
      [
        { contains: ['您好', '欢迎'], weight: 1 },
        { contains_all: ['小笼包', '元'], weight: 0.5 },
        { not_contains: '不知道' },
        { regex: '\\d+元', weight: 2 },
        { length: { min: 5, max: 20 }, weight: 0.25 },
        { contains: '!', count: true, weight: 0.1 },
      ],
      'test',
    );
    close(scoreByRules(fn, '您好！小笼包28元!!'), 1 + 0.5 + 1 + 2 + 0.25 + 0.2);
    close(scoreByRules(fn, '不知道'), 0);
    close(scoreByRules(fn, 'hello'), 1 + 0.25);
    const ci = parseRewardFunction({ regex: 'hello', flags: 'i', count: true }, 'test');
    close(scoreByRules(ci, 'Hello hello HELLO'), 3);
  });

  it('refuses anything but a declared rule, naming the rule and the problem', () => {
    const bad: Array<[unknown, RegExp]> = [
      [[], /empty list/],
      [{ contains: 'a', regex: 'b' }, /exactly one of contains, contains_all, not_contains, regex, length; this one has contains and regex/],
      [{ weight: 1 }, /exactly one of/],
      [{ contains: 'a', eval: 'process.exit()' }, /unknown key "eval"/],
      [{ regex: '(' }, /is not a valid regular expression/],
      [{ regex: 'a', flags: 'g' }, /"flags" may hold i, m, s and u/],
      [{ length: { min: 5, max: 2 } }, /0 ≤ min ≤ max/],
      [{ not_contains: 'a', count: true }, /"count" goes with contains or regex only/],
      [{ contains: [] }, /non-empty string or a list/],
      [{ contains: 'a', weight: 'high' }, /"weight" must be a number/],
    ];
    for (const [value, pattern] of bad) assert.throws(() => parseRewardFunction(value, 'cfg: reward_function'), (e: Error) => e instanceof UserError && pattern.test(e.message), JSON.stringify(value));
    assert.throws(() => parseRewardFunction([{ contains: 'a' }, { regex: '(' }], 'cfg: reward_function'), /cfg: reward_function\[1\]: "regex"/);
  });

  it('is checked when the config is read', () => {
    assert.throws(
      () => loadTrainConfig(null, { model_name_or_path: 'm', dataset: 'd', output_dir: 'o', stage: 'ppo', reward_function: { contain: 'x' } }),
      /command line: reward_function: a rule has exactly one of/,
    );
  });
});

describe('the clipped PPO loss', () => {
  it('equals a hand computation from log-probabilities and values computed another way', async () => {
    const dir = path.join(scratch, 'tiny');
    const model = initModel({ preset: 'tiny', out: dir, seed: 3 });
    model.eval();
    const head = ValueHead.create(64, 1);
    const rng = new Rng(4);
    const rollout = (prompt: number[], answer: number[]): Rollout => ({
      prompt: 0, ids: [...prompt, ...answer], promptLength: prompt.length, answerLength: answer.length, text: '', score: 0,
      logprobs: Float32Array.from(answer, () => -7 + rng.normal()),
      refLogprobs: new Float32Array(answer.length),
      values: Float32Array.from(answer, () => rng.normal()),
      advantages: Float64Array.from(answer, () => rng.normal()),
      returns: Float64Array.from(answer, () => rng.normal()),
    });
    const rollouts = [rollout([5, 9, 11, 40], [70, 71, 72]), rollout([6, 7], [100, 3, 90, 91, 12])];
    const batch = makePpoBatch(rollouts, 0, {});
    const s = { cliprange: 0.2, cliprangeValue: 0.2, vfCoef: 0.1 };
    const { loss, tokens, metrics } = noGrad(() => ppoLoss(head, s)(model, batch, 8));
    assert.equal(tokens, 8);

    // Log-probabilities from the full logits, row by row, and values by a dot product.
    let pg = 0;
    let vf = 0;
    let clipped = 0;
    noGrad(() => {
      rollouts.forEach((r) => {
        const ids = Int32Array.from(r.ids);
        const logits = model.forward({ ids, batch: 1, length: ids.length });
        const hidden = model.hidden({ ids, batch: 1, length: ids.length });
        const V = model.config.vocabSize;
        for (let t = 0; t < r.answerLength; t++) {
          const pos = r.promptLength - 1 + t;
          const row = Array.from(logits.data.subarray(pos * V, (pos + 1) * V));
          const max = Math.max(...row);
          const lse = max + Math.log(row.reduce((a, v) => a + Math.exp(v - max), 0));
          const lp = row[r.ids[pos + 1]] - lse;
          let v = head.bias.data[0];
          for (let c = 0; c < 64; c++) v += head.weight.data[c] * hidden.data[pos * 64 + c];
          const ratio = Math.exp(lp - r.logprobs[t]);
          const a = r.advantages[t];
          const p1 = -a * ratio;
          const p2 = -a * Math.min(Math.max(ratio, 0.8), 1.2);
          pg += Math.max(p1, p2);
          if (p2 > p1) clipped++;
          const vc = r.values[t] + Math.min(Math.max(v - r.values[t], -0.2), 0.2);
          vf += 0.5 * Math.max((v - r.returns[t]) ** 2, (vc - r.returns[t]) ** 2);
        }
      });
    });
    close(loss.item(), (pg + 0.1 * vf) / 8, 1e-4);
    const m = metrics as Record<string, number>;
    close(m['ppo/loss/policy'], pg / 8, 1e-4);
    close(m['ppo/loss/value'], vf / 8, 1e-4);
    close(m['ppo/policy/clipfrac'], clipped / 8, 1e-9);
    assert.ok(clipped > 0 && clipped < 8, `the case should clip some tokens and not others (${clipped} of 8)`);
    assert.ok(m['ppo/policy/entropy'] > 6 && m['ppo/policy/entropy'] <= Math.log(model.config.vocabSize) + 1e-6, 'a near-uniform tiny model has entropy near log V');
  });
});

describe('PPO prompts', () => {
  it('come from alpaca rows (output ignored or absent), conversations (last answer dropped) and preference rows', () => {
    const dir = path.join(scratch, 'prompts');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'alpaca.json'), JSON.stringify([{ instruction: 'Open?', input: '', output: 'Yes!' }, { instruction: 'Price?', input: 'crab' }]));
    fs.writeFileSync(
      path.join(dir, 'chat.json'),
      JSON.stringify([
        { messages: [{ role: 'system', content: 'Be kind.' }, { role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }] },
        { messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }, { role: 'user', content: 'Menu?' }] },
      ]),
    );
    fs.writeFileSync(path.join(dir, 'pairs.json'), JSON.stringify([{ instruction: 'Spicy?', input: '', chosen: 'Not at all!', rejected: 'No.' }]));
    const { items } = loadPrompts(resolveDatasets(['alpaca.json', 'chat.json', 'pairs.json'], dir), false, 0);
    assert.deepEqual(
      items.map((p) => ({ system: p.system, messages: p.messages })),
      [
        { system: undefined, messages: [{ role: 'user', content: 'Open?' }] },
        { system: undefined, messages: [{ role: 'user', content: 'Price?\ncrab' }] },
        { system: 'Be kind.', messages: [{ role: 'user', content: 'Hi' }] },
        { system: undefined, messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }, { role: 'user', content: 'Menu?' }] },
        { system: undefined, messages: [{ role: 'user', content: 'Spicy?' }] },
      ],
    );
    fs.writeFileSync(path.join(dir, 'bad.json'), JSON.stringify([{ instruction: '', input: '' }]));
    assert.throws(() => loadPrompts(resolveDatasets(['bad.json'], dir), false, 0), /bad\.json: row 1: the user turn is empty/);
  });
});
