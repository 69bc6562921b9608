/**
 * Float32 <-> BF16 / F16 conversions on raw bit patterns, as PyTorch and the safetensors files
 * it writes define them: f32 -> bf16/f16 rounds to nearest, ties to even; NaN stays NaN (quiet),
 * infinities stay infinite, f16 overflow becomes infinity and f16 underflow goes through the
 * subnormals before reaching zero.
 *
 * Each function converts `src` into `dst` (same length), so a caller can convert a large tensor
 * in chunks through one reused buffer, and returns `dst`.
 */

function bitsOf(src: Float32Array): Uint32Array {
  return new Uint32Array(src.buffer, src.byteOffset, src.length);
}

function checkLengths(src: ArrayLike<number>, dst: ArrayLike<number>): void {
  if (src.length !== dst.length) {
    throw new RangeError(`dtype conversion: source has ${src.length} values, destination ${dst.length}`);
  }
}

export function f32ToBf16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  checkLengths(src, dst);
  const bits = bitsOf(src);
  for (let i = 0; i < bits.length; i++) {
    const x = bits[i];
    if ((x & 0x7fffffff) > 0x7f800000) {
      // Truncating a NaN could clear every mantissa bit left and make it an infinity.
      dst[i] = (x >>> 16) | 0x0040;
    } else {
      // Adding 0x7fff (+1 when the kept part is odd) carries into bit 16 exactly when the
      // dropped half is above the midpoint, or at it with an odd kept part: ties to even.
      dst[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
    }
  }
  return dst;
}

export function bf16ToF32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  checkLengths(src, dst);
  const bits = bitsOf(dst);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return dst;
}

/** One float32 bit pattern to the nearest f16 bit pattern. */
function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x0200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15; // f16 biased exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal f16 = m * 2^-24. The full f32 significand (with its hidden bit) is shifted
    // down to that unit; beyond a shift of 24 even rounding up cannot reach m = 1.
    if (e < -10) return sign;
    const full = mant | 0x800000;
    const shift = 14 - e;
    return sign | roundShift(full, shift);
  }
  // A carry out of the mantissa correctly bumps the exponent, up to infinity (0x7c00).
  return sign | ((e << 10) + roundShift(mant, 13));
}

/** `value >>> shift`, rounded to nearest with ties to even. */
function roundShift(value: number, shift: number): number {
  const kept = value >>> shift;
  const rest = value & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return rest > half || (rest === half && (kept & 1) === 1) ? kept + 1 : kept;
}

export function f32ToF16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  checkLengths(src, dst);
  const bits = bitsOf(src);
  for (let i = 0; i < bits.length; i++) dst[i] = f32BitsToF16(bits[i]);
  return dst;
}

/** f16 bit pattern -> f32 bit pattern for all 65536 values; 256 KiB, built on first use. */
let f16Table: Uint32Array | null = null;

function f16ToF32Table(): Uint32Array {
  if (f16Table) return f16Table;
  const table = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    let mant = h & 0x3ff;
    if (exp === 0x1f) {
      table[h] = sign | 0x7f800000 | (mant << 13);
    } else if (exp !== 0) {
      table[h] = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    } else if (mant === 0) {
      table[h] = sign;
    } else {
      // Subnormal: every f16 subnormal is a normal f32, so move the leading 1 up to the
      // hidden-bit position and lower the exponent to match.
      let e = 127 - 15 + 1;
      while ((mant & 0x400) === 0) {
        mant <<= 1;
        e--;
      }
      table[h] = sign | (e << 23) | ((mant & 0x3ff) << 13);
    }
  }
  f16Table = table;
  return table;
}

export function f16ToF32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  checkLengths(src, dst);
  const table = f16ToF32Table();
  const bits = bitsOf(dst);
  for (let i = 0; i < src.length; i++) bits[i] = table[src[i]];
  return dst;
}
