import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ropeInverseFrequencies } from '../src/backend/kernels/rope.js';
import { RopeTables, Tensor, add, isGradEnabled, matmul, mul, noGrad, rmsNorm, scale, sum } from '../src/tensor/index.js';
import type { RopeConfig } from '../src/tensor/index.js';
import { record } from '../src/tensor/tensor.js';
import { Rng, assertGradcheck, gradcheck, randn } from './helpers/gradcheck.js';
import { assertClose, inverseFrequenciesByHand, registerOpCases } from './helpers/op-cases.js';

describe('op forward and gradients (default backend)', () => {
  registerOpCases();
});

/** y = 2x with a deliberately broken backward (`factor` instead of 2, at `only` or everywhere). */
function doubled(x: Tensor, factor: number, only = -1): Tensor {
  const out = new Tensor(x.data.map((v) => 2 * v), x.shape);
  return record(out, 'doubled', [x], (g, sink) => {
    const gx = sink.acc(x);
    if (gx) for (let i = 0; i < g.length; i++) gx[i] += (only < 0 || i === only ? factor : 2) * g[i];
  });
}

describe('the gradient checker fails on wrong gradients', () => {
  const x = () => randn(new Rng(1), [3, 4], true);

  it('accepts a correct backward', () => {
    const [report] = assertGradcheck('doubled', (t) => doubled(t, 2), [x()]);
    assert.ok(report.maxErr < 1e-3, `error ${report.maxErr}`);
  });

  it('rejects a wrong sign, a missing factor, and names the worst element', () => {
    assert.throws(() => assertGradcheck('doubled', (t) => doubled(t, -2), [x()]), /input 0 \[3, 4\]: worst element \d+: analytic/);
    assert.throws(() => assertGradcheck('doubled', (t) => doubled(t, 1), [x()]), /gradient check failed/);
    const [report] = gradcheck((t) => doubled(t, 2.1), [x()]);
    assert.ok(report.maxErr > 1e-2, `a 5% error must be visible, got ${report.maxErr}`);
  });

  it('rejects an error on a single element and reports that element', () => {
    assert.throws(() => assertGradcheck('doubled', (t) => doubled(t, 0, 7), [x()]), /worst element 7: analytic 0(\.0+)? vs numeric/);
  });

  it('judges small gradients as strictly as large ones', () => {
    // Gradients of ~1e-3: a missing factor 2 must not hide under an absolute tolerance.
    const tiny = (t: Tensor) => scale(doubled(t, 1), 1e-3);
    assert.throws(() => assertGradcheck('tiny', tiny, [x()]), /gradient check failed/);
  });

  it('rejects a backward that forgets an input', () => {
    const rng = new Rng(2);
    const a = randn(rng, [3], true);
    const b = randn(rng, [3], true);
    const forgetful = (p: Tensor, q: Tensor) => {
      const out = new Tensor(p.data.map((v, i) => v * q.data[i]), p.shape);
      return record(out, 'forgetful', [p, q], (g, sink) => {
        const gp = sink.acc(p);
        if (gp) for (let i = 0; i < g.length; i++) gp[i] += g[i] * q.data[i];
      });
    };
    assert.throws(() => assertGradcheck('forgetful', forgetful, [a, b]), /input 1 \[3\]: backward\(\) gave no gradient/);
  });

  it('rejects a check that cannot fail (gradient zero everywhere)', () => {
    const a = randn(new Rng(3), [3], true);
    assert.throws(() => assertGradcheck('zero', (t) => mul(t, Tensor.zeros([3])), [a]), /zero everywhere/);
  });
});

