import { maximumBackward, maximumForward } from '../../backend/kernels/pointwise.js';
import { Tensor, record } from '../tensor.js';

/** max(a, b) element-wise for two tensors of one shape (PPO's pessimistic clipped objective). */
export function maximum(a: Tensor, b: Tensor): Tensor {
  if (a.size !== b.size) throw new Error(`maximum: ${a} and ${b} differ in size`);
  const out = Tensor.zeros(a.shape);
  maximumForward(a.data, b.data, out.data);
  // Which side won is read from both inputs again.
  const [aData, bData, ag, bg] = [a.data, b.data, a.autograd, b.autograd];
  return record(out, 'maximum', [a, b], (g, sink) => {
    maximumBackward(aData, bData, g, sink.acc(ag), sink.acc(bg));
  });
}
