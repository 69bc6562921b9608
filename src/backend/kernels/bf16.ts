import { simd } from '../wasm/simd.js';

/**
 * bfloat16 storage for frozen weights: a bf16 value is the high 16 bits of a float32, so
 * widening is exact (`f32bits = u16 << 16`) and narrowing rounds to nearest, ties to even, as
 * PyTorch does; NaN stays a (quiet) NaN, ±Inf and −0 are kept.
 *
 * The matrix products stay float32: a bf16 weight is widened into one process-wide scratch
 * buffer right before the gemm that reads it and is not kept (see `widenToScratch`).
 */

/** float32 -> bf16 bit patterns, round to nearest even. `dst` may be a view of the same length. */
export function narrowToBf16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  if (dst.length !== src.length) throw new RangeError(`narrowToBf16: ${src.length} values into ${dst.length}`);
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) {
    const x = bits[i];
    if ((x & 0x7fffffff) > 0x7f800000) {
      // NaN: truncating could clear every mantissa bit left and turn it into an infinity.
      dst[i] = (x >>> 16) | 0x0040;
    } else {
      // +0x7fff (+1 more when the kept half is odd) carries into bit 16 exactly when the
      // dropped half is above the midpoint, or at it with an odd kept half: ties to even.
      // The sum can pass 2^32 only for NaN patterns, handled above.
      dst[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
    }
  }
  return dst;
}

/** bf16 bit patterns -> float32, exactly. */
export function widenBf16(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  if (dst.length !== src.length) throw new RangeError(`widenBf16: ${src.length} values into ${dst.length}`);
  const vector = simd();
  if (vector) {
    vector.widenBf16(src, dst);
    return dst;
  }
  const bits = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
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
