import { parentPort, workerData } from 'node:worker_threads';
import { simd } from '../wasm/simd.js';
import { runTask } from './tasks.js';
import type { HelperTask } from './tasks.js';
import { CTRL_DONE, CTRL_FAILED, CTRL_READY, NOT_USABLE } from './helper-thread.js';
import type { SharedKernels } from './helper-thread.js';
import type { KernelExports } from '../wasm/simd.js';

/**
 * The helper thread's loop: each message is one task, run here; its sequence number then goes
 * to the control words the main thread is waiting on (it cannot receive messages while it
 * waits). A task that throws is reported as failed and the main thread runs it itself.
 */
const ctrl = workerData.ctrl as Int32Array;
const shared = workerData.kernels as SharedKernels | null;
// The same kernels over the main thread's memory, for the work it copies in.
const main = shared ? (new WebAssembly.Instance(shared.module, { env: { memory: shared.memory } }).exports as unknown as KernelExports) : null;

parentPort?.on('message', ({ seq, task }: { seq: number; task: HelperTask }) => {
  try {
    runTask(task, main);
  } catch (err) {
    process.stderr.write(`tunekit helper thread: ${task.kind} failed: ${(err as Error).message}\n`);
    Atomics.store(ctrl, CTRL_FAILED, seq);
  }
  Atomics.store(ctrl, CTRL_DONE, seq);
  Atomics.notify(ctrl, CTRL_DONE);
});
// Only the same kernels as the main thread's give the same bits: without SIMD here, stay unused.
Atomics.store(ctrl, CTRL_READY, simd() ? 1 : NOT_USABLE);
Atomics.notify(ctrl, CTRL_READY);
