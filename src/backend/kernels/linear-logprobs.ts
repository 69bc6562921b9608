import { simd } from '../wasm/simd.js';
import { fastExp } from './fast-exp.js';
import type { Backend } from '../backend.js';

/** Logits computed at once: bounds the scratch to ~160 MB whatever the vocabulary. */
const LOGIT_BUDGET = 40 * 1024 * 1024;
/**
 * Chunks are a multiple of this many rows: sgemm over a 151,936-entry vocabulary runs at 144
 * GFLOP/s with 110 rows, 165 with 128 and 191 with 256 (bench machine, 2 threads).
 */
const ROW_MULTIPLE = 64;

export function logitChunkRows(vocab: number, rows: number): number {
  const fit = Math.max(1, Math.floor(LOGIT_BUDGET / vocab));
  const rounded = fit >= ROW_MULTIPLE ? fit - (fit % ROW_MULTIPLE) : fit;
  return Math.min(rows, rounded);
}

/**
 * Visits the rows of logits = h·Wᵀ a chunk at a time, so the full [rows, vocab] matrix never
 * exists: `visit(r0, n, logits)` gets rows r0..r0+n−1 in `logits` (n × vocab, row-major), which
 * it may overwrite.
 */
function forEachLogitChunk(
  be: Backend,
  h: Float32Array,
  w: Float32Array,
  rows: number,
  hidden: number,
  vocab: number,
  visit: (r0: number, n: number, logits: Float32Array) => void,
): void {
  const chunk = logitChunkRows(vocab, rows);
  const logits = new Float32Array(chunk * vocab);
  for (let r0 = 0; r0 < rows; r0 += chunk) {
    const n = Math.min(chunk, rows - r0);
    be.gemm({ transA: false, transB: true, m: n, n: vocab, k: hidden, alpha: 1, a: h.subarray(r0 * hidden), lda: hidden, b: w, ldb: hidden, beta: 0, c: logits, ldc: vocab });
    visit(r0, n, logits);
  }
}

/**
 * log p(target) per row for logits = h·Wᵀ, computed a chunk of rows at a time so the full
 * [rows, vocab] matrix never exists. Rows with a negative target give 0.
 *
 * When `dh` is given, it also receives d log p(target_r)/d h_r for every row (the gradient is
 * known here up to each row's upstream factor, so the backward pass only scales it):
 * dh_r = (onehot(t_r) − softmax_r)·W.
 */
export function linearLogprobsForward(
  be: Backend,
  h: Float32Array,
  w: Float32Array,
  rows: number,
  hidden: number,
  vocab: number,
  targets: Int32Array,
  out: Float32Array,
  dh: Float32Array | null,
): void {
  forEachLogitChunk(be, h, w, rows, hidden, vocab, (r0, n, logits) => {
    for (let i = 0; i < n; i++) {
      const t = targets[r0 + i];
      const o = i * vocab;
      if (t < 0) {
        out[r0 + i] = 0;
        if (dh) logits.fill(0, o, o + vocab);
        continue;
      }
      out[r0 + i] = dh ? rowToLogitGrad(logits, o, vocab, t, 1) : logits[o + t] - rowLse(logits, o, vocab);
    }
    if (dh) {
      be.gemm({ transA: false, transB: false, m: n, n: hidden, k: vocab, alpha: 1, a: logits, lda: vocab, b: w, ldb: hidden, beta: 0, c: dh.subarray(r0 * hidden), ldc: hidden });
    }
  });
}

/**
 * The weight's gradient, Σ_r g_r·(onehot(t_r) − softmax_r)ᵀ·h_r, by recomputing each chunk's
 * logits (only needed when W itself trains, e.g. full fine-tuning of a tied embedding).
 * With `dhInto`, the input gradient g_r·(onehot − softmax)·W is added too.
 */
export function linearLogprobsBackward(
  be: Backend,
  h: Float32Array,
  w: Float32Array,
  rows: number,
  hidden: number,
  vocab: number,
  targets: Int32Array,
  grad: Float32Array,
  wInto: Float32Array | null,
  hInto: Float32Array | null,
): void {
  forEachLogitChunk(be, h, w, rows, hidden, vocab, (r0, n, logits) => {
    for (let i = 0; i < n; i++) {
      const t = targets[r0 + i];
      const g = grad[r0 + i];
      const o = i * vocab;
      if (t < 0 || g === 0) {
        logits.fill(0, o, o + vocab);
        continue;
      }
      rowToLogitGrad(logits, o, vocab, t, g);
    }
    if (wInto) {
      be.gemm({ transA: true, transB: false, m: vocab, n: hidden, k: n, alpha: 1, a: logits, lda: vocab, b: h.subarray(r0 * hidden), ldb: hidden, beta: 1, c: wInto, ldc: hidden });
    }
    if (hInto) {
      be.gemm({ transA: false, transB: false, m: n, n: hidden, k: vocab, alpha: 1, a: logits, lda: vocab, b: w, ldb: hidden, beta: 1, c: hInto.subarray(r0 * hidden), ldc: hidden });
    }
  });
}

/** log Σ exp over x[o, o+n), shifted by the row's max. */
function rowLse(x: Float32Array, o: number, n: number): number {
  const vector = simd();
  if (vector) return vector.logSumExpRow(x, o, n);
  let max = -Infinity;
  for (let j = 0; j < n; j++) if (x[o + j] > max) max = x[o + j];
  let sum = 0;
  for (let j = 0; j < n; j++) sum += fastExp(x[o + j] - max);
  return max + Math.log(sum);
}

/**
 * Turns one row of logits into g·(onehot(t) − softmax) in place and returns log p(t): one
 * exponential per entry (kept in the row, then scaled), not one for the sum and one for the
 * gradient — over a 151,936-entry vocabulary that is most of the loss's own time.
 */
function rowToLogitGrad(logits: Float32Array, o: number, n: number, t: number, g: number): number {
  const vector = simd();
  if (vector) {
    const target = logits[o + t];
    const { max, sum } = vector.expScaleRow(logits, o, n, (sum) => -g / sum);
    logits[o + t] += g;
    return target - max - Math.log(sum);
  }
  let max = -Infinity;
  for (let j = 0; j < n; j++) if (logits[o + j] > max) max = logits[o + j];
  const target = logits[o + t];
  let sum = 0;
  for (let j = 0; j < n; j++) {
    const e = fastExp(logits[o + j] - max);
    logits[o + j] = e;
    sum += e;
  }
  const k = -g / sum;
  for (let j = 0; j < n; j++) logits[o + j] *= k;
  logits[o + t] += g;
  return target - max - Math.log(sum);
}
