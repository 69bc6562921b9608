/**
 * After each product OpenBLAS keeps its worker threads spinning for 2^OPENBLAS_THREAD_TIMEOUT
 * cycles (default 2^28, about 0.1 s here) in case another product follows. On two cores that
 * spin takes the core the helper thread needs for the element-wise work between products: SwiGLU
 * split over both threads ran 21.9 → 21.5 ms right after a product with the default, 21.9 → 14.7
 * ms with 2^22 cycles (about 1.5 ms, still longer than the gaps between the one-row products of
 * decoding, which stayed at 93–96 % of its bound). The LoRA bench step went from 14.8 to 14.1 s
 * (interleaved runs).
 */
export const THREAD_TIMEOUT = '22';

/**
 * Sets OPENBLAS_THREAD_TIMEOUT for the library about to be loaded (OpenBLAS reads it once, when
 * it starts), unless the user set it. Returns what is in effect, for `tunekit env`.
 */
export function limitBlasSpin(): string {
  const own = process.env.OPENBLAS_THREAD_TIMEOUT;
  if (own !== undefined && own !== '') return `OPENBLAS_THREAD_TIMEOUT=${own} (yours)`;
  process.env.OPENBLAS_THREAD_TIMEOUT = THREAD_TIMEOUT;
  return `OPENBLAS_THREAD_TIMEOUT=${THREAD_TIMEOUT}: worker threads spin about 2^${THREAD_TIMEOUT} cycles after a product`;
}
