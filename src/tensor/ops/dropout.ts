import type { Rng } from '../random.js';
import { Tensor, record } from '../tensor.js';

/** Inverted dropout: zeroes a fraction p of values and scales the rest by 1/(1−p). */
export function dropout(x: Tensor, p: number, rng: Rng): Tensor {
  if (p <= 0) return x;
  if (p >= 1) throw new Error(`dropout: p must be below 1, got ${p}`);
  const keep = 1 / (1 - p);
  const mask = new Float32Array(x.size);
  for (let i = 0; i < mask.length; i++) mask[i] = rng.uniform() < p ? 0 : keep;
  const out = Tensor.zeros(x.shape);
  for (let i = 0; i < mask.length; i++) out.data[i] = x.data[i] * mask[i];
  const xg = x.autograd;
  return record(out, 'dropout', [x], (g, sink) => {
    const gx = sink.acc(xg);
    if (gx) for (let i = 0; i < g.length; i++) gx[i] += g[i] * mask[i];
  });
}
