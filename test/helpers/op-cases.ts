import assert from 'node:assert/strict';
import { it } from 'node:test';
import {
  RopeTables, Tensor, add, attention, crossEntropy, embedding, linear, matmul, mean, mul, reshape, rmsNorm, rope, scale,
  silu, softmax, sub, sum, sumLastDim, swiglu, tokenLogprobs,
} from '../../src/tensor/index.js';
import type { AttentionOptions, MatmulOptions, RopeConfig } from '../../src/tensor/index.js';
import { attentionForward } from '../../src/backend/kernels/attention.js';
import { backend } from '../../src/backend/select.js';
import { Rng, assertGradcheck, randn } from './gradcheck.js';

/**
 * Every op's forward against a float64 reference written out plainly here, and its backward
 * against finite differences. Registered by `test/ops-grad.test.ts` (default backend) and by
 * `test/backend-conformance.test.ts` (once per backend).
 */
export interface OpCase {
  name: string;
  run(): void;
}

/** Registers every case as a test; `setup` runs first in each (e.g. to pick the backend). */
export function registerOpCases(setup: () => void = () => {}): void {
  for (const c of OP_CASES) {
    it(c.name, () => {
      setup();
      c.run();
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Comparison and float64 references

/** Fails with the worst element when some |actual − expected| / max(1, |expected|) exceeds tol. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: ${actual.length} values, expected ${expected.length}`);
  let worst = -1;
  let worstErr = 0;
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i] - expected[i]) / Math.max(1, Math.abs(expected[i]));
    if (!(err <= worstErr)) {
      worstErr = Number.isNaN(err) ? Infinity : err;
      worst = i;
    }
  }
  if (worstErr > tol) {
    assert.fail(`${what}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} (error ${worstErr.toExponential(3)} > ${tol})`);
  }
}

/** op(A)·op(B) of 2-D row-major buffers, op(A) [m, k], op(B) [k, n]. */
function refMatmul(a: ArrayLike<number>, b: ArrayLike<number>, m: number, n: number, k: number, transA: boolean, transB: boolean): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += (transA ? a[p * m + i] : a[i * k + p]) * (transB ? b[j * k + p] : b[p * n + j]);
      out[i * n + j] = s;
    }
  }
  return out;
}

/** out[idx] = f(a[idx'], b[idx'']) with numpy broadcasting, by explicit multi-indices. */
function refBroadcast(a: Tensor, b: Tensor, f: (x: number, y: number) => number): { data: Float64Array; shape: number[] } {
  const nd = Math.max(a.ndim, b.ndim);
  const pad = (s: readonly number[]) => [...new Array<number>(nd - s.length).fill(1), ...s];
  const sa = pad(a.shape);
  const sb = pad(b.shape);
  const shape = sa.map((d, i) => Math.max(d, sb[i]));
  let n = 1;
  for (const d of shape) n *= d;
  const data = new Float64Array(n);
  for (let flat = 0; flat < n; flat++) {
    let rest = flat;
    let ia = 0;
    let ib = 0;
    let strideA = 1;
    let strideB = 1;
    for (let d = nd - 1; d >= 0; d--) {
      const idx = rest % shape[d];
      rest = Math.floor(rest / shape[d]);
      ia += (sa[d] === 1 ? 0 : idx) * strideA;
      ib += (sb[d] === 1 ? 0 : idx) * strideB;
      strideA *= sa[d];
      strideB *= sb[d];
    }
    data[flat] = f(a.data[ia], b.data[ib]);
  }
  return { data, shape };
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/**
 * Inverse rotary frequencies by the Llama 3.1 recipe, in float64: θ^(−2i/d); wavelengths
 * shorter than original/high_freq_factor are kept, longer than original/low_freq_factor are
 * divided by factor, and the band between is interpolated.
 */
export function inverseFrequenciesByHand(cfg: RopeConfig): number[] {
  const out: number[] = [];
  for (let i = 0; i < cfg.headDim / 2; i++) {
    const base = 1 / cfg.theta ** ((2 * i) / cfg.headDim);
    const s = cfg.llama3;
    if (!s) {
      out.push(base);
      continue;
    }
    const wavelength = (2 * Math.PI) / base;
    if (wavelength < s.originalMaxPositions / s.highFreqFactor) out.push(base);
    else if (wavelength > s.originalMaxPositions / s.lowFreqFactor) out.push(base / s.factor);
    else {
      const smooth = (s.originalMaxPositions / wavelength - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      out.push((1 - smooth) * (base / s.factor) + smooth * base);
    }
  }
  return out;
}

/** Rotate-half RoPE of x [tokens, heads, D] as transformers' apply_rotary_pos_emb computes it. */
function refRope(x: Float32Array, heads: number, headDim: number, positions: Int32Array, cfg: RopeConfig): Float64Array {
  const inv = inverseFrequenciesByHand(cfg);
  const h = headDim / 2;
  const out = new Float64Array(x.length);
  for (let t = 0; t < positions.length; t++) {
    for (let hd = 0; hd < heads; hd++) {
      const o = (t * heads + hd) * headDim;
      for (let i = 0; i < headDim; i++) {
        const angle = positions[t] * inv[i % h];
        // q·cos + rotate_half(q)·sin, rotate_half(q) = [−q2, q1]
        const rotated = i < h ? -x[o + i + h] : x[o + i - h];
        out[o + i] = x[o + i] * Math.cos(angle) + rotated * Math.sin(angle);
      }
    }
  }
  return out;
}

/** softmax(q·kᵀ/√D + mask)·v head by head with repeated kv heads; a row that sees nothing is 0. */
function refAttention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Float64Array {
  const [B, T, H, D] = q.shape;
  const [, S, HKV] = k.shape;
  const causal = opts.causal ?? true;
  const offset = S - T;
  const out = new Float64Array(q.size);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / (H / HKV));
      for (let i = 0; i < T; i++) {
        const scores: number[] = [];
        const seen: number[] = [];
        for (let j = 0; j < S; j++) {
          if (causal && j > offset + i) continue;
          if (opts.keyMask && opts.keyMask[b * S + j] === 0) continue;
          if (opts.segments && opts.segments[b * S + j] !== opts.segments[b * S + offset + i]) continue;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q.data[((b * T + i) * H + h) * D + d] * k.data[((b * S + j) * HKV + kvh) * D + d];
          scores.push(dot / Math.sqrt(D));
          seen.push(j);
        }
        if (seen.length === 0) continue;
        const max = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - max));
        const z = e.reduce((x, y) => x + y, 0);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          seen.forEach((j, n) => (acc += (e[n] / z) * v.data[((b * S + j) * HKV + kvh) * D + d]));
          out[((b * T + i) * H + h) * D + d] = acc;
        }
      }
    }
  }
  return out;
}

