import { fastExp } from './fast-exp.js';
/**
 * Element-wise kernels of the preference and RL losses (DPO, reward model, PPO): each forward
 * with its backward beside it. Backwards add into `into`.
 */

/** log σ(x) = −log(1 + e^(−x)), stable for large |x|. */
export function logSigmoidForward(x: Float32Array, out: Float32Array): void {
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    out[i] = Math.min(v, 0) - Math.log1p(fastExp(-Math.abs(v)));
  }
}

/** d log σ(x)/dx = σ(−x). */
export function logSigmoidBackward(x: Float32Array, grad: Float32Array, into: Float32Array): void {
  for (let i = 0; i < x.length; i++) into[i] += grad[i] * sigmoidOf(-x[i]);
}

/** σ(x), stable for large |x|. */
export function sigmoidOf(v: number): number {
  if (v >= 0) return 1 / (1 + fastExp(-v));
  const e = fastExp(v);
  return e / (1 + e);
}

export function expForward(x: Float32Array, out: Float32Array): void {
  for (let i = 0; i < x.length; i++) out[i] = fastExp(x[i]);
}

/** d eˣ/dx = eˣ, read from the forward's output. */
export function expBackward(out: Float32Array, grad: Float32Array, into: Float32Array): void {
  for (let i = 0; i < out.length; i++) into[i] += grad[i] * out[i];
}

export function clampForward(x: Float32Array, lo: number, hi: number, out: Float32Array): void {
  for (let i = 0; i < x.length; i++) out[i] = Math.min(Math.max(x[i], lo), hi);
}

/** The gradient passes where lo ≤ x ≤ hi, as PyTorch's clamp. */
export function clampBackward(x: Float32Array, lo: number, hi: number, grad: Float32Array, into: Float32Array): void {
  for (let i = 0; i < x.length; i++) if (x[i] >= lo && x[i] <= hi) into[i] += grad[i];
}

export function maximumForward(a: Float32Array, b: Float32Array, out: Float32Array): void {
  for (let i = 0; i < a.length; i++) out[i] = a[i] >= b[i] ? a[i] : b[i];
}

/** The larger input takes the gradient; a tie splits it in half, as PyTorch's maximum. */
export function maximumBackward(a: Float32Array, b: Float32Array, grad: Float32Array, intoA: Float32Array | null, intoB: Float32Array | null): void {
  for (let i = 0; i < a.length; i++) {
    const wa = a[i] > b[i] ? 1 : a[i] < b[i] ? 0 : 0.5;
    if (intoA) intoA[i] += grad[i] * wa;
    if (intoB) intoB[i] += grad[i] * (1 - wa);
  }
}

/**
 * log(1 − eˣ) for x < 0 (the log-probability of "not this"), by Mächler's rule: log(−expm1(x))
 * near 0, log1p(−eˣ) further out. x ≥ 0 gives −∞ or NaN, as the formula does.
 */
export function log1mexpForward(x: Float32Array, out: Float32Array): void {
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    out[i] = v > -Math.LN2 ? Math.log(-Math.expm1(v)) : Math.log1p(-fastExp(v));
  }
}

/** d log(1 − eˣ)/dx = −eˣ/(1 − eˣ) = −1/(e^(−x) − 1). */
export function log1mexpBackward(x: Float32Array, grad: Float32Array, into: Float32Array): void {
  for (let i = 0; i < x.length; i++) into[i] -= grad[i] / Math.expm1(-x[i]);
}

/** out[segments[i]] += x[i]; entries with a negative segment are left out. */
export function segmentSumForward(x: Float32Array, segments: Int32Array, out: Float32Array): void {
  for (let i = 0; i < x.length; i++) {
    const s = segments[i];
    if (s >= 0) out[s] += x[i];
  }
}

export function segmentSumBackward(segments: Int32Array, grad: Float32Array, into: Float32Array): void {
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i];
    if (s >= 0) into[i] += grad[s];
  }
}

/** Entropy −Σ p log p of the softmax of each row of length `v` (PPO logs it; no gradient). */
export function rowEntropy(x: Float32Array, v: number, out: Float32Array): void {
  for (let r = 0; r < out.length; r++) {
    const o = r * v;
    let max = -Infinity;
    for (let j = 0; j < v; j++) if (x[o + j] > max) max = x[o + j];
    let z = 0;
    let s = 0;
    for (let j = 0; j < v; j++) {
      const d = x[o + j] - max;
      const e = fastExp(d);
      z += e;
      s += e * d;
    }
    // H = log Z − Σ e·d / Z, with d = x − max and Z = Σ e.
    out[r] = Math.log(z) - s / z;
  }
}
