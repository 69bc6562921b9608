import os from 'node:os';
import { Worker, isMainThread } from 'node:worker_threads';
import type { HelperTask } from './tasks.js';

/** Control words shared with the helper: last task done, last task failed, ready. */
export const CTRL_DONE = 0;
export const CTRL_FAILED = 1;
export const CTRL_READY = 2;
/** What the ready word holds when the helper cannot be used (it failed to load, or has no SIMD). */
export const NOT_USABLE = -1;

/** A helper that takes this long over half a task is taken for dead. */
const STALL_MS = 120_000;
/** How long `waitUntilReady` waits at most. */
const START_MS = 30_000;

/**
 * Starts the worker from source so that it works both from `dist` (JavaScript) and from the
 * TypeScript sources under tsx (tests, bench), where the worker must register tsx itself.
 */
const BOOT = `
const { workerData } = require('node:worker_threads');
(async () => {
  if (workerData.tsx) (await import(workerData.tsx)).register();
  await import(workerData.entry);
})().catch((err) => {
  Atomics.store(workerData.ctrl, ${CTRL_READY}, ${NOT_USABLE});
  Atomics.notify(workerData.ctrl, ${CTRL_READY});
  throw err;
});`;

/**
 * One worker thread that runs half of the element-wise kernels' work while the main thread runs
 * the other half: matrix products use both cores through BLAS, and without it the second core
 * idles through the exponentials of the vocabulary loss. Started on first use, which waits for
 * it to be ready; if it fails, the main thread does all the work, so results never depend on it:
 * both halves run the same code on the same rows.
 */
export class HelperThread {
  private readonly ctrl = new Int32Array(new SharedArrayBuffer(3 * 4));
  private readonly worker: Worker;
  private posted = 0;
  private broken = false;

  /** Tasks handed to the helper so far. */
  get tasks(): number {
    return this.posted;
  }

  constructor() {
    const fromSource = import.meta.url.endsWith('.ts');
    const entry = new URL(`./helper-worker.${fromSource ? 'ts' : 'js'}`, import.meta.url).href;
    const tsx = fromSource ? import.meta.resolve('tsx/esm/api') : null;
    this.worker = new Worker(BOOT, { eval: true, workerData: { entry, tsx, ctrl: this.ctrl, kernels } });
    // Never keeps the process alive, and an error in it only turns it off.
    this.worker.unref();
    this.worker.on('error', () => {
      this.broken = true;
    });
  }

  get ready(): boolean {
    return !this.broken && Atomics.load(this.ctrl, CTRL_READY) === 1;
  }

  /** Blocks until the helper is ready or cannot be (at most START_MS): returns whether it is ready. */
  waitUntilReady(): boolean {
    const start = Date.now();
    while (Atomics.load(this.ctrl, CTRL_READY) === 0 && !this.broken && Date.now() - start < START_MS) {
      Atomics.wait(this.ctrl, CTRL_READY, 0, 20);
    }
    return this.ready;
  }

  /**
   * Runs `theirs` on the helper while `mine` runs here, and returns whether the helper did its
   * part; if not (it failed or stalled), the caller must run `theirs` itself, and the helper is
   * not used again.
   */
  split(theirs: HelperTask, mine: () => void): boolean {
    const seq = ++this.posted;
    this.worker.postMessage({ seq, task: theirs });
    mine();
    if (this.await(seq) && Atomics.load(this.ctrl, CTRL_FAILED) !== seq) return true;
    this.broken = true;
    return false;
  }

  private await(seq: number): boolean {
    const start = Date.now();
    for (;;) {
      const done = Atomics.load(this.ctrl, CTRL_DONE);
      if (done === seq) return true;
      if (Date.now() - start > STALL_MS) return false;
      Atomics.wait(this.ctrl, CTRL_DONE, done, 1000);
    }
  }

  close(): Promise<number> {
    return this.worker.terminate();
  }
}

/** The element-wise kernels' module and the main thread's (shared) memory, for the helper to run on. */
export interface SharedKernels {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
}

let kernels: SharedKernels | null = null;

/** Called once the kernels are assembled: a helper started afterwards can run them on that memory. */
export function shareKernels(shared: SharedKernels): void {
  if (isMainThread) kernels = { module: shared.module, memory: shared.memory };
}

let helper: HelperThread | null = null;
let tried = false;
let enabled = true;

/** Turns the use of the helper thread on or off (tests compare both). */
export function useHelperThread(on: boolean): void {
  enabled = on;
}

/**
 * The helper thread when it is on and ready, else null (callers then do all the work). Off
 * with `TUNEKIT_HELPER_THREAD=0` or on a single core.
 */
export function helperThread(): HelperThread | null {
  return enabled && startHelperThread()?.ready ? helper : null;
}

/** Starts the helper thread if it is on and not started yet; returns it, ready or not. */
export function startHelperThread(): HelperThread | null {
  if (!tried) {
    tried = true;
    // The helper itself never starts one.
    if (isMainThread && process.env.TUNEKIT_HELPER_THREAD !== '0' && os.availableParallelism() > 1) {
      try {
        helper = new HelperThread();
      } catch {
        helper = null;
      }
      // Waits here for the helper to finish starting: a thread that forks (tsx's loader starts
      // esbuild in the worker when its cache is cold) runs OpenBLAS's fork handler, which stops
      // the BLAS threads; if a product was running on this thread meanwhile, it would wait
      // forever for a thread that is gone. Once started, the helper never forks.
      if (helper && !helper.waitUntilReady()) {
        void helper.close();
        helper = null;
      }
    }
  }
  return helper;
}

/** What `tunekit env` says of the helper thread. */
export function helperThreadSetting(): string {
  if (process.env.TUNEKIT_HELPER_THREAD === '0') return 'off (TUNEKIT_HELPER_THREAD=0)';
  if (os.availableParallelism() < 2) return 'off: one core';
  return 'on: one worker thread takes half of the vocabulary loss\'s rows and of SwiGLU';
}
