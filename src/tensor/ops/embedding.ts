import { gatherRows, scatterAddRows } from '../../backend/kernels/gather.js';
import { Tensor, record } from '../tensor.js';

/** Rows of `weight` ([vocab, C]) picked by token id: [...idsShape, C]. */
export function embedding(weight: Tensor, ids: Int32Array, idsShape: readonly number[] = [ids.length]): Tensor {
  const c = weight.lastDim;
  const out = Tensor.zeros([...idsShape, c]);
  gatherRows(weight.data, c, ids, out.data);
  const wg = weight.autograd;
  return record(out, 'embedding', [weight], (g, sink) => {
    const gw = sink.acc(wg);
    if (gw) scatterAddRows(g, c, ids, gw);
  });
}
