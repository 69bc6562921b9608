/**
 * Run as its own process by helper-thread.test.ts, with a cold loader cache: starts the helper
 * thread the way the kernels do, then runs matrix products on both cores for a while. Exits 0
 * when all of them return.
 */
import { backend } from '../../src/backend/select.js';
import { startHelperThread } from '../../src/backend/threads/helper-thread.js';

const be = backend();
startHelperThread();
const n = 512;
const a = new Float32Array(n * n).fill(0.5);
const b = new Float32Array(n * n).fill(0.25);
const c = new Float32Array(n * n);
const until = Date.now() + 2000;
let products = 0;
while (Date.now() < until) {
  be.gemm({ transA: false, transB: true, m: n, n, k: n, alpha: 1, a, lda: n, b, ldb: n, beta: 0, c, ldc: n });
  products++;
}
if (c[0] !== n * 0.125) throw new Error(`wrong product: ${c[0]}`);
console.log(`products ${products}`);
