import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Backend, GemmArgs } from '../src/backend/backend.js';
import { openBackend, setBackend } from '../src/backend/select.js';
import type { BackendName } from '../src/backend/select.js';
import { Rng } from './helpers/gradcheck.js';
import { registerOpCases } from './helpers/op-cases.js';

/**
 * One suite, run once per backend: the `js` backend is the definition, and every other backend
 * must pass exactly what it passes. GEMM is checked against a float64 triple loop; then every
 * op case (forward against float64, backward against finite differences) runs on the backend.
 */

const U = 2 ** -24; // float32 unit roundoff

interface GemmCase {
  transA: boolean;
  transB: boolean;
  m: number;
  n: number;
  k: number;
  alpha?: number;
  beta?: number;
  /** Extra elements at the end of each row of A, B, C (lda > width, ...). */
  pad?: number;
  /** Where each matrix starts inside its buffer (passed as a subarray). */
  offset?: number;
}

const SENTINEL = 777;

/**
 * Runs one GEMM on `be` with operands inside larger buffers and checks every element of C against
 * float64, within the standard bound (k+3)·u·(|α|·Σ|a·b| + |β·c|) doubled, and that C's padding and
 * prefix are untouched.
 */
function checkGemm(be: Backend, c: GemmCase, seed: number): void {
  const { transA, transB, m, n, k } = c;
  const alpha = c.alpha ?? 1;
  const beta = c.beta ?? 0;
  const pad = c.pad ?? 0;
  const offset = c.offset ?? 0;
  const rng = new Rng(seed);
  const [aRows, aCols] = transA ? [k, m] : [m, k];
  const [bRows, bCols] = transB ? [n, k] : [k, n];
  const lda = Math.max(1, aCols + pad);
  const ldb = Math.max(1, bCols + pad);
  const ldc = Math.max(1, n + pad);
  // Padding of A and B holds random values too: a backend that reads it gets a wrong answer.
  const aBuf = rng.normals(offset + aRows * lda);
  const bBuf = rng.normals(offset + bRows * ldb);
  const cBuf = new Float32Array(offset + m * ldc).fill(SENTINEL);
  const c0 = rng.normals(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) cBuf[offset + i * ldc + j] = beta === 0 ? Number.NaN : c0[i * n + j];
  }
  const a = aBuf.subarray(offset);
  const b = bBuf.subarray(offset);
  const args: GemmArgs = { transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c: cBuf.subarray(offset), ldc };
  be.gemm(args);

  const what = `${be.name} gemm transA=${transA} transB=${transB} m=${m} n=${n} k=${k} alpha=${alpha} beta=${beta} pad=${pad} offset=${offset}`;
  for (let i = 0; i < offset; i++) assert.equal(cBuf[i], SENTINEL, `${what}: C[-${offset - i}] before the matrix was written`);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < ldc; j++) {
      const got = cBuf[offset + i * ldc + j];
      if (j >= n) {
        assert.equal(got, SENTINEL, `${what}: padding C[${i}, ${j}] was written`);
        continue;
      }
      let s = 0;
      let abs = 0;
      for (let p = 0; p < k; p++) {
        const x = transA ? a[p * lda + i] : a[i * lda + p];
        const y = transB ? b[j * ldb + p] : b[p * ldb + j];
        s += x * y;
        abs += Math.abs(x * y);
      }
      const prior = beta === 0 ? 0 : beta * c0[i * n + j];
      const expected = alpha * s + prior;
      const bound = 2 * (k + 3) * U * (Math.abs(alpha) * abs + Math.abs(prior)) + 1e-30;
      if (!(Math.abs(got - expected) <= bound)) {
        assert.fail(`${what}: C[${i}, ${j}] = ${got}, expected ${expected} (error ${Math.abs(got - expected)} > ${bound})`);
      }
    }
  }
}

const TRANSPOSES: Array<[boolean, boolean]> = [[false, false], [true, false], [false, true], [true, true]];
const SIZES = [1, 3, 17, 65];

function registerGemmCases(be: Backend): void {
  it('gemm matches float64 for all transposes and sizes 1, 3, 17, 65 (m × n × k)', () => {
    let seed = 100;
    for (const [transA, transB] of TRANSPOSES) {
      for (const m of SIZES) for (const n of SIZES) for (const k of SIZES) checkGemm(be, { transA, transB, m, n, k }, seed++);
    }
  });

  it('gemm on strided sub-matrices (lda, ldb, ldc wider than the rows; subarray offsets)', () => {
    let seed = 200;
    for (const [transA, transB] of TRANSPOSES) {
      for (const [m, n, k] of [[3, 17, 5], [17, 3, 65], [1, 65, 3], [65, 1, 17]]) {
        for (const pad of [1, 7]) checkGemm(be, { transA, transB, m, n, k, pad, offset: 5 }, seed++);
      }
    }
  });

  it('gemm alpha ≠ 1 and beta 0 (C is overwritten, even NaN), 1 (accumulates) and 0.5', () => {
    let seed = 300;
    for (const [transA, transB] of TRANSPOSES) {
      for (const alpha of [1, -1.5, 0.25]) {
        for (const beta of [0, 1, 0.5]) {
          checkGemm(be, { transA, transB, m: 17, n: 3, k: 65, alpha, beta, pad: 2, offset: 3 }, seed++);
          checkGemm(be, { transA, transB, m: 3, n: 17, k: 1, alpha, beta }, seed++);
        }
      }
    }
  });

  it('gemm with k = 0 leaves beta·C (beta 0 gives zeros even over NaN)', () => {
    for (const beta of [0, 1, 0.5]) checkGemm(be, { transA: false, transB: false, m: 3, n: 4, k: 0, alpha: 2, beta, pad: 1 }, 400);
  });

  it('gemm with m = 0 or n = 0 writes nothing', () => {
    checkGemm(be, { transA: false, transB: true, m: 0, n: 4, k: 3, pad: 1, offset: 2 }, 401);
    checkGemm(be, { transA: true, transB: false, m: 3, n: 0, k: 3, pad: 1, offset: 2 }, 402);
  });
}

for (const name of ['js', 'blas'] as BackendName[]) {
  let be: Backend | null = null;
  let why = '';
  if (name === 'js') be = openBackend(name);
  else {
    try {
      be = openBackend(name);
    } catch (e) {
      why = e instanceof Error ? e.message : String(e);
    }
  }
  describe(`backend ${name}`, () => {
    if (!be) {
      it(`${name} conformance`, (t) => t.skip(`skipped: no BLAS library loads (${why})`));
      return;
    }
    const backend = be;
    it('identifies itself', () => {
      assert.equal(backend.name, name);
      assert.equal(backend.describe().backend, name);
    });
    describe('gemm', () => registerGemmCases(backend));
    describe('ops', () => registerOpCases(() => setBackend(backend)));
  });
}