function refLogSoftmaxAt(row: ArrayLike<number>, target: number): number {
  let max = -Infinity;
  for (let j = 0; j < row.length; j++) max = Math.max(max, row[j]);
  let z = 0;
  for (let j = 0; j < row.length; j++) z += Math.exp(row[j] - max);
  return row[target] - max - Math.log(z);
}

// ---------------------------------------------------------------------------------------------
// The cases

const FORWARD_TOL = 1e-5;
const OP_CASES: OpCase[] = [];
function addCase(name: string, run: () => void): void {
  OP_CASES.push({ name, run });
}

const TRANSPOSES: Array<[boolean, boolean]> = [[false, false], [true, false], [false, true], [true, true]];

/** A·B + 3·A·B: both products add into the same gradient buffers, so backward must accumulate. */
const usedTwice = (o: MatmulOptions) => (x: Tensor, y: Tensor) => add(matmul(x, y, o), scale(matmul(x, y, o), 3));

for (const [transA, transB] of TRANSPOSES) {
  addCase(`matmul 2-D transA=${transA} transB=${transB}`, () => {
    const rng = new Rng(11);
    const [m, k, n] = [3, 4, 5];
    const a = randn(rng, transA ? [k, m] : [m, k], true);
    const b = randn(rng, transB ? [n, k] : [k, n], true);
    const out = matmul(a, b, { transA, transB });
    assert.deepEqual(out.shape, [m, n]);
    assertClose(out.data, refMatmul(a.data, b.data, m, n, k, transA, transB), FORWARD_TOL, 'matmul forward');
    assertGradcheck('matmul', (x, y) => matmul(x, y, { transA, transB }), [a, b]);
    assertGradcheck('matmul used twice', usedTwice({ transA, transB }), [a, b]);
  });

  addCase(`matmul batched 3-D transA=${transA} transB=${transB}`, () => {
    const rng = new Rng(12);
    const [batch, m, k, n] = [3, 2, 4, 3];
    const a = randn(rng, transA ? [batch, k, m] : [batch, m, k], true);
    const b = randn(rng, transB ? [batch, n, k] : [batch, k, n], true);
    const out = matmul(a, b, { transA, transB });
    assert.deepEqual(out.shape, [batch, m, n]);
    const expected = new Float64Array(batch * m * n);
    for (let i = 0; i < batch; i++) {
      expected.set(refMatmul(a.data.subarray(i * m * k), b.data.subarray(i * k * n), m, n, k, transA, transB), i * m * n);
    }
    assertClose(out.data, expected, FORWARD_TOL, 'batched matmul forward');
    assertGradcheck('batched matmul', (x, y) => matmul(x, y, { transA, transB }), [a, b]);
    assertGradcheck('batched matmul used twice', usedTwice({ transA, transB }), [a, b]);
  });
}

