import { SimdKernels, simd } from '../wasm/simd.js';
import { fastExp } from './fast-exp.js';
import type { Backend } from '../backend.js';
import type { GradInto } from './grad-into.js';

/**
 * Scaled dot-product attention over [batch, tokens, heads, headDim] buffers, head by head
 * through the backend's GEMM with strided rows (no transposes are materialised).
 *
 * Keys and values may live in a larger cache: batch b's keys start at b·kvCapacity rows and the
 * first `keys` rows are valid. Query i sits at key position `queryOffset + i`; with `causal`
 * it sees keys 0..queryOffset+i. `keyMask` (0 = padding) and `segments` (packed sequences:
 * only equal ids see each other) restrict further.
 */
export interface AttentionShape {
  batch: number;
  queries: number;
  keys: number;
  kvCapacity: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  queryOffset: number;
  causal: boolean;
  keyMask: Uint8Array | null;
  segments: Int32Array | null;
}

/** Which keys query i of batch b may see, as the contiguous run [0, end) minus masked ones. */
function visibleEnd(s: AttentionShape, i: number): number {
  return s.causal ? Math.min(s.keys, s.queryOffset + i + 1) : s.keys;
}

function maskScores(s: AttentionShape, b: number, scores: Float32Array): void {
  const { queries: T, keys: S } = s;
  for (let i = 0; i < T; i++) {
    const row = i * S;
    // Keys past `end` are left for softmaxRows, which zeroes them.
    const end = visibleEnd(s, i);
    if (s.keyMask) {
      const m = b * S;
      for (let j = 0; j < end; j++) if (s.keyMask[m + j] === 0) scores[row + j] = -Infinity;
    }
    if (s.segments) {
      const base = b * S;
      const own = s.segments[base + s.queryOffset + i];
      for (let j = 0; j < end; j++) if (s.segments[base + j] !== own) scores[row + j] = -Infinity;
    }
  }
}

/**
 * Softmax of each row in place; a row with no visible key becomes all zeros. Keys past a row's
 * causal end are masked for certain, so only [0, end) is exponentiated and the rest set to 0.
 */
function softmaxRows(s: AttentionShape, scores: Float32Array): void {
  const { queries: T, keys: S } = s;
  const vector = simd();
  if (vector) {
    vector.softmaxRows(scores, T, S, s.queryOffset + 1, s.causal);
    return;
  }
  for (let r = 0; r < T; r++) {
    const o = r * S;
    const end = visibleEnd(s, r);
    scores.fill(0, o + end, o + S);
    let max = -Infinity;
    for (let j = 0; j < end; j++) if (scores[o + j] > max) max = scores[o + j];
    if (max === -Infinity) {
      scores.fill(0, o, o + end);
      continue;
    }
    let sum = 0;
    for (let j = 0; j < end; j++) {
      const e = fastExp(scores[o + j] - max);
      scores[o + j] = e;
      sum += e;
    }
    const inv = 1 / sum;
    for (let j = 0; j < end; j++) scores[o + j] *= inv;
  }
}

/** Row strides of the [batch, tokens, heads, headDim] query and key/value buffers, and 1/√d. */
function strides(s: AttentionShape): { qRow: number; kvRow: number; scale: number } {
  return { qRow: s.heads * s.headDim, kvRow: s.kvHeads * s.headDim, scale: 1 / Math.sqrt(s.headDim) };
}

/**
 * Visits every (batch, key/value head) with the offsets of its key/value head's first row and of
 * the first of its query heads' [queries, keys] probability blocks. The `group` = heads/kvHeads
 * query heads that share a key/value head (grouped-query attention) are consecutive, so their
 * blocks form one [group·queries, keys] matrix. The products whose output has a row per key or
 * per query-and-key (q·kᵀ, dO·vᵀ, Pᵀ·dO) run once per group on head-major copies: per head, with
 * 256 strided rows of 64, they ran at 50–80 GFLOP/s. Products with a [queries, headDim] output
 * per head run per head, straight into the strided buffers, which is as fast as grouping them
 * and saves copying back.
 */
function forEachGroup(s: AttentionShape, visit: (b: number, h0: number, kvOff: number, pOff: number) => void): void {
  const { batch: B, queries: T, keys: S, heads: H, kvHeads: HKV, headDim: D, kvCapacity } = s;
  const group = H / HKV;
  const { kvRow } = strides(s);
  for (let b = 0; b < B; b++) {
    for (let kvh = 0; kvh < HKV; kvh++) {
      const h0 = kvh * group;
      visit(b, h0, b * kvCapacity * kvRow + kvh * D, (b * H + h0) * T * S);
    }
  }
}

/** Offset of the first row of query head h of batch b in a [batch, tokens, heads, headDim] buffer. */
function queryOffset(s: AttentionShape, b: number, h: number): number {
  return b * s.queries * s.heads * s.headDim + h * s.headDim;
}

/**
 * Copies the rows of query heads h0..h0+group−1 of batch b out of a [batch, tokens, heads,
 * headDim] buffer into `into`, head-major: [group, tokens, headDim], contiguous.
 */
