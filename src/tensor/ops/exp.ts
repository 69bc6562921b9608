import { expBackward, expForward } from '../../backend/kernels/pointwise.js';
import { Tensor, record } from '../tensor.js';

/** eˣ element-wise (PPO's probability ratio exp(log π − log π_old)). */
export function exp(x: Tensor): Tensor {
  const out = Tensor.zeros(x.shape);
  expForward(x.data, out.data);
  // d eˣ = eˣ: backward keeps the output, not x.
  const [y, xg] = [out.data, x.autograd];
  return record(out, 'exp', [x], (g, sink) => {
    const gx = sink.acc(xg);
    if (gx) expBackward(y, g, gx);
  });
}
