/**
 * After each product OpenBLAS keeps its worker threads spinning for 2^OPENBLAS_THREAD_TIMEOUT
 * cycles (default 2^28, about 0.1 s here) in case another product follows. In training, on two
 * cores, that spin takes the core the helper thread needs for the element-wise work between
 * products: SwiGLU split over both threads ran 21.9 → 21.5 ms right after a product with the
 * default, 21.9 → 14.7 ms with 2^22 cycles (about 1.5 ms); the LoRA bench step went from 14.8 to
 * 14.1 s (interleaved runs). Decoding, a stream of one-row products, was about 4 % slower with
 * it (11.9 against 12.4 tok/s over five runs each), so only training processes ask for it.
 * (A CI hang once blamed on this setting was a fork on the helper thread during a product; see
 * `startHelperThread`.)
 */
export const TRAINING_THREAD_TIMEOUT = '22';

let loaded = false;
/** The value this process set for training, if it did. */
let setForTraining: string | null = null;

/** Called by the BLAS backend as it loads the library: later settings cannot take effect. */
export function blasLoaded(): void {
  loaded = true;
}

/**
 * Shortens the spin for a training process, before the BLAS library is loaded (OpenBLAS reads
 * OPENBLAS_THREAD_TIMEOUT once, when it starts); a value the user set is kept. Returns what is in
 * effect.
 */
export function shortenBlasSpinForTraining(): string {
  if (!loaded && !process.env.OPENBLAS_THREAD_TIMEOUT) {
    process.env.OPENBLAS_THREAD_TIMEOUT = setForTraining = TRAINING_THREAD_TIMEOUT;
  }
  return blasSpinSetting();
}

/** What is in effect, for `tunekit env`. */
export function blasSpinSetting(): string {
  const value = process.env.OPENBLAS_THREAD_TIMEOUT;
  if (!value) return 'OpenBLAS default (spin 2^28 cycles after a product)';
  if (value === setForTraining) return `OPENBLAS_THREAD_TIMEOUT=${value} for training: threads spin about 2^${value} cycles after a product`;
  return `OPENBLAS_THREAD_TIMEOUT=${value} (yours)`;
}
