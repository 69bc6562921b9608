import type { Backend, BackendInfo, GemmArgs } from './backend.js';

/**
 * The portable reference backend: the definition every faster backend is tested against.
 * The loop order keeps the innermost loop on contiguous memory for the common layouts.
 */
export class JsBackend implements Backend {
  readonly name = 'js';

  gemm(g: GemmArgs): void {
    const { m, n, k, alpha, beta, a, b, c, lda, ldb, ldc, transA, transB } = g;
    if (beta === 0) for (let i = 0; i < m; i++) c.fill(0, i * ldc, i * ldc + n);
    else if (beta !== 1) for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) c[i * ldc + j] *= beta;
    if (!transB) {
      // C[i,:] += alpha * A[i,p] * B[p,:]
      for (let i = 0; i < m; i++) {
        const ci = i * ldc;
        for (let p = 0; p < k; p++) {
          const av = alpha * (transA ? a[p * lda + i] : a[i * lda + p]);
          if (av === 0) continue;
          const bp = p * ldb;
          for (let j = 0; j < n; j++) c[ci + j] += av * b[bp + j];
        }
      }
      return;
    }
    // B transposed: C[i,j] = dot(A[i,:], B[j,:]) — both rows contiguous when A is not transposed.
    if (!transA) {
      for (let i = 0; i < m; i++) {
        const ai = i * lda;
        const ci = i * ldc;
        for (let j = 0; j < n; j++) {
          const bj = j * ldb;
          let s = 0;
          for (let p = 0; p < k; p++) s += a[ai + p] * b[bj + p];
          c[ci + j] += alpha * s;
        }
      }
      return;
    }
    for (let i = 0; i < m; i++) {
      const ci = i * ldc;
      for (let j = 0; j < n; j++) {
        const bj = j * ldb;
        let s = 0;
        for (let p = 0; p < k; p++) s += a[p * lda + i] * b[bj + p];
        c[ci + j] += alpha * s;
      }
    }
  }

  describe(): BackendInfo {
    return { backend: 'js', library: null, libraryPath: null, threads: 1, config: null };
  }
}