function gatherHeads(s: AttentionShape, from: Float32Array, b: number, h0: number, into: Float32Array): void {
  const { queries: T, headDim: D } = s;
  const { qRow } = strides(s);
  const group = s.heads / s.kvHeads;
  for (let g = 0; g < group; g++) {
    const first = queryOffset(s, b, h0 + g);
    for (let t = 0; t < T; t++) {
      const src = first + t * qRow;
      into.set(from.subarray(src, src + D), (g * T + t) * D);
    }
  }
}

/** Applies masks and softmax to each of a group's [queries, keys] score blocks. */
function groupSoftmax(s: AttentionShape, b: number, p: Float32Array, group: number): void {
  const block = s.queries * s.keys;
  for (let g = 0; g < group; g++) {
    const scores = p.subarray(g * block, (g + 1) * block);
    maskScores(s, b, scores);
    softmaxRows(s, scores);
  }
}

/**
 * out = softmax(q·kᵀ/√d + mask)·v. When `probs` is given ([batch, heads, queries, keys]) the
 * probabilities are kept there for the backward pass.
 */
export function attentionForward(
  be: Backend,
  s: AttentionShape,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  out: Float32Array,
  probs: Float32Array | null,
): void {
  const { queries: T, keys: S, headDim: D } = s;
  const { qRow, kvRow, scale } = strides(s);
  const group = s.heads / s.kvHeads;
  const rows = group * T;
  const scratch = probs ? null : new Float32Array(rows * S);
  const qg = new Float32Array(rows * D);
  forEachGroup(s, (b, h0, kvOff, pOff) => {
    const p = probs ? probs.subarray(pOff, pOff + rows * S) : (scratch as Float32Array);
    gatherHeads(s, q, b, h0, qg);
    be.gemm({ transA: false, transB: true, m: rows, n: S, k: D, alpha: scale, a: qg, lda: D, b: k.subarray(kvOff), ldb: kvRow, beta: 0, c: p, ldc: S });
    groupSoftmax(s, b, p, group);
    for (let g = 0; g < group; g++) {
      const qOff = queryOffset(s, b, h0 + g);
      be.gemm({ transA: false, transB: false, m: T, n: D, k: S, alpha: 1, a: p.subarray(g * T * S), lda: S, b: v.subarray(kvOff), ldb: kvRow, beta: 0, c: out.subarray(qOff), ldc: qRow });
    }
  });
}

/** Gradients of the attention inputs from the output gradient and the kept probabilities. */
export function attentionBackward(
  be: Backend,
  s: AttentionShape,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  probs: Float32Array,
  grad: Float32Array,
  qInto: GradInto | null,
  kInto: GradInto | null,
  vInto: GradInto | null,
): void {
  const { queries: T, keys: S, headDim: D } = s;
  const { qRow, kvRow, scale } = strides(s);
  const group = s.heads / s.kvHeads;
  const rows = group * T;
  const dp = new Float32Array(rows * S);
  const gg = new Float32Array(rows * D);
  const vector = SimdKernels.rowsFit(S) ? simd() : null;
  forEachGroup(s, (b, h0, kvOff, pOff) => {
    const p = probs.subarray(pOff, pOff + rows * S);
    gatherHeads(s, grad, b, h0, gg);
    if (vInto) {
      // Each (batch, key/value head) block of dV is written by this one product.
      be.gemm({ transA: true, transB: false, m: S, n: D, k: rows, alpha: 1, a: p, lda: S, b: gg, ldb: D, beta: vInto.beta, c: vInto.grad.subarray(kvOff), ldc: kvRow });
    }
    if (!qInto && !kInto) return;
    be.gemm({ transA: false, transB: true, m: rows, n: S, k: D, alpha: 1, a: gg, lda: D, b: v.subarray(kvOff), ldb: kvRow, beta: 0, c: dp, ldc: S });
    // dS = P ∘ (dP − Σ_j dP·P), then the 1/√d of the forward scores.
    if (vector) vector.softmaxBackward(p, dp, rows, S, scale);
    else for (let i = 0; i < rows; i++) {
      const o = i * S;
      let dot = 0;
      for (let j = 0; j < S; j++) dot += dp[o + j] * p[o + j];
      for (let j = 0; j < S; j++) dp[o + j] = p[o + j] * (dp[o + j] - dot) * scale;
    }
    for (let g = 0; g < group; g++) {
      const qOff = queryOffset(s, b, h0 + g);
      const ds = dp.subarray(g * T * S);
      if (qInto) {
        be.gemm({ transA: false, transB: false, m: T, n: D, k: S, alpha: 1, a: ds, lda: S, b: k.subarray(kvOff), ldb: kvRow, beta: qInto.beta, c: qInto.grad.subarray(qOff), ldc: qRow });
      }
      if (kInto) {
        // The group's heads add up into one key block: only the first may overwrite it.
        const beta = g === 0 ? kInto.beta : 1;
        be.gemm({ transA: true, transB: false, m: S, n: D, k: T, alpha: 1, a: ds, lda: S, b: q.subarray(qOff), ldb: qRow, beta, c: kInto.grad.subarray(kvOff), ldc: kvRow });
      }
    }
  });
}
