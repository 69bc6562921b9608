import { softmaxBackward, softmaxForward } from '../../backend/kernels/softmax.js';
import { Tensor, record } from '../tensor.js';

/** Softmax over the last dimension. */
export function softmax(x: Tensor): Tensor {
  const n = x.lastDim;
  const out = Tensor.zeros(x.shape);
  softmaxForward(x.data, n, out.data);
  // Backward keeps the output, not x.
  const [y, xg] = [out.data, x.autograd];
  return record(out, 'softmax', [x], (g, sink) => {
    const gx = sink.acc(xg);
    if (gx) softmaxBackward(y, g, n, gx);
  });
}
