import { logitRows } from '../kernels/linear-logprobs.js';

/**
 * Work the helper thread can take: a range of rows (or elements) of arrays backed by a
 * SharedArrayBuffer, so both threads see the same memory. Arrays that are not shared travel as
 * copies: only inputs may be such (targets, per-row factors).
 */
export type HelperTask = {
  kind: 'logit-rows';
  logits: Float32Array;
  vocab: number;
  from: number;
  to: number;
  targets: Int32Array;
  grads: Float32Array | null;
  out: Float64Array;
};

/** Runs a task on the calling thread: the helper's side of `HelperThread.split`. */
export function runTask(task: HelperTask): void {
  switch (task.kind) {
    case 'logit-rows':
      logitRows(task.logits, task.vocab, task.from, task.to, task.targets, task.grads, task.out);
      return;
    default:
      throw new Error(`unknown task ${JSON.stringify((task as { kind: unknown }).kind)}`);
  }
}
