import { bf16ToF32, f32ToBf16 } from '../../io/dtype.js';
import { simd } from '../wasm/simd.js';

/**
 * bfloat16 storage for frozen weights: a bf16 value is the high 16 bits of a float32, so
 * widening is exact (`f32bits = u16 << 16`) and narrowing rounds to nearest, ties to even, as
 * PyTorch does; NaN stays a (quiet) NaN, ±Inf and −0 are kept.
 *
 * The matrix products stay float32: a bf16 weight is widened into one process-wide scratch
 * buffer right before the gemm that reads it and is not kept (see `widenToScratch`).
 */

/** float32 -> bf16 bit patterns, round to nearest even (`io/dtype.ts`, the file formats' rules). */
export const narrowToBf16 = f32ToBf16;

/** bf16 bit patterns -> float32, exactly; through the SIMD kernel when it is on. */
export function widenBf16(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  const vector = simd();
  if (!vector || dst.length !== src.length) return bf16ToF32(src, dst);
  vector.widenBf16(src, dst);
  return dst;
}

/** The nearest bf16 value of `x`, as a float32 number (what storing and widening gives back). */
export function roundToBf16(x: number): number {
  const f = Float32Array.of(x);
  return widenBf16(narrowToBf16(f))[0];
}

let scratch = new Float32Array(0);

/**
 * `src` widened into the shared scratch buffer, which grows to the largest weight seen and is
 * then reused. The view is valid only until the next call: read it at once (one gemm), never
 * keep it. Everything that runs here is synchronous, so no two users overlap.
 */
export function widenToScratch(src: Uint16Array): Float32Array {
  if (scratch.length < src.length) scratch = new Float32Array(src.length);
  return widenBf16(src, scratch.subarray(0, src.length));
}

/** Bytes the scratch buffer holds now (for memory reports). */
export function scratchBytes(): number {
  return scratch.byteLength;
}
