import { SimdKernels, simd } from '../wasm/simd.js';

/**
 * RMSNorm over rows of length `c`: y = x / sqrt(mean(x²) + eps) · w. Stores 1/rms per row in
 * `invRms` for the backward pass.
 */
export function rmsNormForward(x: Float32Array, w: Float32Array, c: number, eps: number, out: Float32Array, invRms: Float32Array | null): void {
  const vector = SimdKernels.rowsFit(c) ? simd() : null;
  if (vector) return vector.rmsNormForward(x, w, c, eps, out, invRms);
  const rows = x.length / c;
  for (let r = 0; r < rows; r++) {
    const o = r * c;
    let ss = 0;
    for (let j = 0; j < c; j++) ss += x[o + j] * x[o + j];
    const inv = 1 / Math.sqrt(ss / c + eps);
    if (invRms) invRms[r] = inv;
    for (let j = 0; j < c; j++) out[o + j] = x[o + j] * inv * w[j];
  }
}

/**
 * With n = x·inv: dx = inv·(g·w − n·mean(g·w·n)), dw = Σ_rows g·n.
 */
export function rmsNormBackward(
  x: Float32Array,
  w: Float32Array,
  c: number,
  invRms: Float32Array,
  grad: Float32Array,
  xInto: Float32Array | null,
  wInto: Float32Array | null,
): void {
  const rows = x.length / c;
  const vector = xInto && SimdKernels.rowsFit(c) ? simd() : null;
  if (vector && xInto) vector.rmsNormBackwardInput(x, w, c, invRms, grad, xInto);
  for (let r = 0; r < rows; r++) {
    const o = r * c;
    const inv = invRms[r];
    if (wInto) for (let j = 0; j < c; j++) wInto[j] += grad[o + j] * x[o + j] * inv;
    if (xInto && !vector) {
      let dot = 0;
      for (let j = 0; j < c; j++) dot += grad[o + j] * w[j] * x[o + j];
      const k = (dot * inv * inv) / c;
      for (let j = 0; j < c; j++) xInto[o + j] += inv * (grad[o + j] * w[j] - x[o + j] * k);
    }
  }
}
