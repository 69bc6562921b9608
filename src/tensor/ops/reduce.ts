import { Tensor, record } from '../tensor.js';

/** Σ x over every element. */
export function sum(x: Tensor): Tensor {
  let s = 0;
  for (let i = 0; i < x.size; i++) s += x.data[i];
  const xg = x.autograd;
  return record(Tensor.scalar(s), 'sum', [x], (g, sink) => {
    const gx = sink.acc(xg);
    if (!gx) return;
    const v = g[0];
    for (let i = 0; i < gx.length; i++) gx[i] += v;
  });
}

/** Mean over every element. */
export function mean(x: Tensor): Tensor {
  let s = 0;
  for (let i = 0; i < x.size; i++) s += x.data[i];
  const n = x.size;
  const xg = x.autograd;
  return record(Tensor.scalar(s / n), 'mean', [x], (g, sink) => {
    const gx = sink.acc(xg);
    if (!gx) return;
    const v = g[0] / n;
    for (let i = 0; i < gx.length; i++) gx[i] += v;
  });
}

/** Σ over the last dimension: [..., n] → [...]. */
export function sumLastDim(x: Tensor): Tensor {
  const n = x.lastDim;
  const rows = x.size / n;
  const out = Tensor.zeros(x.shape.slice(0, -1));
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < n; j++) s += x.data[r * n + j];
    out.data[r] = s;
  }
  const xg = x.autograd;
  return record(out, 'sum_last', [x], (g, sink) => {
    const gx = sink.acc(xg);
    if (!gx) return;
    for (let r = 0; r < rows; r++) for (let j = 0; j < n; j++) gx[r * n + j] += g[r];
  });
}
