import { logSigmoidBackward, logSigmoidForward } from '../../backend/kernels/pointwise.js';
import { Tensor, record } from '../tensor.js';

/** log σ(x) element-wise: the DPO and reward-model losses are −logσ of a margin. */
export function logSigmoid(x: Tensor): Tensor {
  const out = Tensor.zeros(x.shape);
  logSigmoidForward(x.data, out.data);
  const [xData, xg] = [x.data, x.autograd];
  return record(out, 'log_sigmoid', [x], (g, sink) => {
    const gx = sink.acc(xg);
    if (gx) logSigmoidBackward(xData, g, gx);
  });
}
