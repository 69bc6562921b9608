import wabtInit from 'wabt';
import { KERNELS_WAT, MAX_PAGES } from './kernels-wat.js';
import { helperThread, shareKernels } from '../threads/helper-thread.js';
import type { GradInto } from '../kernels/grad-into.js';
import type { HelperThread } from '../threads/helper-thread.js';
import type { HelperTask } from '../threads/tasks.js';

/**
 * The WebAssembly SIMD versions of the exponential-heavy element-wise kernels, four float32
 * lanes at a time (about 1 ns an element against about 10 for scalar JavaScript). Data is copied
 * into the module's memory in chunks small enough to stay in cache, computed there, and copied
 * back: copies are memcpy, far cheaper than the scalar arithmetic they replace.
 *
 * `simd()` is null where WebAssembly SIMD is missing or `TUNEKIT_SIMD=0`; the callers then run
 * their scalar JavaScript, which stays the reference the tests compare against.
 */
export interface KernelExports {
  swiglu_forward(gate: number, up: number, out: number, n: number): void;
  swiglu_backward(gate: number, up: number, grad: number, gateInto: number, upInto: number, n: number, gateAdd: number, upAdd: number): void;
  max(x: number, n: number): number;
  exp_shift_sum(x: number, n: number, shift: number): number;
  scale(x: number, n: number, k: number): void;
  axpy(x: number, y: number, n: number, alpha: number): void;
  softmax_rows(x: number, rows: number, cols: number, stride: number, end0: number, causal: number): void;
  softmax_backward(p: number, dp: number, rows: number, cols: number, scale: number): void;
  rms_norm_forward(x: number, w: number, out: number, invRms: number, rows: number, cols: number, eps: number): void;
  rms_norm_backward_input(x: number, w: number, invRms: number, grad: number, xInto: number, rows: number, cols: number): void;
  widen_bf16(src: number, dst: number, n: number): void;
}

/** Elements per array per call: five arrays of this fit in a 512 KB L2 cache. A multiple of 4. */
const CHUNK = 16384;
const PAGE_BYTES = 65536;
/** Elements of the row kernels' blocks: whole rows, up to 256 KB. */
const BLOCK = 4 * CHUNK;
/** Elements per array per block when the helper thread takes half: the hand-off costs ~0.1 ms. */
const SHARED_BLOCK = 16 * CHUNK;
/** Arrays shorter than this stay on one thread: a block of work per hand-off. */
const SHARED_MIN = SHARED_BLOCK;

/** The assembled module and the memory its main-thread instance runs on. */
export interface CompiledKernels {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  exports: KernelExports;
}

async function instantiate(): Promise<CompiledKernels | null> {
  try {
    const wabt = await wabtInit();
    const parsed = wabt.parseWat('kernels.wat', KERNELS_WAT, { simd: true, threads: true });
    try {
      // wabt's validator refuses shared memories whatever the features; V8 validates the module.
      const module = new WebAssembly.Module(new Uint8Array(parsed.toBinary({}).buffer));
      const memory = new WebAssembly.Memory({ initial: 1, maximum: MAX_PAGES, shared: true });
      const exports = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as KernelExports;
      return { module, memory, exports };
    } finally {
      parsed.destroy();
    }
  } catch {
    return null;
  }
}

const compiled = await instantiate();
if (compiled) shareKernels(compiled);

export class SimdKernels {
  private f32: Float32Array;
  private readonly x: KernelExports;
  private readonly memory: WebAssembly.Memory;

  constructor(kernels: CompiledKernels) {
    this.x = kernels.exports;
    this.memory = kernels.memory;
    this.f32 = new Float32Array(this.memory.buffer);
  }

  /** A view of at least `floats` elements of module memory (growing it detaches older views). */
  private scratch(floats: number): Float32Array {
    const bytes = floats * 4;
    // Another SimdKernels over the same memory may have grown it (a shared memory's older views
    // keep their old length).
    if (this.f32.byteLength !== this.memory.buffer.byteLength) this.f32 = new Float32Array(this.memory.buffer);
    if (this.f32.byteLength < bytes) {
      this.memory.grow(Math.ceil((bytes - this.f32.byteLength) / PAGE_BYTES));
      this.f32 = new Float32Array(this.memory.buffer);
    }
    return this.f32;
  }