addCase('matmul with leading batch dimensions on A and a 2-D B (plain and transB)', () => {
  const rng = new Rng(13);
  const a = randn(rng, [2, 3, 4], true);
  const b = randn(rng, [4, 5], true);
  const bt = randn(rng, [5, 4], true);
  const out = matmul(a, b);
  assert.deepEqual(out.shape, [2, 3, 5]);
  assertClose(out.data, refMatmul(a.data, b.data, 6, 5, 4, false, false), FORWARD_TOL, 'matmul forward');
  assertGradcheck('matmul [2,3,4]·[4,5]', (x, y) => matmul(x, y), [a, b]);
  assertGradcheck('matmul [2,3,4]·[5,4]ᵀ', (x, y) => matmul(x, y, { transB: true }), [a, bt]);
});

addCase('linear with bias (weight stored [out, in])', () => {
  const rng = new Rng(14);
  const x = randn(rng, [2, 3, 4], true);
  const w = randn(rng, [5, 4], true);
  const bias = randn(rng, [5], true);
  const out = linear(x, w, bias);
  const expected = refMatmul(x.data, w.data, 6, 5, 4, false, true).map((v, i) => v + bias.data[i % 5]);
  assertClose(out.data, expected, FORWARD_TOL, 'linear forward');
  assertGradcheck('linear', (a, b, c) => linear(a, b, c), [x, w, bias]);
});

const BROADCASTS: Array<[string, number[], number[]]> = [
  ['[B,T,C] with [C]', [2, 3, 4], [4]],
  ['[B,T,C] with [B,1,C]', [2, 3, 4], [2, 1, 4]],
  ['[C] with [B,T,C]', [4], [2, 3, 4]],
  ['[B,T,1] with [B,T,C]', [2, 3, 1], [2, 3, 4]],
  ['[B,T,C] with [B,T,C]', [2, 3, 4], [2, 3, 4]],
  ['[] (0-d) with [B,T,C]', [], [2, 3, 4]],
  ['[B,1,C] with [1,T,C] (both broadcast)', [2, 1, 4], [1, 3, 4]],
];
const BINARY: Array<[string, (a: Tensor, b: Tensor) => Tensor, (x: number, y: number) => number]> = [
  ['add', add, (x, y) => x + y],
  ['mul', mul, (x, y) => x * y],
  ['sub', sub, (x, y) => x - y],
];
for (const [opName, op, f] of BINARY) {
  for (const [label, sa, sb] of BROADCASTS) {
    addCase(`${opName} ${label}`, () => {
      const rng = new Rng(15);
      const a = randn(rng, sa, true);
      const b = randn(rng, sb, true);
      const out = op(a, b);
      const ref = refBroadcast(a, b, f);
      assert.deepEqual(out.shape, ref.shape);
      assertClose(out.data, ref.data, FORWARD_TOL, `${opName} forward`);
      assertGradcheck(opName, op, [a, b]);
    });
  }
}

