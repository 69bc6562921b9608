/**
 * A backend supplies the matrix products; every other kernel is shared plain JavaScript
 * (see `kernels/`). Matrices are row-major Float32Array views; a transposed operand is read
 * as its transpose without being copied, as in BLAS.
 */
export interface GemmArgs {
  transA: boolean;
  transB: boolean;
  /** rows of op(A) and C */
  m: number;
  /** columns of op(B) and C */
  n: number;
  /** columns of op(A) = rows of op(B) */
  k: number;
  alpha: number;
  a: Float32Array;
  lda: number;
  b: Float32Array;
  ldb: number;
  /** 0 overwrites C, 1 accumulates into it */
  beta: number;
  c: Float32Array;
  ldc: number;
}

export interface Backend {
  /** `js` or `blas` */
  readonly name: string;
  /** C = alpha · op(A) · op(B) + beta · C */
  gemm(args: GemmArgs): void;
  /** Human-readable facts for `tunekit env`. */
  describe(): BackendInfo;
}

export interface BackendInfo {
  backend: string;
  library: string | null;
  libraryPath: string | null;
  threads: number;
  config: string | null;
  /** How long the BLAS worker threads spin after a product (OpenBLAS), or null. */
  spin?: string | null;
}