  /**
   * Streams arrays of `length` elements through module memory CHUNK at a time: region k holds
   * `regions[k]`, loaded from `from` before `run` (given the count padded to 4) and stored to
   * `to` after it. A region with neither (an absent gradient) is left alone.
   */
  private streamChunks(length: number, regions: Array<{ from?: Float32Array | null; to?: Float32Array | null }>, run: (padded: number) => void): void {
    const m = this.scratch(regions.length * CHUNK);
    for (let i = 0; i < length; i += CHUNK) {
      const n = Math.min(CHUNK, length - i);
      regions.forEach(({ from }, k) => from && m.set(from.subarray(i, i + n), k * CHUNK));
      run(roundUp4(n));
      regions.forEach(({ to }, k) => to && to.set(m.subarray(k * CHUNK, k * CHUNK + n), i));
    }
  }

  /**
   * Like `streamChunks`, in blocks of SHARED_BLOCK elements, each computed half here and half on
   * the helper thread over this module's (shared) memory: `run(offsets, n)` computes n elements
   * from the given byte offsets (one per region) here, `task(offsets, n)` describes the same for
   * the helper. If the helper fails, its half runs here.
   */
  private streamBlocks(
    helper: HelperThread,
    length: number,
    regions: Array<{ from?: Float32Array | null; to?: Float32Array | null }>,
    task: (offsets: number[], n: number) => HelperTask,
    run: (offsets: number[], n: number) => void,
  ): void {
    const m = this.scratch(regions.length * SHARED_BLOCK);
    const at = (first: number) => regions.map((_, k) => 4 * (k * SHARED_BLOCK + first));
    for (let i = 0; i < length; i += SHARED_BLOCK) {
      const n = Math.min(SHARED_BLOCK, length - i);
      regions.forEach(({ from }, k) => from && m.set(from.subarray(i, i + n), k * SHARED_BLOCK));
      const padded = roundUp4(n);
      const half = (padded >> 1) & ~3;
      const theirs = task(at(half), padded - half);
      if (!helper.split(theirs, () => run(at(0), half))) run(at(half), padded - half);
      regions.forEach(({ to }, k) => to && to.set(m.subarray(k * SHARED_BLOCK, k * SHARED_BLOCK + n), i));
    }
  }

  /** out = SiLU(gate) · up */
  swigluForward(gate: Float32Array, up: Float32Array, out: Float32Array): void {
    const regions = [{ from: gate }, { from: up }, { to: out }];
    const helper = gate.length >= SHARED_MIN ? helperThread() : null;
    if (!helper) return this.streamChunks(gate.length, regions, (n) => this.x.swiglu_forward(0, 4 * CHUNK, 8 * CHUNK, n));
    this.streamBlocks(helper, gate.length, regions,
      ([g, u, o], n) => ({ kind: 'swiglu-forward', gate: g, up: u, out: o, n }),
      ([g, u, o], n) => this.x.swiglu_forward(g, u, o, n));
  }

  /** ∂/∂gate and ∂/∂up of SwiGLU for the output gradient `grad`, written or added as each `beta` says. */
  swigluBackward(gate: Float32Array, up: Float32Array, grad: Float32Array, gateInto: GradInto | null, upInto: GradInto | null): void {
    // A gradient that is overwritten is not copied in.
    const into = (t: GradInto | null) => ({ from: t?.beta === 1 ? t.grad : null, to: t?.grad ?? null });
    const regions = [{ from: gate }, { from: up }, { from: grad }, into(gateInto), into(upInto)];
    const [gateAdd, upAdd] = [gateInto?.beta ?? 0, upInto?.beta ?? 0];
    const helper = gate.length >= SHARED_MIN ? helperThread() : null;
    if (!helper) {
      return this.streamChunks(gate.length, regions, (n) => this.x.swiglu_backward(0, 4 * CHUNK, 8 * CHUNK, 12 * CHUNK, 16 * CHUNK, n, gateAdd, upAdd));
    }
    this.streamBlocks(helper, gate.length, regions,
      ([g, u, d, gi, ui], n) => ({ kind: 'swiglu-backward', gate: g, up: u, grad: d, gateInto: gi, upInto: ui, n, gateAdd, upAdd }),
      ([g, u, d, gi, ui], n) => this.x.swiglu_backward(g, u, d, gi, ui, n, gateAdd, upAdd));
  }

