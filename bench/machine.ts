/**
 * What the machine can do, independent of the model: the facts (backend, BLAS, cores), the
 * backend's sgemm rate (the compute bound) and the memory streaming rate (the bandwidth bound).
 */
import os from 'node:os';
import { backend } from '../src/backend/select.js';
import { Rng } from '../src/tensor/random.js';
import { GB, bestSeconds, type Figure, type Section } from './measure.js';

export const machineSection: Section = {
  name: 'machine',
  title: 'machine',
  provides: ['backend', 'blas_library', 'blas_threads', 'node', 'cores', 'date', 'load_1m_start'],
  run() {
    const info = backend().describe();
    return [
      { key: 'backend', label: 'backend', value: info.backend, note: info.config ?? undefined },
      { key: 'blas_library', label: 'BLAS library', value: info.library ?? 'none' },
      { key: 'blas_threads', label: 'BLAS threads', value: info.threads, digits: 0 },
      { key: 'node', label: 'Node', value: process.version },
      { key: 'cores', label: 'cores', value: os.availableParallelism(), digits: 0, note: os.cpus()[0]?.model },
      { key: 'date', label: 'date', value: new Date().toISOString().slice(0, 10) },
      // Other processes on the cores skew every figure; the report repeats this at the end.
      { key: 'load_1m_start', label: 'load average', value: os.loadavg()[0], note: '1-min average at start; above ~0.5 other work shares the cores' },
    ];
  },
};

interface GemmShape {
  key: string;
  label: string;
  m: number;
  n: number;
  k: number;
  /** B stored [n, k] and read transposed, as `linear` reads a Hugging Face weight. */
  transB: boolean;
}

const GEMM_SHAPES: GemmShape[] = [
  { key: 'sgemm_mlp_gflops', label: 'sgemm 1024×896 · (4864×896)ᵀ', m: 1024, n: 4864, k: 896, transB: true },
  { key: 'sgemm_square_gflops', label: 'sgemm 2048×2048 · 2048×2048', m: 2048, n: 2048, k: 2048, transB: false },
];

/** GFLOP/s of one shape through the active backend, best of `runs` after a warm-up call. */
function gemmRate(s: GemmShape, runs: number): number {
  const rng = new Rng(1);
  const a = rng.fillUniform(new Float32Array(s.m * s.k), -1, 1);
  const b = rng.fillUniform(new Float32Array(s.k * s.n), -1, 1);
  const c = new Float32Array(s.m * s.n);
  const be = backend();
  const call = (): void =>
    be.gemm({ transA: false, transB: s.transB, m: s.m, n: s.n, k: s.k, alpha: 1, a, lda: s.k, b, ldb: s.transB ? s.k : s.n, beta: 0, c, ldc: s.n });
  call();
  return (2 * s.m * s.n * s.k) / bestSeconds(runs, call) / GB;
}

export const sgemmSection: Section = {
  name: 'sgemm',
  title: 'compute: sgemm through the backend',
  provides: ['sgemm_gflops', ...GEMM_SHAPES.map((s) => s.key)],
  run(ctx) {
    const runs = backend().name === 'js' ? 1 : 5;
    const figures: Figure[] = [];
    let best = 0;
    for (const s of GEMM_SHAPES) {
      ctx.progress(`${s.label}, best of ${runs}`);
      const rate = gemmRate(s, runs);
      best = Math.max(best, rate);
      figures.push({ key: s.key, label: s.label, value: rate, unit: 'GFLOP/s', digits: 1 });
    }
    figures.unshift({ key: 'sgemm_gflops', label: 'sgemm rate (best shape)', value: best, unit: 'GFLOP/s', digits: 1 });
    return figures;
  },
};

const STREAM_BYTES = 512 * 1024 * 1024;

/** Sum with four accumulators, so the loop is bound by loads rather than by one add chain. */
function sum(a: Float32Array): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  const n = a.length - (a.length % 4);
  for (let i = 0; i < n; i += 4) {
    s0 += a[i];
    s1 += a[i + 1];
    s2 += a[i + 2];
    s3 += a[i + 3];
  }
  for (let i = n; i < a.length; i++) s0 += a[i];
  return s0 + s1 + s2 + s3;
}

export const streamSection: Section = {
  name: 'stream',
  title: 'memory: streaming a 512 MB Float32Array (the decode bound)',
  provides: ['stream_gb_s', 'stream_sum_gb_s', 'stream_copy_gb_s', 'stream_gemv_gb_s'],
  run(ctx) {
    ctx.progress('stream: sum, copy and a backend gemv over 512 MB, best of 5 each');
    const src = new Float32Array(STREAM_BYTES / 4).fill(1);
    let sink = 0;
    const sumRate = STREAM_BYTES / bestSeconds(5, () => { sink += sum(src); }) / GB;
    // `set` is a memcpy: it reads and writes every byte, counted twice as STREAM counts copy.
    const dst = new Float32Array(src.length).fill(0);
    const copyRate = (2 * STREAM_BYTES) / bestSeconds(5, () => dst.set(src)) / GB;
    if (sink !== 5 * src.length || dst[dst.length - 1] !== 1) throw new Error('stream: wrong sum or copy');
    // Decode's own access: one row times a weight stored [out, in] and read transposed.
    const cols = 896;
    const rows = Math.floor(src.length / cols);
    const x = new Float32Array(cols).fill(1);
    const y = new Float32Array(rows);
    const be = backend();
    const gemv = (): void =>
      be.gemm({ transA: false, transB: true, m: 1, n: rows, k: cols, alpha: 1, a: x, lda: cols, b: src, ldb: cols, beta: 0, c: y, ldc: rows });
    gemv();
    const gemvRate = STREAM_BYTES / bestSeconds(5, gemv) / GB;
    return [
      { key: 'stream_gb_s', label: 'stream rate (best of the three)', value: Math.max(sumRate, copyRate, gemvRate), unit: 'GB/s' },
      { key: 'stream_sum_gb_s', label: 'sum (1 thread, JS loop)', value: sumRate, unit: 'GB/s' },
      { key: 'stream_copy_gb_s', label: 'copy (memcpy, read + write)', value: copyRate, unit: 'GB/s' },
      { key: 'stream_gemv_gb_s', label: `backend 1×${cols} · (${rows}×${cols})ᵀ`, value: gemvRate, unit: 'GB/s' },
    ];
  },
};
