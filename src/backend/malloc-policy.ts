import koffi from 'koffi';

/**
 * Training allocates and drops hundreds of megabytes of activations every step. By default glibc
 * gives blocks above its mmap threshold straight back to the kernel, so every new block pays a
 * page fault per 4 KB on first touch (about 0.4 ms per MB on the benchmark VM, and the faults
 * land inside the matrix products that first write those pages). Raising the mmap and trim
 * thresholds keeps freed memory in the process for the next step: the LoRA bench step went from
 * about 300,000 page faults to about 10. The price is that resident memory stays at its peak.
 */
const M_TRIM_THRESHOLD = -1;
const M_MMAP_THRESHOLD = -3;
/** Blocks above this still come from mmap: nothing the engine allocates per step is this large. */
const MMAP_THRESHOLD_BYTES = 1 << 30;
const TRIM_THRESHOLD_BYTES = 2 ** 31 - 1;

let applied: string | null = null;

/**
 * Applies the policy once per process where the C library is glibc; elsewhere (macOS, Windows,
 * musl) it does nothing. `TUNEKIT_KEEP_FREED_MEMORY=0` leaves the allocator as it is. Returns what
 * is in effect, for `tunekit env`.
 */
export function keepFreedMemory(): string {
  if (applied !== null) return applied;
  applied = 'system default';
  if (process.env.TUNEKIT_KEEP_FREED_MEMORY === '0') return (applied = 'system default (TUNEKIT_KEEP_FREED_MEMORY=0)');
  if (process.platform !== 'linux') return applied;
  try {
    const mallopt = koffi.load('libc.so.6').func('int mallopt(int, int)') as (param: number, value: number) => number;
    if (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) === 1 && mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) === 1) {
      applied = 'glibc, freed memory kept for reuse (mmap threshold 1 GiB)';
    }
  } catch {
    // Not glibc: its allocator keeps its own policy.
  }
  return applied;
}
