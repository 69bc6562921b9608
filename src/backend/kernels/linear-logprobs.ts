import { helperThread } from '../threads/helper-thread.js';
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

let scratch = new Float32Array(new SharedArrayBuffer(0));

/**
 * The buffer chunks of logits are computed into: shared, so that the helper thread can take half
 * of a chunk's rows, and kept from call to call. A new one per call stayed alive until the
 * helper's own garbage collection, which its light work rarely triggers: 155 MB more at peak.
 */
function logitScratch(floats: number): Float32Array {
  if (scratch.length < floats) scratch = new Float32Array(new SharedArrayBuffer(floats * 4));
  return scratch.subarray(0, floats);
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
  const logits = logitScratch(chunk * vocab);
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
  const ones = dh ? new Float32Array(logitChunkRows(vocab, rows)).fill(1) : null;
  forEachLogitChunk(be, h, w, rows, hidden, vocab, (r0, n, logits) => {
    chunkRows(logits, vocab, n, targets.subarray(r0, r0 + n), ones, out.subarray(r0, r0 + n));
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
    chunkRows(logits, vocab, n, targets.subarray(r0, r0 + n), grad.subarray(r0, r0 + n), null);
    if (wInto) {
      be.gemm({ transA: true, transB: false, m: vocab, n: hidden, k: n, alpha: 1, a: logits, lda: vocab, b: h.subarray(r0 * hidden), ldb: hidden, beta: 1, c: wInto, ldc: hidden });
    }
    if (hInto) {
      be.gemm({ transA: false, transB: false, m: n, n: hidden, k: vocab, alpha: 1, a: logits, lda: vocab, b: w, ldb: hidden, beta: 1, c: hInto.subarray(r0 * hidden), ldc: hidden });
    }
  });
}

/**
 * One chunk's rows through `logitRows`, half of them on the helper thread when it is ready.
 * `out` (when given) receives log p(target) per row.
 */
function chunkRows(logits: Float32Array, vocab: number, n: number, targets: Int32Array, grads: Float32Array | null, out: Float32Array | null): void {
  const results = new Float64Array(new SharedArrayBuffer(n * 8));
  const helper = simd() && n > 1 ? helperThread() : null;
  if (helper) {
    const half = n >> 1;
    const done = helper.split({ kind: 'logit-rows', logits, vocab, from: half, to: n, targets, grads, out: results }, () =>
      logitRows(logits, vocab, 0, half, targets, grads, results),
    );
    if (!done) logitRows(logits, vocab, half, n, targets, grads, results);
  } else {
    logitRows(logits, vocab, 0, n, targets, grads, results);
  }
  if (out) for (let i = 0; i < n; i++) out[i] = results[i];
}

/**
 * Rows [from, to) of a chunk of logits (row i at i·vocab): out[i] = log p(targets[i]), 0 for a
 * negative target. With `grads`, row i also becomes grads[i]·(onehot(t) − softmax), or 0 where
 * the target is negative or the factor 0. Both threads run this on their halves.
 */
export function logitRows(logits: Float32Array, vocab: number, from: number, to: number, targets: Int32Array, grads: Float32Array | null, out: Float64Array): void {
  for (let i = from; i < to; i++) {
    const t = targets[i];
    const o = i * vocab;
    if (t < 0 || (grads && grads[i] === 0)) {
      out[i] = 0;
      if (grads) logits.fill(0, o, o + vocab);
      continue;
    }
    out[i] = grads ? rowToLogitGrad(logits, o, vocab, t, grads[i]) : logits[o + t] - rowLse(logits, o, vocab);
  }
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
