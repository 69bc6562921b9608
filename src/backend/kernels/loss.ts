import { fastExp } from './fast-exp.js';
/** Log-sum-exp of each row of length `v`. */
export function rowLogSumExp(x: Float32Array, v: number, out: Float32Array): void {
  const rows = out.length;
  for (let r = 0; r < rows; r++) {
    const o = r * v;
    let max = -Infinity;
    for (let j = 0; j < v; j++) if (x[o + j] > max) max = x[o + j];
    let sum = 0;
    for (let j = 0; j < v; j++) sum += fastExp(x[o + j] - max);
    out[r] = max + Math.log(sum);
  }
}

/**
 * log p(target) per row: x[target] − logsumexp(x). Rows whose target is negative (the
 * ignore index) get 0.
 */
export function targetLogprobs(x: Float32Array, v: number, targets: Int32Array, lse: Float32Array, out: Float32Array): void {
  for (let r = 0; r < targets.length; r++) {
    const t = targets[r];
    out[r] = t < 0 ? 0 : x[r * v + t] - lse[r];
  }
}

/**
 * Gradient of Σ_r g[r]·log p(target_r) with respect to the logits:
 * g[r]·(onehot(target) − softmax(x_r)). Ignored rows contribute nothing.
 */
export function targetLogprobsBackward(
  x: Float32Array,
  v: number,
  targets: Int32Array,
  lse: Float32Array,
  grad: Float32Array,
  into: Float32Array,
): void {
  for (let r = 0; r < targets.length; r++) {
    const t = targets[r];
    const g = grad[r];
    if (t < 0 || g === 0) continue;
    const o = r * v;
    const l = lse[r];
    for (let j = 0; j < v; j++) into[o + j] -= g * fastExp(x[o + j] - l);
    into[o + t] += g;
  }
}
