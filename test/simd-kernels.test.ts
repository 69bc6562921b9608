import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { swigluBackward, swigluForward } from '../src/backend/kernels/activation.js';
import { addForward, axpy, reduceToShape } from '../src/backend/kernels/elementwise.js';
import { widenBf16 } from '../src/backend/kernels/bf16.js';
import { rmsNormBackward, rmsNormForward } from '../src/backend/kernels/norm.js';
import { simd, simdAvailable, useSimd } from '../src/backend/wasm/simd.js';
import { Rng } from '../src/tensor/random.js';

const wasOn = simd() !== null;
after(() => useSimd(wasOn));

/** Runs `fn` with the SIMD kernels on or off and returns its result. */
function withSimd<T>(on: boolean, fn: () => T): T {
  useSimd(on);
  try {
    return fn();
  } finally {
    useSimd(wasOn);
  }
}

function assertClose(actual: Float32Array, expected: Float32Array | Float64Array, rel: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    if (Number.isNaN(e)) {
      assert.ok(Number.isNaN(a), `${what}[${i}]: ${a}, expected NaN`);
      continue;
    }
    const tol = rel * Math.max(1, Math.abs(e));
    assert.ok(Math.abs(a - e) <= tol, `${what}[${i}]: ${a}, expected ${e} (±${tol})`);
  }
}

/** Values across SwiGLU's interesting range, with saturating ends. */
function gateValues(n: number, rng: Rng): Float32Array {
  const edges = [0, -0, 1e-30, -1e-30, 50, -50, 95, -95, 200, -200];
  return Float32Array.from({ length: n }, (_, i) => (i < edges.length ? edges[i] : (rng.uniform() - 0.5) * 16));
}

