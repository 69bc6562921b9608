import { widenToScratch } from '../../backend/kernels/bf16.js';
import { backend } from '../../backend/select.js';
import { Tensor, needsGrad, record, saved } from '../tensor.js';
import type { AutogradMeta } from '../tensor.js';
import { add } from './elementwise.js';

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
}

/**
 * op(A)·op(B) for a 2-D B. A may carry leading batch dimensions when it is not transposed
 * ([..., M, K] is treated as one [M', K] matrix); with both 3-D and equal batch, each pair is
 * multiplied.
 *
 * B may be a frozen weight stored as bf16 (2-D only): it is widened into the shared scratch
 * buffer for the forward product, and again in backward for dA, so no float32 copy outlives
 * the gemm that reads it.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  if (a.ndim === 3 && b.ndim === 3) return batchedMatmul(a, b, transA, transB);
  if (a.bf16) throw new Error(`matmul: only the second operand (a weight) may be stored as bf16, got A ${a}`);
  if (b.ndim !== 2) throw new Error(`matmul: B must be 2-D, got ${b}`);
  if (a.ndim < 2 || (transA && a.ndim !== 2)) throw new Error(`matmul: A must be 2-D (or batched and not transposed), got ${a}`);
  const aRows = a.size / a.lastDim;
  const [m, kA] = transA ? [a.lastDim, aRows] : [aRows, a.lastDim];
  const [kB, n] = transB ? [b.shape[1], b.shape[0]] : [b.shape[0], b.shape[1]];
  if (kA !== kB) throw new Error(`matmul: inner sizes differ: ${a} · ${b} (transA ${transA}, transB ${transB})`);
  const outShape = transA ? [m, n] : [...a.shape.slice(0, -1), n];
  const out = Tensor.uninitialized(outShape);
  gemm2d(a.data, valuesOf(b.bf16 ?? b.data), out.data, m, n, kA, transA, transB, 0);
  return recordMatmul(out, a, b, null, m, n, kA, transA, transB);
}

/**
 * Records a 2-D product (plus a bias row when given) for backward: dA and dB overwrite a new
 * gradient buffer or add to an existing one, and the bias gets the column sums of dC.
 */
function recordMatmul(out: Tensor, a: Tensor, b: Tensor, bias: Tensor | null, m: number, n: number, k: number, transA: boolean, transB: boolean): Tensor {
  // dA needs B: a bf16 B is kept as bf16 and widened again when backward runs.
  const { aData, bData, ag, bg } = keepForBackward(a, b);
  const biasMeta = bias ? bias.autograd : null;
  return record(out, bias ? 'linear' : 'matmul', bias ? [a, b, bias] : [a, b], (g, sink) => {
    const ga = sink.into(ag);
    const gb = sink.into(bg);
    if (ga) gradA(g, valuesOf(saved(bData, 'matmul B')), ga.grad, m, n, k, transA, transB, ga.beta);
    if (gb) gradB(g, saved(aData, 'matmul A'), gb.grad, m, n, k, transA, transB, gb.beta);
    const gBias = biasMeta ? sink.acc(biasMeta) : null;
    if (gBias) for (let r = 0; r < m; r++) for (let j = 0; j < n; j++) gBias[j] += g[r * n + j];
  });
}

function batchedMatmul(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
  const batch = a.shape[0];
  if (a.bf16 || b.bf16) throw new Error(`matmul: batched operands cannot be stored as bf16: ${a} · ${b}`);
  if (b.shape[0] !== batch) throw new Error(`matmul: batch sizes differ: ${a} · ${b}`);
  const [m, kA] = transA ? [a.shape[2], a.shape[1]] : [a.shape[1], a.shape[2]];
  const [kB, n] = transB ? [b.shape[2], b.shape[1]] : [b.shape[1], b.shape[2]];
  if (kA !== kB) throw new Error(`matmul: inner sizes differ: ${a} · ${b}`);
  const out = Tensor.zeros([batch, m, n]);
  const sa = m * kA;
  const sb = kA * n;
  const sc = m * n;
  for (let i = 0; i < batch; i++) {
    gemm2d(a.data.subarray(i * sa), b.data.subarray(i * sb), out.data.subarray(i * sc), m, n, kA, transA, transB, 0);
  }
  const { aData, bData, ag, bg } = keepForBackward(a, b);
  return record(out, 'matmul', [a, b], (g, sink) => {
    const ga = sink.acc(ag);
    const gb = sink.acc(bg);
    for (let i = 0; i < batch; i++) {
      const gi = g.subarray(i * sc);
      if (ga) gradA(gi, valuesOf(saved(bData, 'matmul B')).subarray(i * sb), ga.subarray(i * sa), m, n, kA, transA, transB, 1);
      if (gb) gradB(gi, saved(aData, 'matmul A').subarray(i * sa), gb.subarray(i * sb), m, n, kA, transA, transB, 1);
    }
  });
}

