import koffi, { type LibraryHandle } from 'koffi';
import type { Backend, BackendInfo, GemmArgs } from './backend.js';
import { blasLoaded, blasSpinSetting } from './blas-spin.js';

const CBLAS_ROW_MAJOR = 101;
const CBLAS_NO_TRANS = 111;
const CBLAS_TRANS = 112;

/** Where native BLAS libraries live, in order of preference. `TUNEKIT_BLAS_LIB` goes first. */
export function blasCandidates(): string[] {
  const fromEnv = process.env.TUNEKIT_BLAS_LIB ? [process.env.TUNEKIT_BLAS_LIB] : [];
  if (process.platform === 'darwin') {
    return [...fromEnv, '/System/Library/Frameworks/Accelerate.framework/Accelerate', 'libopenblas.dylib'];
  }
  if (process.platform === 'win32') return [...fromEnv, 'libopenblas.dll', 'mkl_rt.dll'];
  return [...fromEnv, 'libopenblas.so.0', 'libopenblas.so', 'libmkl_rt.so', 'libmkl_rt.so.2', 'libblas.so.3'];
}

type ThreadQuery = () => number;

/** Matrix products through `cblas_sgemm` of a native library loaded at run time with koffi. */
export class BlasBackend implements Backend {
  readonly name = 'blas';
  private readonly sgemm: (...args: unknown[]) => void;
  private readonly sgemv: (...args: unknown[]) => void;
  private readonly threadQuery: ThreadQuery | null;
  private readonly configQuery: (() => string) | null;

  private constructor(
    private readonly lib: LibraryHandle,
    private readonly path: string,
  ) {
    this.sgemm = lib.func(
      'void cblas_sgemm(int, int, int, int, int, int, float, float *, int, float *, int, float, float *, int)',
    ) as (...args: unknown[]) => void;
    this.sgemv = lib.func(
      'void cblas_sgemv(int, int, int, int, float, float *, int, float *, int, float, float *, int)',
    ) as (...args: unknown[]) => void;
    this.threadQuery = optionalFunc(lib, 'int openblas_get_num_threads()') ?? optionalFunc(lib, 'int MKL_Get_Max_Threads()');
    this.configQuery = optionalFunc(lib, 'const char *openblas_get_config()');
  }

  /** Opens the first library that has `cblas_sgemm`, or returns why none could be used. */
  static open(candidates = blasCandidates()): BlasBackend | { error: string } {
    blasLoaded();
    const tried: string[] = [];
    for (const path of candidates) {
      let lib: LibraryHandle;
      try {
        lib = koffi.load(path);
      } catch {
        tried.push(`${path} (not found)`);
        continue;
      }
      try {
        return new BlasBackend(lib, path);
      } catch {
        tried.push(`${path} (no cblas_sgemm)`);
        lib.unload();
      }
    }
    return { error: `no native BLAS found; tried ${tried.join(', ')}` };
  }

  gemm(g: GemmArgs): void {
    if (g.m === 0 || g.n === 0) return;
    if (g.k === 0) {
      // BLAS leaves C untouched when k is 0 only if beta is 1; make it explicit.
      if (g.beta === 0) for (let i = 0; i < g.m; i++) g.c.fill(0, i * g.ldc, i * g.ldc + g.n);
      else if (g.beta !== 1) for (let i = 0; i < g.m; i++) for (let j = 0; j < g.n; j++) g.c[i * g.ldc + j] *= g.beta;
      return;
    }
    if (g.m === 1 && !g.transA) {
      // One row (decoding): a matrix-vector product streams B once instead of packing it for GEMM.
      // C[1×n] = a[1×k]·op(B); with B stored [n, k] (transB) that is B·a, else Bᵀ·a.
      // Some BLAS builds scale y by beta even when it is 0, and 0·NaN from an uninitialised
      // output is NaN: clear the one row first.
      if (g.beta === 0) g.c.fill(0, 0, g.n);
      this.sgemv(CBLAS_ROW_MAJOR, g.transB ? CBLAS_NO_TRANS : CBLAS_TRANS, g.transB ? g.n : g.k, g.transB ? g.k : g.n,
        g.alpha, g.b, g.ldb, g.a, 1, g.beta, g.c, 1);
      return;
    }
    this.sgemm(
      CBLAS_ROW_MAJOR,
      g.transA ? CBLAS_TRANS : CBLAS_NO_TRANS,
      g.transB ? CBLAS_TRANS : CBLAS_NO_TRANS,
      g.m, g.n, g.k, g.alpha, g.a, g.lda, g.b, g.ldb, g.beta, g.c, g.ldc,
    );
  }

  describe(): BackendInfo {
    const name = this.path.split('/').pop() ?? this.path;
    return {
      backend: 'blas',
      library: name,
      libraryPath: this.path,
      threads: this.threadQuery ? this.threadQuery() : 0,
      config: this.configQuery ? this.configQuery() : null,
      spin: blasSpinSetting(),
    };
  }
}

function optionalFunc<T>(lib: LibraryHandle, signature: string): T | null {
  try {
    return lib.func(signature) as unknown as T;
  } catch {
    return null;
  }
}
