import { UserError } from '../errors.js';
import type { Backend } from './backend.js';
import { BlasBackend } from './blas.js';
import { JsBackend } from './js.js';
import { keepFreedMemory } from './malloc-policy.js';

export type BackendName = 'js' | 'blas';

let current: Backend | null = null;

/** Opens a backend by name; `blas` fails with the libraries it tried. */
export function openBackend(name: BackendName): Backend {
  if (name === 'js') return new JsBackend();
  const blas = BlasBackend.open();
  if ('error' in blas) throw new UserError(`TUNEKIT_BACKEND=blas: ${blas.error}`);
  return blas;
}

/**
 * The process-wide default: `TUNEKIT_BACKEND` when set, otherwise BLAS when a library loads,
 * otherwise the portable JavaScript backend. Opening it also sets the allocator policy the
 * engine's per-step allocations need (see `malloc-policy.ts`).
 */
export function backend(): Backend {
  if (current) return current;
  keepFreedMemory();
  const forced = process.env.TUNEKIT_BACKEND;
  if (forced !== undefined && forced !== '') {
    if (forced !== 'js' && forced !== 'blas') {
      throw new UserError(`TUNEKIT_BACKEND=${forced} is not a backend; expected js or blas`);
    }
    current = openBackend(forced);
    return current;
  }
  const blas = BlasBackend.open();
  current = 'error' in blas ? new JsBackend() : blas;
  return current;
}

/** Replaces the default backend (tests run one suite per backend with this). */
export function setBackend(b: Backend): void {
  current = b;
}