/**
 * What matmul's backward keeps: dA needs B and dB needs A, so A's values stay only if B trains
 * and B's only if A does. The input of a frozen linear layer is not kept: its backward needs
 * just the weight.
 */
/** Float32 values to multiply with: a bf16 weight widened into the shared scratch (read it at once). */
function valuesOf(v: Float32Array | Uint16Array): Float32Array {
  return v instanceof Uint16Array ? widenToScratch(v) : v;
}

function keepForBackward(a: Tensor, b: Tensor): { aData: Float32Array | null; bData: Float32Array | Uint16Array | null; ag: AutogradMeta; bg: AutogradMeta } {
  return { aData: needsGrad(b) ? a.data : null, bData: needsGrad(a) ? (b.bf16 ?? b.data) : null, ag: a.autograd, bg: b.autograd };
}

function gemm2d(a: Float32Array, b: Float32Array, c: Float32Array, m: number, n: number, k: number, transA: boolean, transB: boolean, beta: number): void {
  backend().gemm({ transA, transB, m, n, k, alpha: 1, a, lda: transA ? m : k, b, ldb: transB ? k : n, beta, c, ldc: n });
}

/** dA from dC: dC·op(B)ᵀ, or its transpose when A was transposed; added to `into` when beta is 1. */
function gradA(g: Float32Array, b: Float32Array, into: Float32Array, m: number, n: number, k: number, transA: boolean, transB: boolean, beta: 0 | 1): void {
  const be = backend();
  const ldb = transB ? k : n;
  if (!transA) be.gemm({ transA: false, transB: !transB, m, n: k, k: n, alpha: 1, a: g, lda: n, b, ldb, beta, c: into, ldc: k });
  else be.gemm({ transA: transB, transB: true, m: k, n: m, k: n, alpha: 1, a: b, lda: ldb, b: g, ldb: n, beta, c: into, ldc: m });
}

/** dB from dC: op(A)ᵀ·dC, or its transpose when B was transposed; added to `into` when beta is 1. */
function gradB(g: Float32Array, a: Float32Array, into: Float32Array, m: number, n: number, k: number, transA: boolean, transB: boolean, beta: 0 | 1): void {
  const be = backend();
  const lda = transA ? m : k;
  if (!transB) be.gemm({ transA: !transA, transB: false, m: k, n, k: m, alpha: 1, a, lda, b: g, ldb: n, beta, c: into, ldc: n });
  else be.gemm({ transA: true, transB: transA, m: n, n: k, k: m, alpha: 1, a: g, lda: n, b: a, ldb: lda, beta, c: into, ldc: k });
}

/**
 * y = x·Wᵀ + bias for W stored [out, in] as Hugging Face stores it. The bias is copied into
 * each output row and the product added to it (beta 1): no separate broadcast pass.
 */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  if (!bias) return matmul(x, weight, { transB: true });
  const n = weight.shape[0];
  // Other shapes (and a bf16 input, which matmul refuses) take the general path and its errors.
  if (x.bf16 || bias.bf16 || bias.ndim !== 1 || bias.size !== n || weight.ndim !== 2 || x.ndim < 2 || x.lastDim !== weight.shape[1]) {
    return add(matmul(x, weight, { transB: true }), bias);
  }
  const m = x.size / x.lastDim;
  const out = Tensor.uninitialized([...x.shape.slice(0, -1), n]);
  for (let r = 0; r < m; r++) out.data.set(bias.data, r * n);
  gemm2d(x.data, valuesOf(weight.bf16 ?? weight.data), out.data, m, n, x.lastDim, false, true, 1);
  return recordMatmul(out, x, weight, bias, m, n, x.lastDim, false, true);
}
