import type { Rng } from './random.js';
import { Tensor, needsGrad, noGrad, record, withGrad } from './tensor.js';

export interface CheckpointOptions {
  /**
   * Tensors `fn` reads besides `inputs` that may need a gradient (a layer's parameters). Their
   * gradients accumulate in `grad` during backward, as without checkpointing.
   */
  params?: readonly Tensor[];
  /**
   * Generators `fn` draws from (dropout). The recomputation starts each from the state it had
   * when the forward ran, so it draws the same masks; afterwards each is put back where it was.
   */
  rngs?: readonly Rng[];
}

/**
 * Activation checkpointing (PyTorch's torch.utils.checkpoint): `fn(...inputs)` runs without
 * recording a graph, so none of its intermediates is kept; only the inputs' values are. Backward
 * runs `fn` again, with recording on, on detached copies of the inputs, sends the output gradient
 * through that recomputed graph (parameter gradients accumulate as usual) and passes the inputs'
 * gradients on. Memory: the inputs instead of every activation inside `fn`; cost: a second
 * forward of `fn` in backward.
 *
 * `fn` must compute the same values when run again: any randomness must come from `opts.rngs`,
 * and state it reads (adapters on or off, training mode) must be the same at backward. When
 * nothing in `inputs` or `opts.params` needs a gradient (or grad is off), `fn` simply runs: no
 * graph, nothing saved, nothing recomputed.
 */
export function checkpoint(fn: (...inputs: Tensor[]) => Tensor, inputs: readonly Tensor[], opts: CheckpointOptions = {}): Tensor {
  const params = opts.params ?? [];
  if (!needsGrad(...inputs, ...params)) return fn(...inputs);
  const rngs = [...new Set(opts.rngs ?? [])];
  const rngStates = rngs.map((r) => r.getState());
  const out = noGrad(() => fn(...inputs));
  // A fresh tensor over the same values: `fn` may hand back one of its inputs, which already
  // has its own place in the graph.
  const result = new Tensor(out.data, out.shape);
  // Buffers and identities only, as every backward rule keeps them (see `record`).
  const kept = inputs.map((t) => ({ data: t.data, shape: t.shape, meta: t.autograd, grad: t.requiresGrad }));
  return record(result, 'checkpoint', [...inputs, ...params], (g, sink) => {
    const copies = kept.map((k) => new Tensor(k.data, k.shape, k.grad));
    const current = rngs.map((r) => r.getState());
    rngs.forEach((r, i) => r.setState(rngStates[i]));
    let again: Tensor;
    try {
      again = withGrad(() => fn(...copies));
    } finally {
      rngs.forEach((r, i) => r.setState(current[i]));
    }
    if (!again.requiresGrad) return;
    again.backward(g);
    copies.forEach((copy, i) => {
      const cg = copy.grad;
      if (!cg) return;
      const gx = sink.acc(kept[i].meta);
      if (!gx) return;
      const d = cg.data;
      for (let j = 0; j < d.length; j++) gx[j] += d[j];
    });
  });
}