addCase('add/mul where only one side requires a gradient', () => {
  const rng = new Rng(16);
  const a = randn(rng, [2, 3, 4], true);
  const b = randn(rng, [4]);
  assertGradcheck('mul (b constant)', mul, [a, b]);
  assertGradcheck('add (a constant)', add, [b, a]);
});

addCase('mul(x, x) and add(x, x): one tensor on both sides', () => {
  const x = randn(new Rng(17), [3, 4], true);
  assertGradcheck('mul(x, x)', (t) => mul(t, t), [x]);
  assertGradcheck('add(x, x)', (t) => add(t, t), [x]);
});

addCase('scale', () => {
  const x = randn(new Rng(18), [3, 4], true);
  assertClose(scale(x, -2.5).data, Array.from(x.data, (v) => -2.5 * v), FORWARD_TOL, 'scale forward');
  assertGradcheck('scale', (t) => scale(t, -2.5), [x]);
});

addCase('silu', () => {
  const x = randn(new Rng(19), [2, 3, 4], true, 2);
  assertClose(silu(x).data, Array.from(x.data, (v) => v * sigmoid(v)), FORWARD_TOL, 'silu forward');
  assertGradcheck('silu', silu, [x]);
});

addCase('swiglu (gate and up)', () => {
  const rng = new Rng(20);
  const gate = randn(rng, [2, 3, 4], true, 2);
  const up = randn(rng, [2, 3, 4], true);
  const expected = Array.from(gate.data, (g, i) => g * sigmoid(g) * up.data[i]);
  assertClose(swiglu(gate, up).data, expected, FORWARD_TOL, 'swiglu forward');
  assertGradcheck('swiglu', swiglu, [gate, up]);
});

// A large eps as well, so that where eps goes (inside the square root, as transformers does) shows.
for (const eps of [1e-5, 0.5]) addCase(`rmsNorm (x and weight), eps ${eps}`, () => {
  const rng = new Rng(21);
  const c = 8;
  const x = randn(rng, [2, 3, c], true);
  const w = new Tensor(Float32Array.from(rng.normals(c), (v) => 1 + 0.5 * v), [c], true);
  const expected = new Float64Array(x.size);
  for (let r = 0; r < x.size / c; r++) {
    let ss = 0;
    for (let j = 0; j < c; j++) ss += x.data[r * c + j] ** 2;
    const inv = 1 / Math.sqrt(ss / c + eps);
    for (let j = 0; j < c; j++) expected[r * c + j] = x.data[r * c + j] * inv * w.data[j];
  }
  assertClose(rmsNorm(x, w, eps).data, expected, FORWARD_TOL, 'rmsNorm forward');
  assertGradcheck('rmsNorm', (a, b) => rmsNorm(a, b, eps), [x, w]);
});

/** A small llama3-scaled config whose three frequency bands all occur with headDim 8. */
const SMALL_LLAMA3: RopeConfig = {
  headDim: 8, theta: 10000, llama3: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 64 },
};

for (const [label, cfg, positions] of [
  ['plain, positions starting at 5 and at 40', { headDim: 8, theta: 10000 }, [5, 6, 7, 40, 41, 42]],
  ['llama3 scaling, all three bands', SMALL_LLAMA3, [3, 4, 5, 150, 151, 152]],
] as Array<[string, RopeConfig, number[]]>) {
  addCase(`rope ${label}`, () => {
    const x = randn(new Rng(22), [2, 3, 2, cfg.headDim], true);
    const pos = Int32Array.from(positions);
    const tables = new RopeTables(cfg);
    const out = rope(x, pos, tables);
    // Angles are float32 in the engine (as in transformers): allow their rounding at position ~150.
    assertClose(out.data, refRope(x.data, 2, cfg.headDim, pos, cfg), 1e-4, 'rope forward');
    assertGradcheck('rope', (t) => rope(t, pos, tables), [x]);
  });
}

