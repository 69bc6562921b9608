import { Tensor, record, sizeOf } from '../tensor.js';

/** The same values under another shape; one dimension may be -1 (inferred). Shares the buffer. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const known = shape.filter((d) => d !== -1);
  const inferred = shape.length - known.length;
  if (inferred > 1) throw new Error(`reshape: more than one -1 in [${shape.join(', ')}]`);
  // V8 gives all closures of a call one shared scope: had this arrow read `x`, the backward
  // closure below would keep x alive too. It reads a number instead.
  const size = x.size;
  const resolved = inferred ? shape.map((d) => (d === -1 ? size / sizeOf(known) : d)) : [...shape];
  if (sizeOf(resolved) !== x.size || !resolved.every(Number.isInteger)) {
    throw new Error(`reshape: ${x} cannot become [${shape.join(', ')}]`);
  }
  const out = new Tensor(x.data, resolved);
  // The view has an identity of its own; backward needs only x's.
  const xg = x.autograd;
  return record(out, 'reshape', [x], (g, sink) => sink.add(xg, g));
}