  /** y += alpha·x (same lengths). */
  axpy(alpha: number, x: Float32Array, y: Float32Array): void {
    this.streamChunks(x.length, [{ from: x }, { from: y, to: y }], (n) => this.x.axpy(0, 4 * CHUNK, n, alpha));
  }

  /** out = a + b (same lengths). */
  add(a: Float32Array, b: Float32Array, out: Float32Array): void {
    this.streamChunks(a.length, [{ from: b }, { from: a, to: out }], (n) => this.x.axpy(0, 4 * CHUNK, n, 1));
  }

  /**
   * Softmax of each of `rows` rows of `cols` in place, row r over its first min(cols, end0 + r)
   * entries when `causal`, else over all; the rest of each row, and rows whose entries are all
   * −∞, become 0. Rows whose length is not a multiple of 4 are padded to one in module memory,
   * so every length takes the same arithmetic (a row's result does not depend on its padding).
   */
  softmaxRows(x: Float32Array, rows: number, cols: number, end0: number, causal: boolean): void {
    if (cols === 0) return;
    const stride = roundUp4(cols);
    const per = Math.max(1, Math.floor(BLOCK / stride));
    const m = this.scratch(per * stride);
    for (let r = 0; r < rows; r += per) {
      const n = Math.min(per, rows - r);
      const o = r * cols;
      if (stride === cols) m.set(x.subarray(o, o + n * cols), 0);
      else for (let i = 0; i < n; i++) m.set(x.subarray(o + i * cols, o + (i + 1) * cols), i * stride);
      this.x.softmax_rows(0, n, cols, stride, end0 + r, causal ? 1 : 0);
      if (stride === cols) x.set(m.subarray(0, n * cols), o);
      else for (let i = 0; i < n; i++) x.set(m.subarray(i * stride, i * stride + cols), o + i * cols);
    }
  }

  /**
   * Softmax's backward for `rows` rows of `cols` probabilities `p` and their gradient `dp`, in
   * place: dp = p·(dp − Σ dp·p)·scale. `cols` must pass `rowsFit`.
   */
  softmaxBackward(p: Float32Array, dp: Float32Array, rows: number, cols: number, scale: number): void {
    const per = Math.max(1, Math.floor(CHUNK / cols));
    const m = this.scratch(2 * per * cols);
    for (let r = 0; r < rows; r += per) {
      const n = Math.min(per, rows - r) * cols;
      const o = r * cols;
      m.set(p.subarray(o, o + n), 0);
      m.set(dp.subarray(o, o + n), per * cols);
      this.x.softmax_backward(0, 4 * per * cols, n / cols, cols, scale);
      dp.set(m.subarray(per * cols, per * cols + n), o);
    }
  }

  /** bf16 bit patterns to float32 (exact): `dst[i]`'s bits are `src[i] << 16`. */
  widenBf16(src: Uint16Array, dst: Float32Array): void {
    const m = this.scratch(2 * CHUNK);
    const halves = new Uint16Array(m.buffer, 0, CHUNK);
    for (let i = 0; i < src.length; i += CHUNK) {
      const n = Math.min(CHUNK, src.length - i);
      halves.set(src.subarray(i, i + n));
      this.x.widen_bf16(0, 4 * CHUNK, (n + 7) & ~7);
      dst.set(m.subarray(CHUNK, CHUNK + n), i);
    }
  }

  /** Whether the row kernels (`softmaxBackward`, the RMSNorm ones) take rows of this length. */
  static rowsFit(cols: number): boolean {
    return cols > 0 && cols % 4 === 0 && cols <= CHUNK;
  }