addCase('rope tables grow on demand: positions far beyond the first call', () => {
  const tables = new RopeTables(SMALL_LLAMA3);
  const x = randn(new Rng(37), [4, 2, 8], true);
  for (const positions of [[0, 1, 2, 3], [500, 501, 1000, 2]]) {
    const pos = Int32Array.from(positions);
    assertClose(rope(x, pos, tables).data, refRope(x.data, 2, 8, pos, SMALL_LLAMA3), 1e-3, `rope at ${positions}`);
  }
});

addCase('softmax', () => {
  const x = randn(new Rng(23), [2, 3, 5], true, 2);
  const expected = new Float64Array(x.size);
  for (let r = 0; r < 6; r++) {
    for (let j = 0; j < 5; j++) expected[r * 5 + j] = Math.exp(refLogSoftmaxAt(x.data.subarray(r * 5, r * 5 + 5), j));
  }
  assertClose(softmax(x).data, expected, FORWARD_TOL, 'softmax forward');
  assertGradcheck('softmax', softmax, [x]);
});

function attentionInputs(seed: number, B: number, T: number, S: number, H: number, HKV: number, D: number): Tensor[] {
  const rng = new Rng(seed);
  return [randn(rng, [B, T, H, D], true), randn(rng, [B, S, HKV, D], true), randn(rng, [B, S, HKV, D], true)];
}

function checkAttention(name: string, inputs: Tensor[], opts: AttentionOptions): Tensor {
  const [q, k, v] = inputs;
  const out = attention(q, k, v, opts);
  assert.deepEqual(out.shape, q.shape);
  assertClose(out.data, refAttention(q, k, v, opts), FORWARD_TOL, `${name} forward`);
  assertGradcheck(name, (a, b, c) => attention(a, b, c, opts), inputs);
  return out;
}

addCase('attention causal, GQA (H=4, Hkv=2)', () => {
  checkAttention('attention causal GQA', attentionInputs(24, 2, 5, 5, 4, 2, 4), {});
});

addCase('attention non-causal, MQA (H=2, Hkv=1)', () => {
  checkAttention('attention non-causal', attentionInputs(25, 2, 4, 4, 2, 1, 3), { causal: false });
});

addCase('attention with a keyMask (right and left padding): padded keys get no gradient', () => {
  // batch 0 right-padded, batch 1 left-padded: its first two queries see no key at all.
  const keyMask = Uint8Array.from([1, 1, 1, 1, 0, 0, 0, 1, 1, 1]);
  const inputs = attentionInputs(26, 2, 5, 5, 4, 2, 4);
  const out = checkAttention('attention keyMask', inputs, { keyMask });
  const [q, k, v] = inputs;
  // The reference leaves rows with no visible key at 0; so must the op.
  for (let d = 0; d < 2 * 4 * 4; d++) assert.equal(out.data[5 * 16 + d], 0, 'a query that sees no key gives 0');
  const rowsKv = 2 * 4;
  for (const [b, j] of [[0, 4], [1, 0], [1, 1]]) {
    for (let d = 0; d < rowsKv; d++) {
      assert.equal(k.grad?.data[(b * 5 + j) * rowsKv + d], 0, `k grad at padded key (${b}, ${j})`);
      assert.equal(v.grad?.data[(b * 5 + j) * rowsKv + d], 0, `v grad at padded key (${b}, ${j})`);
    }
  }
  assert.ok(q.grad, 'q has a gradient');
});

addCase('attention non-causal with a keyMask', () => {
  checkAttention('attention non-causal keyMask', attentionInputs(27, 2, 4, 4, 2, 2, 4), {
    causal: false, keyMask: Uint8Array.from([1, 1, 0, 1, 0, 1, 1, 1]),
  });
});

addCase('attention with segments (packing): a packed sequence equals itself run alone', () => {
  const segments = Int32Array.from([0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 2, 2]);
  const inputs = attentionInputs(28, 2, 7, 7, 4, 2, 4);
  const out = checkAttention('attention segments', inputs, { segments });
  // batch 0, tokens 3..6 (the second packed sequence) alone.
  const [q, k, v] = inputs;
  const slice = (t: Tensor, heads: number) =>
    new Tensor(t.data.slice(3 * heads * 4, 7 * heads * 4), [1, 4, heads, 4]);
  const alone = attention(slice(q, 4), slice(k, 2), slice(v, 2));
  assertClose(out.data.subarray(3 * 16, 7 * 16), alone.data, 1e-6, 'second packed sequence vs alone');
});

