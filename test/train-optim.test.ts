/**
 * The trainer's arithmetic without a model: AdamW against a float64 update written out by hand
 * (PyTorch's algorithm: decoupled weight decay, bias-corrected moments, eps outside the root),
 * gradient-norm clipping as torch.nn.utils.clip_grad_norm_ does it, the learning-rate schedules
 * against transformers' lr_lambda formulas, and the label shift of the causal-LM loss.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Tensor } from '../src/tensor/index.js';
import { AdamW, clipGradNorm } from '../src/train/adamw.js';
import { shiftedTargets } from '../src/train/loss.js';
import { learningRateAt } from '../src/train/schedule.js';
import type { SchedulerType } from '../src/train/schedule.js';

function param(values: number[]): Tensor {
  return Tensor.from(values, [values.length], true);
}

function setGrad(p: Tensor, values: number[]): void {
  p.grad = Tensor.from(values, [values.length]);
}

describe('AdamW', () => {
  it('matches a hand-computed float64 AdamW update over 3 steps (weight decay, bias correction, eps)', () => {
    const settings = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 };
    const w0 = { a: [0.5, -1.25, 2, 0.75], b: [-0.3, 1.1, 0] };
    // Gradients of different sizes and signs; a zero (only decay moves it at step 1) and a
    // 1e-9 one, where eps decides the step (eps inside the root would give a different value).
    const grads = [
      { a: [0.2, -0.05, 1.5, 0], b: [1e-9, -3, 0.01] },
      { a: [-0.1, -0.07, 1.2, 0.3], b: [2e-9, 2.5, -0.02] },
      { a: [0.4, 0.01, -0.9, -0.2], b: [-1e-9, -1, 0.03] },
    ];
    const lrs = [0.1, 0.05, 0.02];

    const a = param(w0.a);
    const b = param(w0.b);
    const frozen = param([1, 2, 3]); // in the list but never given a gradient
    const opt = new AdamW([['a', a], ['b', b], ['frozen', frozen]], settings);

    // Reference: torch.optim.AdamW's single-tensor step, in float64.
    const ref = { a: [...w0.a], b: [...w0.b] };
    const m = { a: w0.a.map(() => 0), b: w0.b.map(() => 0) };
    const v = { a: w0.a.map(() => 0), b: w0.b.map(() => 0) };
    for (let t = 1; t <= 3; t++) {
      const lr = lrs[t - 1];
      for (const k of ['a', 'b'] as const) {
        for (let i = 0; i < ref[k].length; i++) {
          const g = grads[t - 1][k][i];
          ref[k][i] *= 1 - lr * settings.weightDecay;
          m[k][i] = settings.beta1 * m[k][i] + (1 - settings.beta1) * g;
          v[k][i] = settings.beta2 * v[k][i] + (1 - settings.beta2) * g * g;
          const mHat = m[k][i] / (1 - settings.beta1 ** t);
          const vHat = v[k][i] / (1 - settings.beta2 ** t);
          ref[k][i] -= (lr * mHat) / (Math.sqrt(vHat) + settings.eps);
        }
      }
      setGrad(a, grads[t - 1].a);
      setGrad(b, grads[t - 1].b);
      opt.step(lr);
      opt.zeroGrad();
      assert.equal(a.grad, null, 'zeroGrad clears gradients');

      for (const [k, p] of [['a', a], ['b', b]] as const) {
        for (let i = 0; i < ref[k].length; i++) {
          assert.ok(Math.abs(p.data[i] - ref[k][i]) <= 2e-6 * Math.max(1, Math.abs(ref[k][i])), `step ${t} ${k}[${i}]: ${p.data[i]} vs ${ref[k][i]}`);
        }
      }
    }
    // The update is far from trivial: every weight with a gradient moved by much more than the tolerance.
    for (const [k, p] of [['a', a], ['b', b]] as const) {
      for (let i = 0; i < p.data.length; i++) assert.ok(Math.abs(p.data[i] - w0[k][i]) > 1e-3, `${k}[${i}] barely moved`);
    }
    // Step 1 of element b[0] (g = 1e-9): m̂/(√v̂ + eps) = 1e-9 / (1e-9 + 1e-8) ≈ 0.0909, not 1.
    assert.deepEqual([...frozen.data], [1, 2, 3], 'a parameter without a gradient is not touched (not even decayed)');
    assert.equal(opt.state.step, 3);
    assert.deepEqual([...opt.state.m.keys()].sort(), ['a', 'b']);
    // Moments are what the reference holds.
    for (const k of ['a', 'b'] as const) {
      const mm = opt.state.m.get(k) as Float32Array;
      const vv = opt.state.v.get(k) as Float32Array;
      for (let i = 0; i < m[k].length; i++) {
        assert.ok(Math.abs(mm[i] - m[k][i]) <= 1e-6 * Math.max(1e-3, Math.abs(m[k][i])), `exp_avg ${k}[${i}]`);
        assert.ok(Math.abs(vv[i] - v[k][i]) <= 1e-6 * Math.max(1e-6, Math.abs(v[k][i])), `exp_avg_sq ${k}[${i}]`);
      }
    }
  });

  it('continues exactly from a copied state, as a resumed run does', () => {
    const settings = { lr: 0.01, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.05 };
    const gs = [[0.3, -0.2], [0.1, 0.4], [-0.5, 0.05], [0.2, 0.2]];
    const straight = param([1, -1]);
    const o1 = new AdamW([['w', straight]], settings);
    for (const g of gs) {
      setGrad(straight, g);
      o1.step(0.01);
    }
    const first = param([1, -1]);
    const o2 = new AdamW([['w', first]], settings);
    for (const g of gs.slice(0, 2)) {
      setGrad(first, g);
      o2.step(0.01);
    }
    const resumed = param([...first.data]);
    const o3 = new AdamW([['w', resumed]], settings);
    o3.state = {
      step: o2.state.step,
      m: new Map([...o2.state.m].map(([k, x]) => [k, Float32Array.from(x)])),
      v: new Map([...o2.state.v].map(([k, x]) => [k, Float32Array.from(x)])),
    };
    for (const g of gs.slice(2)) {
      setGrad(resumed, g);
      o3.step(0.01);
    }
    assert.deepEqual([...resumed.data], [...straight.data]);
  });
});

describe('clipGradNorm', () => {
  it('scales all gradients by maxNorm / (norm + 1e-6) when the global norm exceeds maxNorm, and returns the norm before', () => {
    const p = param([0, 0]);
    const q = param([0]);
    const none = param([5]);
    setGrad(p, [3, 4]);
    setGrad(q, [12]);
    const norm = clipGradNorm([['p', p], ['q', q], ['none', none]], 1);
    assert.ok(Math.abs(norm - 13) < 1e-9, `norm ${norm}`);
    const k = 1 / (13 + 1e-6);
    const got = [...(p.grad as Tensor).data, ...(q.grad as Tensor).data];
    [3, 4, 12].forEach((g, i) => assert.ok(Math.abs(got[i] - g * k) < 1e-7, `grad ${i}: ${got[i]}`));
    const after = Math.hypot(...got);
    assert.ok(after < 1 && after > 1 - 1e-5, `clipped norm ${after}`);
    assert.equal(none.grad, null);
  });

  it('leaves gradients alone below the limit and when max_grad_norm is 0 (disabled)', () => {
    for (const maxNorm of [20, 0]) {
      const p = param([0, 0]);
      setGrad(p, [3, 4]);
      const norm = clipGradNorm([['p', p]], maxNorm);
      assert.ok(Math.abs(norm - 5) < 1e-9);
      assert.deepEqual([...(p.grad as Tensor).data], [3, 4], `maxNorm ${maxNorm}`);
    }
  });
});

/** transformers' lr_lambda multipliers (optimization.py), written out independently. */
function transformersMultiplier(type: SchedulerType, step: number, total: number, warmup: number): number {
  switch (type) {
    case 'constant':
      return 1;
    case 'constant_with_warmup':
      return step < warmup ? step / Math.max(1, warmup) : 1;
    case 'linear':
      if (step < warmup) return step / Math.max(1, warmup);
      return Math.max(0, (total - step) / Math.max(1, total - warmup));
    case 'cosine': {
      if (step < warmup) return step / Math.max(1, warmup);
      const progress = (step - warmup) / Math.max(1, total - warmup);
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress)));
    }
  }
}

