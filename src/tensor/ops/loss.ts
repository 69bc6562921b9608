import { rowLogSumExp, targetLogprobs, targetLogprobsBackward } from '../../backend/kernels/loss.js';
import { Tensor, record } from '../tensor.js';

export const IGNORE_INDEX = -100;

/**
 * log p(target) for each row of logits [N, V]; rows whose target is negative (−100) give 0.
 * Summing a response's rows gives its log-likelihood, the quantity DPO and evaluation need.
 */
export function tokenLogprobs(logits: Tensor, targets: Int32Array): Tensor {
  const v = logits.lastDim;
  const rows = logits.size / v;
  if (targets.length !== rows) throw new Error(`tokenLogprobs: ${targets.length} targets for ${rows} rows of logits`);
  for (let r = 0; r < rows; r++) {
    if (targets[r] >= v) throw new RangeError(`tokenLogprobs: target ${targets[r]} at row ${r} is outside the vocabulary of ${v}`);
  }
  const lse = new Float32Array(rows);
  rowLogSumExp(logits.data, v, lse);
  const out = Tensor.zeros(logits.shape.slice(0, -1));
  targetLogprobs(logits.data, v, targets, lse, out.data);
  const [x, xg] = [logits.data, logits.autograd];
  return record(out, 'token_logprobs', [logits], (g, sink) => {
    const gl = sink.acc(xg);
    if (gl) targetLogprobsBackward(x, v, targets, lse, g, gl);
  });
}

/**
 * Mean cross-entropy over rows whose label is not `ignoreIndex`, as PyTorch's
 * `cross_entropy(..., ignore_index=-100)` computes it. No counted row gives 0.
 */
export function crossEntropy(logits: Tensor, labels: Int32Array, ignoreIndex = IGNORE_INDEX): Tensor {
  const targets = ignoreIndex === IGNORE_INDEX ? labels : labels.map((l) => (l === ignoreIndex ? -1 : l));
  let count = 0;
  for (let i = 0; i < targets.length; i++) if (targets[i] >= 0) count++;
  const lp = tokenLogprobs(logits, targets);
  let s = 0;
  for (let i = 0; i < lp.size; i++) s += lp.data[i];
  const out = Tensor.scalar(count ? -s / count : 0);
  const lpg = lp.autograd;
  return record(out, 'cross_entropy', [lp], (g, sink) => {
    const gl = sink.acc(lpg);
    if (!gl || !count) return;
    const v = -g[0] / count;
    for (let i = 0; i < gl.length; i++) if (targets[i] >= 0) gl[i] += v;
  });
}
