import { clampBackward, clampForward } from '../../backend/kernels/pointwise.js';
import { Tensor, record } from '../tensor.js';

/** min(max(x, lo), hi) element-wise; the gradient passes inside [lo, hi] (PPO's clipping). */
export function clamp(x: Tensor, lo: number, hi: number): Tensor {
  if (!(lo <= hi)) throw new Error(`clamp: lower bound ${lo} is above upper bound ${hi}`);
  const out = Tensor.zeros(x.shape);
  clampForward(x.data, lo, hi, out.data);
  const [xData, xg] = [x.data, x.autograd];
  return record(out, 'clamp', [x], (g, sink) => {
    const gx = sink.acc(xg);
    if (gx) clampBackward(xData, lo, hi, g, gx);
  });
}
