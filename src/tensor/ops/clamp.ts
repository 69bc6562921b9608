import { clampBackward, clampForward } from '../../backend/kernels/pointwise.js';
import { Tensor, record } from '../tensor.js';

/** min(max(x, lo), hi) element-wise; the gradient passes inside [lo, hi] (PPO's clipping). */
export function clamp(x: Tensor, lo: number, hi: number): Tensor {
  if (!(lo <= hi)) throw new Error(`clamp: lower bound ${lo} is above upper bound ${hi}`);
  const out = Tensor.zeros(x.shape);
  clampForward(x.data, lo, hi, out.data);
  return record(out, 'clamp', [x], (g, sink) => {
    const gx = sink.acc(x);
    if (gx) clampBackward(x.data, lo, hi, g, gx);
  });
}
