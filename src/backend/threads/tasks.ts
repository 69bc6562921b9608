import { logitRows } from '../kernels/linear-logprobs.js';
import type { KernelExports } from '../wasm/simd.js';

/**
 * Work the helper thread can take: a range of rows (or elements) of arrays backed by a
 * SharedArrayBuffer, so both threads see the same memory. Arrays that are not shared travel as
 * copies: only inputs may be such (targets, per-row factors).
 */
export type HelperTask =
  | {
      kind: 'logit-rows';
      logits: Float32Array;
      vocab: number;
      from: number;
      to: number;
      targets: Int32Array;
      grads: Float32Array | null;
      out: Float64Array;
    }
  // SwiGLU on data the main thread copied into the kernels' shared memory (byte offsets there).
  | { kind: 'swiglu-forward'; gate: number; up: number; out: number; n: number }
  | {
      kind: 'swiglu-backward';
      gate: number;
      up: number;
      grad: number;
      gateInto: number;
      upInto: number;
      n: number;
      gateAdd: number;
      upAdd: number;
    };

function kernelsOver(main: KernelExports | null): KernelExports {
  if (!main) throw new Error('no kernels over the main thread\'s memory');
  return main;
}

/**
 * Runs a task on the calling thread: the helper's side of `HelperThread.split`. `main` is the
 * kernels' instance over the main thread's memory.
 */
export function runTask(task: HelperTask, main: KernelExports | null): void {
  switch (task.kind) {
    case 'logit-rows':
      logitRows(task.logits, task.vocab, task.from, task.to, task.targets, task.grads, task.out);
      return;
    case 'swiglu-forward':
      kernelsOver(main).swiglu_forward(task.gate, task.up, task.out, task.n);
      return;
    case 'swiglu-backward':
      kernelsOver(main).swiglu_backward(task.gate, task.up, task.grad, task.gateInto, task.upInto, task.n, task.gateAdd, task.upAdd);
      return;
    default:
      throw new Error(`unknown task ${JSON.stringify((task as { kind: unknown }).kind)}`);
  }
}
