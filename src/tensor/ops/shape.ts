import { Tensor, record, sizeOf } from '../tensor.js';
import { axpy } from '../../backend/kernels/elementwise.js';

/** The same values under another shape; one dimension may be -1 (inferred). Shares the buffer. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const known = shape.filter((d) => d !== -1);
  const inferred = shape.length - known.length;
  if (inferred > 1) throw new Error(`reshape: more than one -1 in [${shape.join(', ')}]`);
  const resolved = inferred ? shape.map((d) => (d === -1 ? x.size / sizeOf(known) : d)) : [...shape];
  if (sizeOf(resolved) !== x.size || !resolved.every(Number.isInteger)) {
    throw new Error(`reshape: ${x} cannot become [${shape.join(', ')}]`);
  }
  const out = new Tensor(x.data, resolved);
  return record(out, 'reshape', [x], (g, sink) => {
    const gx = sink.acc(x);
    if (gx) axpy(1, g, gx);
  });
}
