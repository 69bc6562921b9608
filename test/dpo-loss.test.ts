/**
 * The DPO loss (and IPO, ORPO, SimPO) on fixed inputs against a hand computation from what
 * `tunekit logprobs` prints for the same token ids: the policy is the base model plus an adapter
 * whose B matrices are non-zero (so policy and reference differ), the reference the base alone.
 * Two pairs of different lengths go through one padded batch, so padding is exercised too. Also
 * checks the loss's gradient along a random direction of the adapter against finite differences.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import { padIdOf } from '../src/data/index.js';
import { initModel } from '../src/io/init-model.js';
import { loadModel } from '../src/io/model-folder.js';
import { loadAdapter, saveAdapter } from '../src/io/peft-adapter.js';
import type { CausalLM } from '../src/models/decoder.js';
import { applyLora, loraLayers } from '../src/nn/apply-lora.js';
import { Rng, noGrad } from '../src/tensor/index.js';
import { resolveTemplate } from '../src/text/chat-template.js';
import { Tokenizer } from '../src/text/tokenizer.js';
import type { PrefLoss } from '../src/train/config.js';
import { encodePair, makePairBatches } from '../src/train/preference-data.js';
import type { EncodedPair } from '../src/train/preference-data.js';
import { cachedReference, dpoLoss } from '../src/train/stages/dpo.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tunekit-dpo-loss-'));
const modelDir = path.join(scratch, 'tiny');
const adapterDir = path.join(scratch, 'adapter');
const BETA = 0.3;

let pairs: EncodedPair[];

/** `tunekit logprobs` run as a child process: one {logprob, tokens} per line of the data file. */
function cliLogprobs(args: string[]): Array<{ logprob: number; tokens: number }> {
  const run = spawnSync(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', "import { main } from './src/cli/main.ts'; process.exitCode = await main(process.argv.slice(1));", 'logprobs', ...args],
    { cwd: ROOT, encoding: 'utf8' },
  );
  assert.equal(run.status, 0, run.stderr);
  return run.stdout.trim().split('\n').map((l) => JSON.parse(l) as { logprob: number; tokens: number });
}

/** The policy: base + the saved adapter. */
function policy(): CausalLM {
  const model = loadModel(modelDir);
  loadAdapter(model, adapterDir);
  model.eval();
  return model;
}

const logSigmoid = (x: number) => Math.min(x, 0) - Math.log1p(Math.exp(-Math.abs(x)));

before(() => {
  initModel({ preset: 'tiny', out: modelDir, seed: 5 });
  const model = loadModel(modelDir);
  const applied = applyLora(model, { r: 4, targets: 'all', seed: 3 });
  const rng = new Rng(9);
  for (const [, l] of loraLayers(model)) rng.fillNormal(l.lora_B.weight.data, 0.05);
  saveAdapter(model, applied, adapterDir);

  const tokenizer = Tokenizer.fromFolder(modelDir);
  const settings = { tokenizer, template: resolveTemplate(null, tokenizer), cutoffLen: 512 };
  const source = { file: 'inline', row: 1 };
  pairs = [
    encodePair({ messages: [{ role: 'user', content: 'When do you open?' }], chosen: 'Hello! We open at ten every morning.', rejected: 'Ten.', source }, settings).pair,
    encodePair({ system: 'Be kind.', messages: [{ role: 'user', content: 'Soup dumplings?' }], chosen: 'Yes, they are our best dish!', rejected: 'Yes.', source }, settings).pair,
  ];
  // Each side as {"ids", "start"}: start is the first answer token (labels are −100 before it).
  const lines = pairs.flatMap((p) => [p.chosen, p.rejected]).map((e) => {
    const start = e.labels.findIndex((l) => l >= 0);
    return JSON.stringify({ ids: Array.from(e.inputIds), start });
  });
  fs.writeFileSync(path.join(scratch, 'sides.jsonl'), `${lines.join('\n')}\n`);
});

after(() => fs.rmSync(scratch, { recursive: true, force: true }));

