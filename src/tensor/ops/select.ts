import { gatherRows, scatterAddRows } from '../../backend/kernels/gather.js';
import { Tensor, record } from '../tensor.js';

/** Rows of x ([N, C]) at the given indices, [rows.length, C]; the loss uses it to skip masked positions. */
export function selectRows(x: Tensor, rows: Int32Array): Tensor {
  const c = x.lastDim;
  const out = Tensor.zeros([rows.length, c]);
  gatherRows(x.data, c, rows, out.data);
  const xg = x.autograd;
  return record(out, 'select_rows', [x], (g, sink) => {
    const gx = sink.acc(xg);
    if (gx) scatterAddRows(g, c, rows, gx);
  });
}
