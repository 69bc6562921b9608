import { log1mexpBackward, log1mexpForward } from '../../backend/kernels/pointwise.js';
import { Tensor, record } from '../tensor.js';

/** log(1 − eˣ) element-wise for x < 0: from log p, the log-probability of its complement (ORPO's odds). */
export function log1mexp(x: Tensor): Tensor {
  const out = Tensor.zeros(x.shape);
  log1mexpForward(x.data, out.data);
  const [xData, xg] = [x.data, x.autograd];
  return record(out, 'log1mexp', [x], (g, sink) => {
    const gx = sink.acc(xg);
    if (gx) log1mexpBackward(xData, g, gx);
  });
}
