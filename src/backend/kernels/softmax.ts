import { fastExp } from './fast-exp.js';
/** Row-wise softmax over rows of length `n`, numerically stable. */
export function softmaxForward(x: Float32Array, n: number, out: Float32Array): void {
  const rows = x.length / n;
  for (let r = 0; r < rows; r++) {
    const o = r * n;
    let max = -Infinity;
    for (let j = 0; j < n; j++) if (x[o + j] > max) max = x[o + j];
    let sum = 0;
    for (let j = 0; j < n; j++) {
      const e = fastExp(x[o + j] - max);
      out[o + j] = e;
      sum += e;
    }
    const inv = 1 / sum;
    for (let j = 0; j < n; j++) out[o + j] *= inv;
  }
}

/** dx = y · (g − Σ g·y), row by row. */
export function softmaxBackward(y: Float32Array, grad: Float32Array, n: number, into: Float32Array): void {
  const rows = y.length / n;
  for (let r = 0; r < rows; r++) {
    const o = r * n;
    let dot = 0;
    for (let j = 0; j < n; j++) dot += grad[o + j] * y[o + j];
    for (let j = 0; j < n; j++) into[o + j] += y[o + j] * (grad[o + j] - dot);
  }
}
