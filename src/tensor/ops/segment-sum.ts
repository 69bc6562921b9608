import { segmentSumBackward, segmentSumForward } from '../../backend/kernels/pointwise.js';
import { Tensor, record } from '../tensor.js';

/**
 * Sums of x's elements by segment: out[s] = Σ x[i] over i with segments[i] = s, for s < count;
 * a negative segment leaves its element out. Per-token log-probabilities to per-sequence ones.
 */
export function segmentSum(x: Tensor, segments: Int32Array, count: number): Tensor {
  if (segments.length !== x.size) throw new Error(`segmentSum: ${segments.length} segment ids for ${x.size} values`);
  for (let i = 0; i < segments.length; i++) {
    if (segments[i] >= count) throw new RangeError(`segmentSum: segment ${segments[i]} at ${i} is not below ${count}`);
  }
  const out = Tensor.zeros([count]);
  segmentSumForward(x.data, segments, out.data);
  const xg = x.autograd;
  return record(out, 'segment_sum', [x], (g, sink) => {
    const gx = sink.acc(xg);
    if (gx) segmentSumBackward(segments, g, gx);
  });
}
