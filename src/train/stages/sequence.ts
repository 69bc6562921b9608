/** Per-sequence quantities of a padded batch: summed answer log-probabilities, last-token scores. */
import type { CausalLM } from '../../models/decoder.js';
import { linearTokenLogprobs, reshape, segmentSum, selectRows } from '../../tensor/index.js';
import type { Tensor } from '../../tensor/tensor.js';
import type { LabelledBatch } from '../loss.js';
import { shiftedTargets } from '../loss.js';
import type { ValueHead } from './value-head.js';

export interface RowLogprobs {
  /** [B] Σ log p(token) over each row's trained tokens. */
  sums: Tensor;
  /** Trained tokens of each row. */
  counts: number[];
}

/**
 * The log-probability of each row's labelled tokens (its answer) given what precedes them, with
 * the graph kept for training. Only the answer positions get vocabulary logits.
 */
export function rowLogprobs(model: CausalLM, batch: LabelledBatch): RowLogprobs {
  const { batch: B, length: T } = batch;
  const { rows, targets } = shiftedTargets(batch.labels, B, T);
  const segments = new Int32Array(rows.length);
  const counts = new Array<number>(B).fill(0);
  rows.forEach((r, i) => {
    segments[i] = Math.floor(r / T);
    counts[segments[i]]++;
  });
  const h = model.hidden(batch); // [B, T, C]
  const flat = reshape(h, [B * T, model.config.hiddenSize]);
  const lp = linearTokenLogprobs(selectRows(flat, rows), model.outputWeight(), targets); // [N]
  return { sums: segmentSum(lp, segments, B), counts };
}

/** Flat index (b·T + t) of each row's last real token, from the key mask. */
export function lastTokenRows(keyMask: Uint8Array, batch: number, length: number): Int32Array {
  const out = new Int32Array(batch);
  for (let b = 0; b < batch; b++) {
    let last = -1;
    for (let t = 0; t < length; t++) if (keyMask[b * length + t]) last = t;
    if (last < 0) throw new Error(`row ${b} of the batch has no token`);
    out[b] = b * length + last;
  }
  return out;
}

/** The value head's score of each row at its last real token: [B, 1]. */
export function lastTokenScores(model: CausalLM, head: ValueHead, batch: LabelledBatch & { keyMask: Uint8Array }): Tensor {
  const { batch: B, length: T } = batch;
  const h = model.hidden(batch);
  const flat = reshape(h, [B * T, model.config.hiddenSize]);
  return head.forward(selectRows(flat, lastTokenRows(batch.keyMask, B, T)));
}