describe('llama3 rope inverse frequencies (Llama 3.1 rope_scaling)', () => {
  const scaling = { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 };

  for (const headDim of [64, 128]) {
    it(`match the formula computed by hand, head dim ${headDim}, theta 500000`, () => {
      const cfg: RopeConfig = { headDim, theta: 500000, llama3: scaling };
      const engine = ropeInverseFrequencies(cfg);
      const hand = inverseFrequenciesByHand(cfg);
      assert.equal(engine.length, headDim / 2);
      for (let i = 0; i < hand.length; i++) {
        const rel = Math.abs(engine[i] - hand[i]) / hand[i];
        assert.ok(rel < 1e-6, `inv_freq[${i}] = ${engine[i]}, by hand ${hand[i]} (relative error ${rel})`);
      }
      // The tables the op uses hold the same frequencies: at position 1 the angle is inv_freq.
      const tables = new RopeTables(cfg);
      tables.ensure(2);
      const h = headDim / 2;
      for (let i = 0; i < h; i++) {
        const angle = Math.atan2(tables.sin[h + i], tables.cos[h + i]);
        assert.ok(Math.abs(angle - hand[i]) <= 1e-6 * Math.max(1, hand[i]), `table angle ${i}: ${angle} vs ${hand[i]}`);
      }
    });
  }

  it('has the three bands where Llama 3.1 puts them (head dim 128)', () => {
    const inv = ropeInverseFrequencies({ headDim: 128, theta: 500000, llama3: scaling });
    const plain = ropeInverseFrequencies({ headDim: 128, theta: 500000 });
    // Wavelength 2π/θ^(−i/64) crosses 8192/4 = 2048 between i = 28 and 29, and 8192 between 34 and 35.
    for (let i = 0; i <= 28; i++) assert.equal(inv[i], plain[i], `high-frequency pair ${i} is unchanged`);
    for (let i = 29; i <= 34; i++) {
      assert.ok(inv[i] < plain[i] && inv[i] > plain[i] / 8, `pair ${i} is interpolated: ${inv[i]} vs ${plain[i]}`);
    }
    for (let i = 35; i < 64; i++) assert.equal(inv[i], plain[i] / 8, `low-frequency pair ${i} is divided by 8`);
    // Two anchors worked out by hand: θ^0 = 1 stays 1; pair 63 is 500000^(−126/128) / 8.
    assert.equal(inv[0], 1);
    assert.ok(Math.abs(inv[63] - Math.exp((-126 / 128) * Math.log(500000)) / 8) < 1e-12);
  });

  it('without rope_scaling are θ^(−2i/d)', () => {
    const inv = ropeInverseFrequencies({ headDim: 64, theta: 10000 });
    for (let i = 0; i < 32; i++) {
      const hand = 10000 ** (-i / 32);
      assert.ok(Math.abs(inv[i] - hand) / hand < 1e-6, `inv_freq[${i}] = ${inv[i]}, by hand ${hand}`);
    }
  });
});

describe('autograd', () => {
  it('gradients accumulate over two backward() calls until cleared', () => {
    const rng = new Rng(4);
    const x = randn(rng, [2, 3], true);
    const w = randn(rng, [3, 2], true);
    const loss = () => sum(matmul(x, w));
    loss().backward();
    const once = Float32Array.from(x.grad?.data ?? []);
    const onceW = Float32Array.from(w.grad?.data ?? []);
    assert.ok(once.some((v) => v !== 0));
    loss().backward();
    assertClose(x.grad?.data ?? [], Array.from(once, (v) => 2 * v), 1e-6, 'x grad after two backward()');
    assertClose(w.grad?.data ?? [], Array.from(onceW, (v) => 2 * v), 1e-6, 'w grad after two backward()');
    x.zeroGrad();
    loss().backward();
    assertClose(x.grad?.data ?? [], once, 1e-6, 'x grad after zeroGrad and one backward()');
  });

  it('a second backward() through an already used graph throws instead of doing nothing', () => {
    const x = randn(new Rng(8), [3], true);
    const loss = sum(mul(x, x));
    loss.backward();
    const first = Float32Array.from(x.grad?.data ?? []);
    // PyTorch raises here. Silently returning leaves x.grad unchanged, so a caller that expects
    // accumulation trains on half the gradient without knowing.
    assert.throws(() => loss.backward());
    assert.deepEqual(Array.from(x.grad?.data ?? []), Array.from(first));
  });

  it('an input used by two branches gets the sum of both gradients', () => {
    const x = randn(new Rng(5), [4], true);
    sum(add(mul(x, x), x)).backward();
    assertClose(x.grad?.data ?? [], Array.from(x.data, (v) => 2 * v + 1), 1e-6, 'd(x² + x)/dx');
  });

  it('intermediate tensors keep no .grad; inputs without requiresGrad get none', () => {
    const rng = new Rng(6);
    const x = randn(rng, [2, 3], true);
    const c = randn(rng, [2, 3]);
    const y = mul(x, c);
    sum(y).backward();
    assert.equal(y.grad, null);
    assert.equal(c.grad, null);
    assertClose(x.grad?.data ?? [], c.data, 0, 'x grad');
  });

  it('noGrad builds no graph, restores recording afterwards, even after a throw', () => {
    const rng = new Rng(7);
    const x = randn(rng, [2, 3], true);
    const w = randn(rng, [3], true);
    const out = noGrad(() => {
      assert.equal(isGradEnabled(), false);
      return rmsNorm(matmul(x, randn(rng, [3, 3])), w, 1e-6);
    });
    assert.equal(out.requiresGrad, false);
    assert.equal(out.node, null);
    assert.throws(() => out.backward(), /does not require a gradient/);
    assert.equal(isGradEnabled(), true);
    assert.throws(() => noGrad(() => { throw new Error('boom'); }), /boom/);
    assert.equal(isGradEnabled(), true);
    noGrad(() => noGrad(() => 0));
    assert.equal(isGradEnabled(), true);
    const recorded = add(x, x);
    assert.equal(recorded.requiresGrad, true);
    assert.equal(recorded.node?.op, 'add');
  });
});
