/**
 * The ops the preference and RL stages add (log σ, exp, clamp, maximum, log(1 − eˣ), segment
 * sums): forward values against the formula in float64, and every backward against finite
 * differences.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { rowEntropy } from '../src/backend/kernels/pointwise.js';
import { Tensor, clamp, exp, log1mexp, logSigmoid, maximum, mul, segmentSum } from '../src/tensor/index.js';
import { Rng, assertGradcheck, randn } from './helpers/gradcheck.js';

function closeTo(actual: ArrayLike<number>, expected: number[], tol = 1e-5): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]) / Math.max(1, Math.abs(expected[i]));
    assert.ok(err < tol, `element ${i}: ${actual[i]} vs ${expected[i]}`);
  }
}

/** Values of `t` moved at least `gap` away from each of `points` (so finite differences never straddle a kink). */
function awayFrom(t: Tensor, points: number[], gap: number): Tensor {
  for (let i = 0; i < t.size; i++) {
    for (const p of points) {
      if (Math.abs(t.data[i] - p) < gap) t.data[i] = p + (t.data[i] >= p ? gap : -gap);
    }
  }
  return t;
}

describe('logSigmoid', () => {
  it('matches −log(1 + e^(−x)) and stays finite far out', () => {
    const xs = [-100, -20, -1.5, 0, 0.3, 4, 100];
    const out = logSigmoid(Tensor.from(xs));
    closeTo(out.data, xs.map((x) => (x < -30 ? x : -Math.log1p(Math.exp(-x)))));
    assert.ok(out.data.every(Number.isFinite));
  });
  it('has the finite-difference gradient', () => {
    assertGradcheck('logSigmoid', (x) => logSigmoid(x), [randn(new Rng(1), [3, 5], true, 3)]);
  });
});

describe('exp', () => {
  it('matches Math.exp', () => {
    const xs = [-3, -0.5, 0, 0.7, 2];
    closeTo(exp(Tensor.from(xs)).data, xs.map(Math.exp));
  });
  it('has the finite-difference gradient', () => {
    assertGradcheck('exp', (x) => exp(x), [randn(new Rng(2), [4, 3], true)]);
  });
});

describe('clamp', () => {
  it('clips to [lo, hi]', () => {
    closeTo(clamp(Tensor.from([-2, -0.1, 0.5, 3]), -0.5, 1).data, [-0.5, -0.1, 0.5, 1]);
    assert.throws(() => clamp(Tensor.from([1]), 1, 0), /lower bound/);
  });
  it('passes the gradient inside the range only', () => {
    const x = awayFrom(randn(new Rng(3), [20], true), [-0.5, 0.5], 0.05);
    const [report] = assertGradcheck('clamp', (t) => clamp(t, -0.5, 0.5), [x]);
    assert.ok(report.maxNumeric > 0);
    const g = new Float32Array(20).fill(1);
    x.zeroGrad();
    clamp(x, -0.5, 0.5).backward(g);
    for (let i = 0; i < 20; i++) assert.equal(x.grad!.data[i], Math.abs(x.data[i]) < 0.5 ? 1 : 0, `element ${i} (${x.data[i]})`);
  });
});

describe('maximum', () => {
  it('takes the larger element', () => {
    closeTo(maximum(Tensor.from([1, -2, 3]), Tensor.from([0, 5, 3])).data, [1, 5, 3]);
  });
  it('sends the gradient to the larger input, half each on a tie', () => {
    const rng = new Rng(4);
    const a = randn(rng, [12], true);
    const b = randn(rng, [12], true);
    for (let i = 0; i < 12; i++) if (Math.abs(a.data[i] - b.data[i]) < 0.05) b.data[i] = a.data[i] + 0.1;
    assertGradcheck('maximum', (p, q) => maximum(p, q), [a, b]);
    const p = Tensor.from([2], [1], true);
    const q = Tensor.from([2], [1], true);
    maximum(p, q).backward(Float32Array.of(1));
    assert.equal(p.grad!.data[0], 0.5);
    assert.equal(q.grad!.data[0], 0.5);
  });
  it('is right when both inputs are one tensor', () => {
    const a = randn(new Rng(5), [6], true);
    assertGradcheck('maximum(a, a·a)', (t) => maximum(t, mul(t, t)), [awayFrom(a, [0, 1], 0.05)]);
  });
});

describe('log1mexp', () => {
  it('matches log(1 − eˣ) on both sides of −ln 2', () => {
    const xs = [-1e-4, -0.1, -0.69, -0.7, -2, -30];
    closeTo(log1mexp(Tensor.from(xs)).data, xs.map((x) => Math.log(1 - Math.exp(x))), 1e-4);
  });
  it('has the finite-difference gradient', () => {
    const x = new Tensor(Float32Array.from([-0.2, -0.5, -0.8, -1.3, -2.5, -4]), [6], true);
    assertGradcheck('log1mexp', (t) => log1mexp(t), [x], { eps: 1e-3 });
  });
});

describe('segmentSum', () => {
  it('sums by segment and leaves out negative ones', () => {
    const out = segmentSum(Tensor.from([1, 2, 3, 4, 5]), Int32Array.from([0, 1, -1, 1, 0]), 3);
    closeTo(out.data, [6, 6, 0]);
    assert.throws(() => segmentSum(Tensor.from([1]), Int32Array.from([2]), 2), /not below/);
  });
  it('has the finite-difference gradient', () => {
    const x = randn(new Rng(6), [10], true);
    const segs = Int32Array.from([2, 0, 0, -1, 1, 1, 1, 2, -1, 0]);
    assertGradcheck('segmentSum', (t) => segmentSum(t, segs, 3), [x], { allowZeroGrad: false });
  });
});

describe('rowEntropy', () => {
  it('is −Σ p log p of each row', () => {
    const x = Float32Array.from([0, 0, 0, 0, 5, -1, 2, 0.5]);
    const out = new Float32Array(2);
    rowEntropy(x, 4, out);
    const h = (row: number[]) => {
      const z = row.reduce((s, v) => s + Math.exp(v), 0);
      return -row.reduce((s, v) => s + (Math.exp(v) / z) * (v - Math.log(z)), 0);
    };
    closeTo(out, [Math.log(4), h([5, -1, 2, 0.5])]);
  });
});
