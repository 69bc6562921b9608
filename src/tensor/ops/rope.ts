import { RopeTables, ropeApply } from '../../backend/kernels/rope.js';
import { Tensor, record } from '../tensor.js';

/**
 * Rotary position embedding of x: [..., tokens, heads, headDim] in rotate-half layout, one
 * position per token (so packed sequences and cached decoding restart or continue as they need).
 */
export function rope(x: Tensor, positions: Int32Array, tables: RopeTables): Tensor {
  const headDim = x.shape[x.ndim - 1];
  const heads = x.shape[x.ndim - 2];
  if (x.size !== positions.length * heads * headDim) {
    throw new Error(`rope: ${x} does not hold ${positions.length} tokens of ${heads}×${headDim}`);
  }
  let maxPos = 0;
  for (let i = 0; i < positions.length; i++) if (positions[i] > maxPos) maxPos = positions[i];
  tables.ensure(maxPos + 1);
  const out = Tensor.uninitialized(x.shape);
  ropeApply(x.data, heads, headDim, positions, tables, out.data, 1);
  const xg = x.autograd;
  return record(out, 'rope', [x], (g, sink) => {
    const gx = sink.into(xg);
    // A rotation's transpose is the opposite rotation.
    if (gx) ropeApply(g, heads, headDim, positions, tables, gx.grad, -1, gx.beta === 1);
  });
}
