import { softmaxBackward, softmaxForward } from '../../backend/kernels/softmax.js';
import { Tensor, record } from '../tensor.js';

/** Softmax over the last dimension. */
export function softmax(x: Tensor): Tensor {
  const n = x.lastDim;
  const out = Tensor.zeros(x.shape);
  softmaxForward(x.data, n, out.data);
  return record(out, 'softmax', [x], (g, sink) => {
    const gx = sink.acc(x);
    if (gx) softmaxBackward(out.data, g, n, gx);
  });
}
