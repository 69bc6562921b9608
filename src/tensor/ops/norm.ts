import { rmsNormBackward, rmsNormForward } from '../../backend/kernels/norm.js';
import { Tensor, isGradEnabled, record } from '../tensor.js';

/** RMSNorm over the last dimension with a learned per-channel weight. */
export function rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
  const c = x.lastDim;
  if (weight.size !== c) throw new Error(`rmsNorm: weight ${weight} does not match ${x}`);
  const out = Tensor.zeros(x.shape);
  const keep = isGradEnabled() && (x.requiresGrad || weight.requiresGrad);
  const invRms = keep ? new Float32Array(x.size / c) : null;
  rmsNormForward(x.data, weight.data, c, eps, out.data, invRms);
  return record(out, 'rms_norm', [x, weight], (g, sink) => {
    rmsNormBackward(x.data, weight.data, c, invRms as Float32Array, g, sink.acc(x), sink.acc(weight));
  });
}