describe('WebAssembly SIMD kernels', { skip: !simdAvailable() && 'WebAssembly SIMD unavailable' }, () => {
  // Lengths around the 4-lane padding and the 16384-element chunk.
  const lengths = [1, 3, 4, 5, 17, 16383, 16384, 16389, 40000];

  it('SwiGLU forward equals the scalar kernel for every length', () => {
    const rng = new Rng(3);
    for (const n of lengths) {
      const gate = gateValues(n, rng);
      const up = Float32Array.from({ length: n }, () => rng.uniform() * 4 - 2);
      const scalar = withSimd(false, () => {
        const out = new Float32Array(n);
        swigluForward(gate, up, out);
        return out;
      });
      const vector = withSimd(true, () => {
        const out = new Float32Array(n);
        swigluForward(gate, up, out);
        return out;
      });
      assertClose(vector, scalar, 5e-7, `swiglu forward n=${n}`);
    }
  });

  it('SwiGLU backward adds (beta 1) or overwrites (beta 0) like the scalar kernel, with either gradient absent', () => {
    const rng = new Rng(4);
    for (const n of lengths) {
      const gate = gateValues(n, rng);
      const up = Float32Array.from({ length: n }, () => rng.uniform() * 4 - 2);
      const grad = Float32Array.from({ length: n }, () => rng.uniform() - 0.5);
      const start = Float32Array.from({ length: n }, () => rng.uniform());
      for (const which of ['both', 'gate', 'up'] as const) {
        const run = (on: boolean, beta: 0 | 1): [Float32Array | null, Float32Array | null] =>
          withSimd(on, () => {
            // An overwritten buffer may hold anything: NaN must not leak through.
            const initial = () => (beta === 1 ? start.slice() : new Float32Array(n).fill(Number.NaN));
            const g = which === 'up' ? null : initial();
            const u = which === 'gate' ? null : initial();
            swigluBackward(gate, up, grad, g && { grad: g, beta }, u && { grad: u, beta });
            return [g, u];
          });
        const [sg, su] = run(false, 1);
        const [vg, vu] = run(true, 1);
        if (sg && vg) assertClose(vg, sg, 1e-6, `swiglu d/dgate n=${n} (${which})`);
        if (su && vu) assertClose(vu, su, 1e-6, `swiglu d/dup n=${n} (${which})`);
        for (const on of [false, true]) {
          const [og, ou] = run(on, 0);
          if (og && sg) assertClose(og, Float32Array.from(sg, (v, i) => v - start[i]), 1e-6, `swiglu d/dgate overwritten n=${n} (${which}, SIMD ${on})`);
          if (ou && su) assertClose(ou, Float32Array.from(su, (v, i) => v - start[i]), 1e-6, `swiglu d/dup overwritten n=${n} (${which}, SIMD ${on})`);
        }
      }
    }
  });

  it('SwiGLU backward into one buffer for both inputs (swiglu(x, x)) adds both terms', () => {
    const x = Float32Array.of(0.5, -1, 2, 3, 0.25);
    const ones = new Float32Array(x.length).fill(1);
    const run = (on: boolean): Float32Array =>
      withSimd(on, () => {
        const into = new Float32Array(x.length);
        swigluBackward(x, x, ones, { grad: into, beta: 1 }, { grad: into, beta: 1 });
        return into;
      });
    // d/dx of SiLU(x)·x = σ(x)·x·(1 + x·(1 − σ(x))) + x·σ(x)
    const expected = Float64Array.from(x, (v) => {
      const s = 1 / (1 + Math.exp(-v));
      return s * v * (1 + v * (1 - s)) + v * s;
    });
    assertClose(run(true), expected, 1e-6, 'SIMD on');
    assertClose(run(false), expected, 1e-6, 'SIMD off');
    const shared = new Float32Array(x.length);
    assert.throws(() => swigluBackward(x, x, ones, { grad: shared, beta: 0 }, { grad: shared, beta: 1 }), /must be added to/);
  });

  it('softmax rows match a float64 reference, masked and padded entries included', () => {
    const kernels = withSimd(true, () => simd());
    assert.ok(kernels);
    const rng = new Rng(5);
    // 151,936 entries (Qwen's vocabulary) makes the module grow its memory.
    for (const n of [1, 2, 7, 64, 1001, 151936]) {
      const row = Float32Array.from({ length: n }, () => (rng.uniform() - 0.5) * 40);
      if (n > 2) row[1] = -Infinity;
      const max = row.reduce((a, b) => Math.max(a, b), -Infinity);
      let sum = 0;
      for (const v of row) sum += Math.exp(v - max);
      const expected = Float64Array.from(row, (v) => Math.exp(v - max) / sum);
      const padded = new Float32Array(n + 6).fill(7);
      padded.set(row, 3);
      const got = kernels.expScaleRow(padded, 3, n, (s) => 1 / s);
      assert.equal(got.max, Math.fround(max));
      assert.ok(Math.abs(got.sum - sum) <= 1e-6 * sum, `sum ${got.sum}, expected ${sum}`);
      assertClose(padded.subarray(3, 3 + n), expected, 2e-7, `softmax n=${n}`);
      assert.deepEqual([...padded.subarray(0, 3), ...padded.subarray(3 + n)], [7, 7, 7, 7, 7, 7], 'neighbours untouched');
      const lse = kernels.logSumExpRow(row, 0, n);
      assert.ok(Math.abs(lse - (max + Math.log(sum))) <= 1e-6 * Math.max(1, Math.abs(lse)), `lse ${lse}`);
    }
  });

  it('softmax rows in blocks: causal ends, any row length, fully masked rows, and results independent of the row length', () => {
    const kernels = withSimd(true, () => simd());
    assert.ok(kernels);
    const rng = new Rng(11);
    // Lengths around the multiple of 4, and rows enough to take several blocks (65,536 floats).
    for (const [rows, cols, end0, causal] of [[5, 13, 2, true], [4, 7, 1, false], [3, 1, 1, true], [300, 256, 1, true], [9, 16, 40, true], [2, 70001, 3, true]] as const) {
      const x = Float32Array.from({ length: rows * cols }, () => (rng.uniform() - 0.5) * 20);
      x.fill(-Infinity, 0, Math.min(cols, end0)); // row 0 sees only masked keys
      const expected = new Float64Array(rows * cols);
      for (let r = 0; r < rows; r++) {
        const o = r * cols;
        const end = causal ? Math.min(cols, end0 + r) : cols;
        let max = -Infinity;
        for (let j = 0; j < end; j++) max = Math.max(max, x[o + j]);
        if (max === -Infinity) continue;
        let sum = 0;
        for (let j = 0; j < end; j++) sum += Math.exp(x[o + j] - max);
        for (let j = 0; j < end; j++) expected[o + j] = Math.exp(x[o + j] - max) / sum;
      }
      const got = x.slice();
      kernels.softmaxRows(got, rows, cols, end0, causal);
      assertClose(got, expected, 3e-7, `softmax rows ${rows}×${cols} from ${end0}${causal ? ' causal' : ''}`);
    }
    // A row's result is the same bits whatever the length of the (masked) row around it.
    const row = Float32Array.from({ length: 10 }, () => (rng.uniform() - 0.5) * 20);
    const results = [10, 11, 12, 13, 16].map((cols) => {
      const x = new Float32Array(cols).fill(-Infinity);
      x.set(row);
      kernels.softmaxRows(x, 1, cols, 10, true);
      return Array.from(x.subarray(0, 10));
    });
    for (const r of results) assert.deepEqual(r, results[0]);
  });

  it('the exponential is within float32 rounding down to e^-87.3, 0 below it, NaN kept', () => {
    const kernels = withSimd(true, () => simd());
    assert.ok(kernels);
    const xs: number[] = [];
    for (let x = -87.2; x <= 88.7; x += 0.0371) xs.push(x);
    xs.push(0, -0, -100, -1e30, -Infinity);
    const row = new Float32Array(xs.length + 2);
    row.set(xs.map((x) => x - 89), 0); // all below the row's max, 0, so none is shifted
    row[xs.length] = 0;
    row[xs.length + 1] = Number.NaN;
    kernels.expScaleRow(row, 0, row.length, () => 1);
    for (let i = 0; i < xs.length; i++) {
      const x = Math.fround(xs[i] - 89);
      const e = Math.exp(x);
      if (x < -87.3) assert.equal(row[i], 0, `e^${x} flushes to 0`);
      else assert.ok(Math.abs(row[i] - e) <= 2.5e-7 * e, `e^${x} = ${row[i]}, expected ${e}`);
    }
    assert.ok(Number.isNaN(row[xs.length + 1]), 'NaN stays NaN');
  });

  it('add, axpy and same-shape gradient sums equal the scalar loops, aliased operands included', () => {
    const rng = new Rng(6);
    for (const n of lengths) {
      const a = Float32Array.from({ length: n }, () => rng.uniform() * 8 - 4);
      const b = Float32Array.from({ length: n }, () => rng.uniform() * 8 - 4);
      const run = (on: boolean): Float32Array[] =>
        withSimd(on, () => {
          const sum = new Float32Array(n);
          addForward(a, [n], b, [n], sum, [n]);
          const y = b.slice();
          axpy(-0.75, a, y);
          const into = b.slice();
          reduceToShape(a, [n], into, [n]);
          const self = a.slice();
          axpy(1, self, self);
          return [sum, y, into, self];
        });
      const scalar = run(false);
      const vector = run(true);
      // float32 arithmetic rounds the product and the sum separately: a few ulp apart.
      scalar.forEach((s, i) => assertClose(vector[i], s, 3e-7, `case ${i} n=${n}`));
    }
  });

  it("softmax's backward matches a float64 reference, row by row", () => {
    const kernels = withSimd(true, () => simd());
    assert.ok(kernels);
    const rng = new Rng(7);
    for (const [rows, cols] of [[1, 4], [3, 8], [256, 256], [70, 300]]) {
      const p = Float32Array.from({ length: rows * cols }, () => rng.uniform());
      const dp = Float32Array.from({ length: rows * cols }, () => rng.uniform() - 0.5);
      const expected = new Float64Array(rows * cols);
      for (let r = 0; r < rows; r++) {
        let dot = 0;
        for (let j = 0; j < cols; j++) dot += p[r * cols + j] * dp[r * cols + j];
        for (let j = 0; j < cols; j++) expected[r * cols + j] = p[r * cols + j] * (dp[r * cols + j] - dot) * 0.125;
      }
      kernels.softmaxBackward(p, dp, rows, cols, 0.125);
      assertClose(dp, expected, 1e-6, `softmax backward ${rows}x${cols}`);
    }
  });

  it('RMSNorm forward and backward equal the scalar kernels, across chunks of rows', () => {
    const rng = new Rng(8);
    for (const [rows, cols] of [[1, 4], [5, 8], [40, 896], [3, 6]]) {
      const x = Float32Array.from({ length: rows * cols }, () => rng.uniform() * 6 - 3);
      const w = Float32Array.from({ length: cols }, () => rng.uniform() + 0.5);
      const grad = Float32Array.from({ length: rows * cols }, () => rng.uniform() - 0.5);
      const start = Float32Array.from({ length: rows * cols }, () => rng.uniform());
      const run = (on: boolean): Float32Array[] =>
        withSimd(on, () => {
          const out = new Float32Array(rows * cols);
          const inv = new Float32Array(rows);
          rmsNormForward(x, w, cols, 1e-6, out, inv);
          const xInto = start.slice();
          const wInto = new Float32Array(cols);
          rmsNormBackward(x, w, cols, inv, grad, xInto, wInto);
          return [out, inv, xInto, wInto];
        });
      const scalar = run(false);
      const vector = run(true);
      ['out', '1/rms', 'dx', 'dw'].forEach((what, i) => assertClose(vector[i], scalar[i], 1e-6, `rmsnorm ${what} ${rows}x${cols}`));
    }
  });

  it('bf16 widening gives the same bits as the scalar loop for every pattern, at any length', () => {
    const all = Uint16Array.from({ length: 65536 + 5 }, (_, i) => i & 0xffff);
    for (const n of [1, 7, 8, 9, all.length]) {
      const src = all.subarray(all.length - n);
      const scalar = withSimd(false, () => widenBf16(src));
      const vector = withSimd(true, () => widenBf16(src));
      assert.deepEqual(new Uint32Array(vector.buffer), new Uint32Array(scalar.buffer), `n=${n}`);
    }
  });

  it('TUNEKIT_SIMD=0 and useSimd(false) leave the scalar kernels in place', () => {
    assert.equal(withSimd(false, () => simd()), null);
    assert.equal(useSimd(true), true);
  });
});