describe('learningRateAt', () => {
  const base = 3e-4;
  const total = 100;
  const warmup = 10;

  it('gives known values at chosen steps', () => {
    const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) <= 1e-12 + 1e-9 * Math.abs(b), `${what}: ${a} vs ${b}`);
    for (const type of ['cosine', 'linear'] as const) {
      close(learningRateAt(type, base, 0, total, warmup), 0, `${type} step 0`);
      close(learningRateAt(type, base, 5, total, warmup), base / 2, `${type} mid-warm-up`);
      close(learningRateAt(type, base, 10, total, warmup), base, `${type} end of warm-up`);
      close(learningRateAt(type, base, 55, total, warmup), base / 2, `${type} halfway through decay`);
      close(learningRateAt(type, base, 100, total, warmup), 0, `${type} last`);
    }
    // Cosine a quarter of the way through decay: 0.5·(1 + cos(π/4)).
    close(learningRateAt('cosine', base, 32.5, total, warmup), base * 0.5 * (1 + Math.SQRT1_2), 'cosine quarter');
    close(learningRateAt('linear', base, 32.5, total, warmup), base * 0.75, 'linear quarter');
    // transformers' `constant` ignores warm-up; `constant_with_warmup` does not.
    close(learningRateAt('constant', base, 0, total, warmup), base, 'constant step 0');
    close(learningRateAt('constant', base, 99, total, warmup), base, 'constant last');
    close(learningRateAt('constant_with_warmup', base, 5, total, warmup), base / 2, 'constant_with_warmup warm-up');
    close(learningRateAt('constant_with_warmup', base, 60, total, warmup), base, 'constant_with_warmup after');
    // No warm-up: the first update uses the full rate.
    close(learningRateAt('linear', base, 0, total, 0), base, 'linear without warm-up');
    close(learningRateAt('cosine', base, 0, total, 0), base, 'cosine without warm-up');
  });

  it("agrees with transformers' formulas at every step the trainer uses (0 … total − 1)", () => {
    for (const type of ['cosine', 'linear', 'constant', 'constant_with_warmup'] as const) {
      for (const [n, w] of [[100, 10], [7, 0], [7, 3], [1, 0], [5, 5], [3, 1]]) {
        for (let step = 0; step < n; step++) {
          const want = base * transformersMultiplier(type, step, n, w);
          const got = learningRateAt(type, base, step, n, w);
          assert.ok(Math.abs(got - want) <= 1e-15 + 1e-12 * want, `${type} total ${n} warm-up ${w} step ${step}: ${got} vs ${want}`);
        }
      }
    }
  });
});

describe('shiftedTargets', () => {
  it('makes position t predict label t+1 and skips −100, per row', () => {
    // Two rows of length 4: [-100, -100, 7, 8] and [5, -100, 9, -100].
    const labels = Int32Array.from([-100, -100, 7, 8, 5, -100, 9, -100]);
    const { rows, targets } = shiftedTargets(labels, 2, 4);
    assert.deepEqual([...rows], [1, 2, 5]);
    assert.deepEqual([...targets], [7, 8, 9]);
  });
});