  /** RMSNorm over rows of `cols`: out = x·inv·w, inv = 1/√(mean(x²) + eps) kept in `invRms`. */
  rmsNormForward(x: Float32Array, w: Float32Array, cols: number, eps: number, out: Float32Array, invRms: Float32Array | null): void {
    const rows = x.length / cols;
    const per = Math.floor(CHUNK / cols);
    const m = this.scratch(3 * CHUNK + per);
    m.set(w, 2 * CHUNK);
    for (let r = 0; r < rows; r += per) {
      const n = Math.min(per, rows - r);
      m.set(x.subarray(r * cols, (r + n) * cols), 0);
      this.x.rms_norm_forward(0, 8 * CHUNK, 4 * CHUNK, invRms ? 12 * CHUNK : -1, n, cols, eps);
      out.set(m.subarray(CHUNK, CHUNK + n * cols), r * cols);
      if (invRms) invRms.set(m.subarray(3 * CHUNK, 3 * CHUNK + n), r);
    }
  }

  /** xInto += RMSNorm's input gradient (see `kernels/norm.ts`). */
  rmsNormBackwardInput(x: Float32Array, w: Float32Array, cols: number, invRms: Float32Array, grad: Float32Array, xInto: Float32Array): void {
    const rows = x.length / cols;
    const per = Math.floor(CHUNK / cols);
    const m = this.scratch(4 * CHUNK + per);
    m.set(w, 3 * CHUNK);
    for (let r = 0; r < rows; r += per) {
      const n = Math.min(per, rows - r);
      const [from, to] = [r * cols, (r + n) * cols];
      m.set(x.subarray(from, to), 0);
      m.set(grad.subarray(from, to), CHUNK);
      m.set(xInto.subarray(from, to), 2 * CHUNK);
      m.set(invRms.subarray(r, r + n), 4 * CHUNK);
      this.x.rms_norm_backward_input(0, 12 * CHUNK, 16 * CHUNK, 4 * CHUNK, 8 * CHUNK, n, cols);
      xInto.set(m.subarray(2 * CHUNK, 2 * CHUNK + n * cols), from);
    }
  }

  /**
   * Copies x[o, o+n) to the start of module memory, padded with −∞ to a multiple of 4 (which
   * changes neither the max nor the sum of exponentials), and returns the padded count.
   */
  private loadRow(x: Float32Array, o: number, n: number): number {
    const padded = roundUp4(n);
    const m = this.scratch(padded);
    m.set(x.subarray(o, o + n), 0);
    m.fill(-Infinity, n, padded);
    return padded;
  }

  /**
   * Replaces x[o, o+n) by k·e^(x − max), with k = `scaleOf(sum)`, and returns the row's max and
   * Σ e^(x − max) (in float64): softmax rows and the vocabulary loss's gradient, one copy each
   * way. A row of −∞ only (fully masked) returns max −∞ and is left as it was.
   */
  expScaleRow(x: Float32Array, o: number, n: number, scaleOf: (sum: number) => number): { max: number; sum: number } {
    const padded = this.loadRow(x, o, n);
    const max = this.x.max(0, padded);
    if (max === -Infinity) return { max, sum: 0 };
    const sum = this.x.exp_shift_sum(0, padded, max);
    this.x.scale(0, padded, scaleOf(sum));
    x.set(this.f32.subarray(0, n), o);
    return { max, sum };
  }

  /** log Σ eˣ over x[o, o+n), shifted by the row's max; x is unchanged. */
  logSumExpRow(x: Float32Array, o: number, n: number): number {
    const padded = this.loadRow(x, o, n);
    const max = this.x.max(0, padded);
    if (max === -Infinity) return -Infinity;
    return max + Math.log(this.x.exp_shift_sum(0, padded, max));
  }
}

function roundUp4(n: number): number {
  return (n + 3) & ~3;
}

let active: SimdKernels | null = compiled && process.env.TUNEKIT_SIMD !== '0' ? new SimdKernels(compiled) : null;

/** The SIMD kernels, or null when the scalar JavaScript kernels are in use. */
export function simd(): SimdKernels | null {
  return active;
}

/** Turns the SIMD kernels on or off (tests compare both paths); returns whether they are on. */
export function useSimd(on: boolean): boolean {
  active = on && compiled ? new SimdKernels(compiled) : null;
  return active !== null;
}

/** Whether this runtime can assemble and run the SIMD kernels at all. */
export function simdAvailable(): boolean {
  return compiled !== null;
}