addCase('attention with fewer queries than keys (cached prefix), causal', () => {
  checkAttention('attention cached prefix', attentionInputs(29, 2, 2, 5, 4, 2, 4), {});
});

addCase('attention decoding one query against a cache, causal', () => {
  checkAttention('attention one query', attentionInputs(38, 2, 1, 4, 4, 2, 4), {});
});

addCase('attention with fewer queries than keys, with a keyMask and with segments', () => {
  checkAttention('attention cached prefix keyMask', attentionInputs(39, 2, 2, 5, 4, 2, 4), {
    keyMask: Uint8Array.from([0, 1, 1, 1, 1, 1, 1, 1, 0, 1]),
  });
  checkAttention('attention cached prefix segments', attentionInputs(40, 2, 2, 5, 4, 2, 4), {
    segments: Int32Array.from([0, 0, 1, 1, 1, 0, 0, 0, 1, 1]),
  });
});

addCase('attention kernel reading keys from a larger cache (kvCapacity > keys)', () => {
  // The layout a KV cache uses: batch b's keys start at row b·capacity, only `keys` rows valid.
  const [B, T, S, cap, H, HKV, D] = [2, 2, 3, 5, 4, 2, 4];
  const [q, k, v] = attentionInputs(41, B, T, S, H, HKV, D);
  const rng = new Rng(42);
  const kCache = rng.normals(B * cap * HKV * D);
  const vCache = rng.normals(B * cap * HKV * D);
  for (let b = 0; b < B; b++) {
    kCache.set(k.data.subarray(b * S * HKV * D, (b + 1) * S * HKV * D), b * cap * HKV * D);
    vCache.set(v.data.subarray(b * S * HKV * D, (b + 1) * S * HKV * D), b * cap * HKV * D);
  }
  const out = new Float32Array(q.size);
  attentionForward(backend(), {
    batch: B, queries: T, keys: S, kvCapacity: cap, heads: H, kvHeads: HKV, headDim: D,
    queryOffset: S - T, causal: true, keyMask: null, segments: null,
  }, q.data, kCache, vCache, out, null);
  assertClose(out, refAttention(q, k, v, {}), FORWARD_TOL, 'attention over a cache');
});

addCase('embedding: repeated ids accumulate', () => {
  const rng = new Rng(30);
  const weight = randn(rng, [6, 3], true);
  const ids = Int32Array.from([1, 3, 1, 1, 0, 5]);
  const out = embedding(weight, ids, [2, 3]);
  assert.deepEqual(out.shape, [2, 3, 3]);
  const expected = Array.from(ids).flatMap((id) => Array.from(weight.data.subarray(id * 3, id * 3 + 3)));
  assertClose(out.data, expected, 0, 'embedding forward');
  assertGradcheck('embedding', (w) => embedding(w, ids, [2, 3]), [weight]);
  weight.zeroGrad();
  embedding(weight, ids, [2, 3]).backward(new Float32Array(18).fill(1));
  assert.deepEqual(Array.from(weight.grad?.data ?? []), [1, 1, 1, 3, 3, 3, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1]);
  assert.throws(() => embedding(weight, Int32Array.from([6])), RangeError);
});

addCase('tokenLogprobs (a −100 row gives 0 and no gradient)', () => {
  const logits = randn(new Rng(31), [5, 7], true, 2);
  const targets = Int32Array.from([2, -100, 6, 0, 3]);
  const out = tokenLogprobs(logits, targets);
  const expected = Array.from(targets, (t, r) => (t < 0 ? 0 : refLogSoftmaxAt(logits.data.subarray(r * 7, r * 7 + 7), t)));
  assertClose(out.data, expected, FORWARD_TOL, 'tokenLogprobs forward');
  assertGradcheck('tokenLogprobs', (x) => tokenLogprobs(x, targets), [logits]);
  for (let j = 0; j < 7; j++) assert.equal(logits.grad?.data[7 + j], 0, 'ignored row has no gradient');
});