describe('DPO loss against tunekit logprobs', () => {
  let pol: Array<{ logprob: number; tokens: number }>;
  let ref: Array<{ logprob: number; tokens: number }>;

  before(() => {
    const data = path.join(scratch, 'sides.jsonl');
    pol = cliLogprobs(['--model', modelDir, '--adapter', adapterDir, '--data', data]);
    ref = cliLogprobs(['--model', modelDir, '--data', data]);
    assert.equal(pol.length, 4);
    // The adapter must move the numbers, or the reference would be indistinguishable from the policy.
    for (let i = 0; i < 4; i++) assert.ok(Math.abs(pol[i].logprob - ref[i].logprob) > 1e-3, `side ${i}: policy and reference agree`);
  });

  /** Per pair: [policy chosen, policy rejected, reference chosen, reference rejected], sums or means. */
  const sides = (i: number, mean: boolean) => {
    const v = (r: typeof pol, k: number) => (mean ? r[k].logprob / r[k].tokens : r[k].logprob);
    return [v(pol, 2 * i), v(pol, 2 * i + 1), v(ref, 2 * i), v(ref, 2 * i + 1)];
  };
  const byHand: Record<PrefLoss, (i: number) => number> = {
    sigmoid: (i) => {
      const [pc, pr, rc, rr] = sides(i, false);
      return -logSigmoid(BETA * (pc - rc - (pr - rr)));
    },
    ipo: (i) => {
      const [pc, pr, rc, rr] = sides(i, true);
      return (pc - rc - (pr - rr) - 1 / (2 * BETA)) ** 2;
    },
    orpo: (i) => {
      const [pc, pr] = sides(i, true);
      const logOdds = pc - pr - (Math.log(1 - Math.exp(pc)) - Math.log(1 - Math.exp(pr)));
      return -pc - BETA * logSigmoid(logOdds);
    },
    simpo: (i) => {
      const [pc, pr] = sides(i, true);
      return -logSigmoid(BETA * (pc - pr) - 0.5);
    },
  };

  for (const loss of ['sigmoid', 'ipo', 'orpo', 'simpo'] as const) {
    it(`${loss}: the batched loss is the mean of the hand-computed pair losses`, () => {
      const model = policy();
      const [batch] = makePairBatches(pairs, 2, padIdOf(Tokenizer.fromFolder(modelDir)));
      assert.equal(batch.batch, 4);
      const reference = loss === 'sigmoid' || loss === 'ipo' ? cachedReference(model, true) : null;
      const fn = dpoLoss({ beta: BETA, loss, ftx: 0, simpoGamma: 0.5 }, reference);
      const { loss: value, tokens, metrics } = noGrad(() => fn(model, batch, 2));
      assert.equal(tokens, 2);
      const expected = (byHand[loss](0) + byHand[loss](1)) / 2;
      assert.ok(Math.abs(value.item() - expected) < 1e-4 * Math.max(1, Math.abs(expected)), `${loss}: ${value.item()} vs hand ${expected}`);
      if (loss === 'sigmoid') {
        const [pc, pr, rc, rr] = sides(0, false);
        const [qc, qr, sc, sr] = sides(1, false);
        const chosen = (BETA * (pc - rc) + BETA * (qc - sc)) / 2;
        const rejected = (BETA * (pr - rr) + BETA * (qr - sr)) / 2;
        assert.ok(Math.abs((metrics as Record<string, number>)['rewards/chosen'] - chosen) < 1e-4);
        assert.ok(Math.abs((metrics as Record<string, number>)['rewards/margins'] - (chosen - rejected)) < 1e-4);
      }
    });
  }

  it('pref_ftx adds ftx × the mean NLL per token of the chosen answer', () => {
    const model = policy();
    const [batch] = makePairBatches(pairs, 2, padIdOf(Tokenizer.fromFolder(modelDir)));
    const fn = dpoLoss({ beta: BETA, loss: 'sigmoid', ftx: 0.7, simpoGamma: 0.5 }, cachedReference(model, true));
    const value = noGrad(() => fn(model, batch, 2)).loss.item();
    const sft = (i: number) => -sides(i, true)[0];
    const expected = (byHand.sigmoid(0) + 0.7 * sft(0) + byHand.sigmoid(1) + 0.7 * sft(1)) / 2;
    assert.ok(Math.abs(value - expected) < 1e-4 * Math.max(1, expected), `${value} vs ${expected}`);
  });
});

describe('DPO loss gradient', () => {
  for (const loss of ['sigmoid', 'orpo'] as const) {
    it(`${loss}: backward agrees with a finite difference along a random adapter direction`, () => {
      const model = policy();
      const [batch] = makePairBatches(pairs, 2, padIdOf(Tokenizer.fromFolder(modelDir)));
      const fn = dpoLoss({ beta: BETA, loss, ftx: 0.2, simpoGamma: 0.5 }, loss === 'sigmoid' ? cachedReference(model, true) : null);
      const params = model.trainableParameters().map(([, t]) => t);
      const rng = new Rng(21);
      const dirs = params.map((p) => {
        const d = new Float32Array(p.size);
        rng.fillNormal(d, 1);
        return d;
      });
      fn(model, batch, 2).loss.backward();
      let analytic = 0;
      params.forEach((p, k) => {
        const g = p.grad?.data;
        assert.ok(g, 'every adapter matrix gets a gradient');
        for (let i = 0; i < g.length; i++) analytic += g[i] * dirs[k][i];
      });
      const at = (eps: number) => {
        params.forEach((p, k) => {
          for (let i = 0; i < p.size; i++) p.data[i] += eps * dirs[k][i];
        });
        const v = noGrad(() => fn(model, batch, 2).loss.item());
        params.forEach((p, k) => {
          for (let i = 0; i < p.size; i++) p.data[i] -= eps * dirs[k][i];
        });
        return v;
      };
      const eps = 1e-3;
      const numeric = (at(eps) - at(-eps)) / (2 * eps);
      assert.ok(Math.abs(analytic) > 1e-4, `the directional derivative is ${analytic}; the check would prove nothing`);
      assert.ok(Math.abs(analytic - numeric) < 2e-2 * Math.abs(numeric), `analytic ${analytic} vs numeric ${numeric}`);
    });
  }
});
