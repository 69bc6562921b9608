import type { CausalLM, DecoderInput } from '../models/decoder.js';
import { linearTokenLogprobs, reshape, scale, selectRows, sum } from '../tensor/index.js';
import type { Tensor } from '../tensor/tensor.js';

/** What the loss needs of a batch: token ids with labels aligned to them (−100 = not trained). */
export interface LabelledBatch extends Omit<DecoderInput, 'cache'> {
  labels: Int32Array;
}

/**
 * Positions whose next token is trained, and those next tokens: position t predicts
 * labels[t + 1], as transformers shifts labels inside the model.
 */
export function shiftedTargets(labels: Int32Array, batch: number, length: number): { rows: Int32Array; targets: Int32Array } {
  const rows: number[] = [];
  const targets: number[] = [];
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t + 1 < length; t++) {
      const target = labels[b * length + t + 1];
      if (target < 0) continue;
      rows.push(b * length + t);
      targets.push(target);
    }
  }
  return { rows: Int32Array.from(rows), targets: Int32Array.from(targets) };
}

/** Number of trained tokens in a batch (the loss's denominator). */
export function countTargets(batch: LabelledBatch): number {
  return shiftedTargets(batch.labels, batch.batch, batch.length).rows.length;
}

/**
 * −Σ log p(target) over the batch's trained tokens, divided by `normalizer` (the trained tokens
 * of the whole accumulation group, so that splitting a batch into micro-batches changes nothing).
 * Only trained positions get vocabulary logits.
 */
export function causalLmLoss(model: CausalLM, batch: LabelledBatch, normalizer: number): { loss: Tensor; tokens: number } {
  const { rows, targets } = shiftedTargets(batch.labels, batch.batch, batch.length);
  const h = model.hidden(batch);
  const flat = reshape(h, [batch.batch * batch.length, model.config.hiddenSize]);
  const lp = linearTokenLogprobs(selectRows(flat, rows), model.outputWeight(), targets);
  return { loss: scale(sum(lp), -1 / Math.max(1, normalizer)), tokens: rows.length };
}
