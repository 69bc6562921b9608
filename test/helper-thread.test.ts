/**
 * The helper thread takes half of the vocabulary loss's rows: the results are the same bits as
 * on the main thread alone (both run the same kernels on the same rows), and a helper that fails
 * leaves the work to the main thread.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { swigluBackward, swigluForward } from '../src/backend/kernels/activation.js';
import { linearLogprobsBackward, linearLogprobsForward } from '../src/backend/kernels/linear-logprobs.js';
import { shortenBlasSpinForTraining } from '../src/backend/blas-spin.js';
import { backend } from '../src/backend/select.js';
import { HelperThread, helperThread, startHelperThread, useHelperThread } from '../src/backend/threads/helper-thread.js';
import { simd } from '../src/backend/wasm/simd.js';
import { Rng } from '../src/tensor/random.js';

after(() => useHelperThread(true));

// Qwen's vocabulary, so that 600 rows take three chunks; a narrow hidden size keeps it quick.
const VOCAB = 151936;
const HIDDEN = 16;
const ROWS = 600;

function problem() {
  const rng = new Rng(3);
  const h = Float32Array.from({ length: ROWS * HIDDEN }, () => rng.uniform() - 0.5);
  const w = Float32Array.from({ length: VOCAB * HIDDEN }, () => (rng.uniform() - 0.5) * 4);
  const targets = Int32Array.from({ length: ROWS }, (_, i) => (i % 17 === 5 ? -100 : rng.int(VOCAB)));
  const grad = Float32Array.from({ length: ROWS }, (_, i) => (i % 13 === 0 ? 0 : rng.uniform() - 0.5));
  return { h, w, targets, grad };
}

function run(withHelper: boolean) {
  useHelperThread(withHelper);
  const { h, w, targets, grad } = problem();
  const out = new Float32Array(ROWS);
  const dh = new Float32Array(ROWS * HIDDEN);
  const be = backend();
  linearLogprobsForward(be, h, w, ROWS, HIDDEN, VOCAB, targets, out, dh);
  const plain = new Float32Array(ROWS);
  linearLogprobsForward(be, h, w, ROWS, HIDDEN, VOCAB, targets, plain, null);
  const wInto = new Float32Array(VOCAB * HIDDEN);
  const hInto = new Float32Array(ROWS * HIDDEN);
  linearLogprobsBackward(be, h, w, ROWS, HIDDEN, VOCAB, targets, grad, wInto, hInto);
  return { out, dh, plain, wInto, hInto };
}

describe('helper thread', { skip: simd() ? false : 'no WebAssembly SIMD here: the helper stays off' }, () => {
  it('gives the vocabulary loss, its input gradient and its weight gradient the same bits as the main thread alone', () => {
    const helper = startHelperThread();
    assert.ok(helper && helper.waitUntilReady(), 'the helper thread starts');
    const before = helper.tasks;
    const shared = run(true);
    assert.ok(helper.tasks - before >= 9, `three chunks in each of three passes go half to the helper (${helper.tasks - before} tasks)`);
    const alone = run(false);
    assert.equal(helperThread(), null, 'turned off');
    for (const key of ['out', 'dh', 'plain', 'wInto', 'hInto'] as const) assert.deepEqual(shared[key], alone[key], key);
    assert.equal(shared.out[5], 0, 'a row without a target gives 0');
    assert.ok(shared.out.every((v, i) => i % 17 === 5 || (v < 0 && Number.isFinite(v))), 'log-probabilities');
  });

  it('gives SwiGLU forward and backward (adding or overwriting) the same bits with half of each block on the helper', () => {
    const helper = startHelperThread();
    assert.ok(helper && helper.waitUntilReady());
    const rng = new Rng(9);
    // Blocks of 262,144 elements: one and a half blocks, and a length that is not a multiple of 4.
    for (const n of [393_217, 600_001]) {
      const gate = Float32Array.from({ length: n }, () => (rng.uniform() - 0.5) * 16);
      const up = Float32Array.from({ length: n }, () => rng.uniform() * 4 - 2);
      const grad = Float32Array.from({ length: n }, () => rng.uniform() - 0.5);
      const start = Float32Array.from({ length: n }, () => rng.uniform());
      const swiglu = (on: boolean): { out: Float32Array; g1: Float32Array; u1: Float32Array; g0: Float32Array; tasks: number } => {
        useHelperThread(on);
        const before = helper.tasks;
        const out = new Float32Array(n);
        swigluForward(gate, up, out);
        const [g1, u1] = [start.slice(), start.slice()];
        swigluBackward(gate, up, grad, { grad: g1, beta: 1 }, { grad: u1, beta: 1 });
        const g0 = new Float32Array(n).fill(Number.NaN);
        swigluBackward(gate, up, grad, { grad: g0, beta: 0 }, null);
        return { out, g1, u1, g0, tasks: helper.tasks - before };
      };
      const shared = swiglu(true);
      const alone = swiglu(false);
      assert.ok(shared.tasks >= 6, `blocks went to the helper (${shared.tasks})`);
      assert.equal(alone.tasks, 0);
      for (const key of ['out', 'g1', 'u1', 'g0'] as const) assert.deepEqual(shared[key], alone[key], `${key} n=${n}`);
    }
  });

  it('keeps a spin limit the user set for OpenBLAS threads', () => {
    const own = process.env.OPENBLAS_THREAD_TIMEOUT;
    try {
      process.env.OPENBLAS_THREAD_TIMEOUT = '26';
      assert.equal(shortenBlasSpinForTraining(), 'OPENBLAS_THREAD_TIMEOUT=26 (yours)');
      assert.equal(process.env.OPENBLAS_THREAD_TIMEOUT, '26');
    } finally {
      if (own === undefined) delete process.env.OPENBLAS_THREAD_TIMEOUT;
      else process.env.OPENBLAS_THREAD_TIMEOUT = own;
    }
  });

  it('runs a task that fails on the helper on the main thread instead, and stops using that helper', async () => {
    const helper = new HelperThread();
    try {
      assert.ok(helper.waitUntilReady());
      let mine = 0;
      const done = helper.split({ kind: 'no-such-task' } as never, () => mine++);
      assert.equal(done, false, 'the caller is told to run the helper half itself');
      assert.equal(mine, 1);
      assert.equal(helper.ready, false);
    } finally {
      await helper.close();
    }
  });

  it('lets matrix products run right after it starts, even while its loader forks (a cold tsx cache)', () => {
    // OpenBLAS's fork handler stops its threads: a fork on the helper during a product on the
    // main thread once left that product waiting forever. A fresh temporary folder makes tsx
    // start esbuild in the worker; 60 s is only there to end a hang, far above the ~3 s it takes.
    const cold = mkdtempSync(join(tmpdir(), 'tunekit-cold-loader-'));
    try {
      const script = fileURLToPath(new URL('./helpers/products-while-helper-starts.ts', import.meta.url));
      const run = spawnSync(process.execPath, ['--import', 'tsx', script], {
        env: { ...process.env, TMPDIR: cold, TUNEKIT_BACKEND: 'blas' },
        encoding: 'utf8',
        timeout: 60_000,
      });
      assert.equal(run.signal, null, `the products hung (killed by ${run.signal}); stderr: ${run.stderr}`);
      assert.equal(run.status, 0, run.stderr);
      assert.match(run.stdout, /^products \d+/);
    } finally {
      rmSync(cold, { recursive: true, force: true });
    }
  });
});
