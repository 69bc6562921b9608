/**
 * Choosing the compute backend: `openBackend` by name, and `TUNEKIT_BACKEND` as `tunekit env`
 * reports it. The default backend is cached for the whole process, so each environment runs in
 * a child process of its own.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';

import { BlasBackend } from '../src/backend/blas.js';
import { openBackend } from '../src/backend/select.js';

const MAIN = pathToFileURL(path.resolve('src/cli/main.ts')).href;

interface ChildRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `tunekit ...argv` in a fresh Node process with `env` added to the environment. */
function tunekit(argv: string[], env: Record<string, string>): ChildRun {
  const script = `const { main } = await import(${JSON.stringify(MAIN)}); process.exitCode = await main(${JSON.stringify(argv)});`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const blasAvailable = !('error' in BlasBackend.open());

/** C = A·B for a 2×3 by 3×2 product, through a backend's gemm. */
function product(name: 'js' | 'blas'): number[] {
  const b = openBackend(name);
  const c = new Float32Array(4);
  b.gemm({
    transA: false, transB: false, m: 2, n: 2, k: 3, alpha: 1,
    a: Float32Array.of(1, 2, 3, 4, 5, 6), lda: 3,
    b: Float32Array.of(7, 8, 9, 10, 11, 12), ldb: 2,
    beta: 0, c, ldc: 2,
  });
  return [...c];
}

describe('openBackend', () => {
  it('"js" is the portable backend and multiplies correctly', () => {
    const b = openBackend('js');
    assert.equal(b.name, 'js');
    assert.deepEqual(b.describe(), { backend: 'js', library: null, libraryPath: null, threads: 1, config: null });
    assert.deepEqual(product('js'), [58, 64, 139, 154]);
  });

  it('"blas" loads a native library and gives the same product', { skip: blasAvailable ? false : 'no BLAS library on this machine' }, () => {
    const b = openBackend('blas');
    assert.equal(b.name, 'blas');
    const info = b.describe();
    assert.equal(info.backend, 'blas');
    assert.ok(info.libraryPath && info.library && info.libraryPath.endsWith(info.library));
    assert.ok(info.threads >= 1);
    assert.deepEqual(product('blas'), [58, 64, 139, 154]);
  });
});

describe('TUNEKIT_BACKEND', () => {
  it('=js forces the portable backend: env reports no BLAS', () => {
    const r = tunekit(['env', '--json'], { TUNEKIT_BACKEND: 'js' });
    assert.equal(r.code, 0, r.stderr);
    const facts = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.equal(facts.backend, 'js');
    assert.equal(facts.blas_library, null);
    assert.equal(facts.blas_threads, null);
  });

  it('=blas forces BLAS: env reports the library and its threads', { skip: blasAvailable ? false : 'no BLAS library on this machine' }, () => {
    const r = tunekit(['env', '--json'], { TUNEKIT_BACKEND: 'blas' });
    assert.equal(r.code, 0, r.stderr);
    const facts = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.equal(facts.backend, 'blas');
    assert.equal(typeof facts.blas_library, 'string');
    assert.ok((facts.blas_threads as number) >= 1);
  });

  it('unset picks BLAS when a library loads, else js', () => {
    const r = tunekit(['env', '--json'], { TUNEKIT_BACKEND: '' });
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { backend: string }).backend, blasAvailable ? 'blas' : 'js');
  });

  it('=foo fails, naming the value and the choices', () => {
    const r = tunekit(['env', '--json'], { TUNEKIT_BACKEND: 'foo' });
    assert.notEqual(r.code, 0);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /TUNEKIT_BACKEND=foo is not a backend; expected js or blas/);
  });

  // A wrong environment variable is the user's mistake, which the CLI answers with one line and
  // exit 2. Today backend() throws a plain Error from src/backend/select.ts, so main() lets the
  // stack trace through and Node exits 1.
  it('=foo is a user error: exit 2, one line, no stack trace', () => {
    const r = tunekit(['env'], { TUNEKIT_BACKEND: 'foo' });
    assert.equal(r.code, 2);
    assert.equal(r.stderr, 'tunekit: error: TUNEKIT_BACKEND=foo is not a backend; expected js or blas\n');
  });
});