addCase('crossEntropy with −100 labels: value against float64, gradient', () => {
  const logits = randn(new Rng(32), [6, 7], true, 2);
  const labels = Int32Array.from([1, -100, 4, -100, 6, 0]);
  let s = 0;
  let count = 0;
  labels.forEach((l, r) => {
    if (l === -100) return;
    s -= refLogSoftmaxAt(logits.data.subarray(r * 7, r * 7 + 7), l);
    count++;
  });
  const loss = crossEntropy(logits, labels);
  assertClose([loss.item()], [s / count], 1e-6, 'crossEntropy value');
  assertGradcheck('crossEntropy', (x) => crossEntropy(x, labels), [logits]);
  for (const r of [1, 3]) for (let j = 0; j < 7; j++) assert.equal(logits.grad?.data[r * 7 + j], 0, `ignored row ${r}`);
  assert.throws(() => crossEntropy(logits, Int32Array.from([1, 2, 7, 0, 0, 0])), RangeError);
});

addCase('crossEntropy with every label ignored is 0 with a zero gradient', () => {
  const logits = randn(new Rng(33), [3, 4], true);
  const loss = crossEntropy(logits, Int32Array.from([-100, -100, -100]));
  assert.equal(loss.item(), 0);
  loss.backward();
  for (const g of logits.grad?.data ?? []) assert.equal(g, 0);
});

addCase('reshape (with −1) shares the buffer and passes the gradient through in order', () => {
  const rng = new Rng(34);
  const x = randn(rng, [2, 3, 4], true);
  const y = reshape(x, [-1, 4]);
  assert.deepEqual(y.shape, [6, 4]);
  assert.equal(y.data, x.data);
  const w = randn(rng, [4, 2], true);
  assertGradcheck('reshape', (t) => reshape(t, [4, -1]), [x]);
  assertGradcheck('reshape then matmul', (t, u) => matmul(reshape(t, [6, 4]), u), [x, w]);
  assert.throws(() => reshape(x, [5, -1]), /cannot become/);
});

addCase('sum, mean, sumLastDim', () => {
  const x = randn(new Rng(35), [2, 3, 4], true);
  const total = Array.from(x.data).reduce((a, b) => a + b, 0);
  assertClose([sum(x).item()], [total], FORWARD_TOL, 'sum');
  assertClose([mean(x).item()], [total / 24], FORWARD_TOL, 'mean');
  const rows = Array.from({ length: 6 }, (_, r) => Array.from(x.data.subarray(r * 4, r * 4 + 4)).reduce((a, b) => a + b, 0));
  const last = sumLastDim(x);
  assert.deepEqual(last.shape, [2, 3]);
  assertClose(last.data, rows, FORWARD_TOL, 'sumLastDim');
  assertGradcheck('sum', sum, [x]);
  assertGradcheck('mean', mean, [x]);
  assertGradcheck('sumLastDim', sumLastDim, [x]);
});

addCase('a decoder-style block end to end (shared inputs, residual, log-probabilities)', () => {
  const rng = new Rng(36);
  const C = 6;
  const x = randn(rng, [2, 3, C], true);
  const norm = new Tensor(Float32Array.from(rng.normals(C), (v) => 1 + 0.3 * v), [C], true);
  const wg = randn(rng, [8, C], true, 0.5);
  const wu = randn(rng, [8, C], true, 0.5);
  const wd = randn(rng, [C, 8], true, 0.5);
  const wo = randn(rng, [5, C], true, 0.5);
  const labels = Int32Array.from([0, 4, -100, 2, 1, -100]);
  const block = (xi: Tensor, n: Tensor, g: Tensor, u: Tensor, d: Tensor, o: Tensor) => {
    const h = rmsNorm(xi, n, 1e-6);
    const y = add(xi, linear(swiglu(linear(h, g), linear(h, u)), d));
    return tokenLogprobs(reshape(linear(y, o), [6, 5]), labels);
  };
  assertGradcheck('block', block, [x, norm, wg, wu, wd, wo]);
});
