import { linearLogprobsBackward, linearLogprobsForward } from '../../backend/kernels/linear-logprobs.js';
import { backend } from '../../backend/select.js';
import { Tensor, needsGrad, record, saved } from '../tensor.js';

/**
 * log p(target) per row of h ([N, C]) under the output layer W ([V, C]): the same as
 * `tokenLogprobs(linear(h, W), targets)`, but a chunk of rows at a time, so neither the logits nor
 * their gradient is ever held for the whole batch (151,936 × 1,024 floats would be 600 MB).
 * Rows with a negative target give 0.
 */
export function linearTokenLogprobs(h: Tensor, weight: Tensor, targets: Int32Array): Tensor {
  const [rows, hidden] = [h.size / h.lastDim, h.lastDim];
  const vocab = weight.shape[0];
  if (weight.ndim !== 2 || weight.shape[1] !== hidden) throw new Error(`linearTokenLogprobs: ${weight} does not match ${h}`);
  if (targets.length !== rows) throw new Error(`linearTokenLogprobs: ${targets.length} targets for ${rows} rows`);
  for (let r = 0; r < rows; r++) {
    if (targets[r] >= vocab) throw new RangeError(`linearTokenLogprobs: target ${targets[r]} at row ${r} is outside the vocabulary of ${vocab}`);
  }
  const be = backend();
  const out = Tensor.zeros(h.shape.slice(0, -1));
  // Each row's gradient direction is known now; backward only scales it by the upstream gradient.
  const dh = needsGrad(h) ? new Float32Array(h.size) : null;
  linearLogprobsForward(be, h.data, weight.data, rows, hidden, vocab, targets, out.data, dh);
  // W's gradient recomputes the logits, so h and W are kept only when W trains.
  const trainW = needsGrad(weight);
  const hData = trainW ? h.data : null;
  const wData = trainW ? weight.data : null;
  const [hg, wg] = [h.autograd, weight.autograd];
  return record(out, 'linear_token_logprobs', [h, weight], (g, sink) => {
    const gh = sink.acc(hg);
    const gw = sink.acc(wg);
    if (gh) {
      const d = saved(dh, 'linearTokenLogprobs dh');
      for (let r = 0; r < rows; r++) {
        const s = g[r];
        if (s === 0) continue;
        const o = r * hidden;
        for (let j = 0; j < hidden; j++) gh[o + j] += s * d[o + j];
      }
    }
    if (gw) linearLogprobsBackward(be, saved(hData, 'linearTokenLogprobs h'), saved(wData, 'linearTokenLogprobs W'), rows, hidden, vocab, targets, g, gw, null);
  });
}
