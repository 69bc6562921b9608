import type { CausalLM } from '../models/decoder.js';
import { linearTokenLogprobs } from '../tensor/index.js';
import { Tensor, noGrad } from '../tensor/tensor.js';

export interface SequenceLogprob {
  /** Σ log p(ids[i] | ids[..i]) over i ≥ start. */
  logprob: number;
  /** How many tokens were scored. */
  tokens: number;
}

/**
 * The summed log-probability of `ids[start..]` given what precedes each token: the quantity
 * DPO compares and evaluation reports. Only the scored positions get vocabulary logits.
 */
export function sequenceLogprob(model: CausalLM, ids: readonly number[], start: number): SequenceLogprob {
  if (!Number.isInteger(start) || start < 1 || start > ids.length) {
    throw new RangeError(`start ${start} must be between 1 and the number of ids (${ids.length}); the first token has no context`);
  }
  const scored = ids.length - start;
  if (scored === 0) return { logprob: 0, tokens: 0 };
  return noGrad(() => {
    // The last id is never an input: nothing is predicted after it.
    const inputs = Int32Array.from(ids.slice(0, -1));
    const h = model.hidden({ ids: inputs, batch: 1, length: inputs.length });
    const c = model.config.hiddenSize;
    const rows = new Tensor(h.data.subarray((start - 1) * c, inputs.length * c), [scored, c]);
    const lp = linearTokenLogprobs(rows, model.outputWeight(), Int32Array.from(ids.slice(start)));
    let sum = 0;
    for (let i = 0; i < lp.size; i++) sum += lp.data[i];
    return { logprob: sum, tokens: scored };
  });
}
