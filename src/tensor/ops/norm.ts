import { rmsNormBackward, rmsNormForward } from '../../backend/kernels/norm.js';
import { Tensor, needsGrad, record, saved } from '../tensor.js';

/** RMSNorm over the last dimension with a learned per-channel weight. */
export function rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
  const c = x.lastDim;
  if (weight.size !== c) throw new Error(`rmsNorm: weight ${weight} does not match ${x}`);
  const out = Tensor.uninitialized(x.shape);
  // Backward keeps x, the weight and 1/rms per row.
  const invRms = needsGrad(x, weight) ? new Float32Array(x.size / c) : null;
  rmsNormForward(x.data, weight.data, c, eps, out.data, invRms);
  const [xData, wData, xg, wg] = [x.data, weight.data, x.autograd, weight.autograd];
  return record(out, 'rms_norm', [x, weight], (g, sink) => {
    rmsNormBackward(xData, wData, c, saved(invRms, 'rmsNorm 1/rms'), g, sink.acc(xg), sink.acc(wg));
  });
}
