import os from 'node:os';
import { keepFreedMemory } from '../../backend/malloc-policy.js';
import { backend } from '../../backend/select.js';
import { helperThreadSetting } from '../../backend/threads/helper-thread.js';
import { simd, simdAvailable } from '../../backend/wasm/simd.js';
import { parseFlags } from '../args.js';
import type { Command } from '../main.js';

export function environmentFacts(): Record<string, string | number | null> {
  const info = backend().describe();
  return {
    backend: info.backend,
    blas_library: info.libraryPath,
    blas_threads: info.backend === 'blas' ? info.threads : null,
    blas_config: info.config,
    blas_spin: info.spin ?? null,
    allocator: keepFreedMemory(),
    simd: simd() ? 'WebAssembly SIMD, 4 float32 lanes' : simdAvailable() ? 'off (TUNEKIT_SIMD=0): scalar JavaScript kernels' : 'unavailable: scalar JavaScript kernels',
    helper_thread: helperThreadSetting(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cores: os.availableParallelism(),
    memory_gb: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
  };
}

export const envCommand: Command = {
  summary: 'show the compute backend, the BLAS library and its threads, Node and the cores',
  run(argv) {
    const { values } = parseFlags('env', argv, { json: { type: 'boolean' }, help: { type: 'boolean' } });
    if (values.help) {
      console.log('usage: tunekit env [--json]\n\nTUNEKIT_BACKEND=js|blas forces a backend; TUNEKIT_BLAS_LIB names a BLAS library to load;\nTUNEKIT_KEEP_FREED_MEMORY=0 lets glibc return freed memory to the system at once;\nTUNEKIT_SIMD=0 runs the scalar JavaScript element-wise kernels;\nTUNEKIT_HELPER_THREAD=0 keeps all element-wise work on the main thread;\nOPENBLAS_THREAD_TIMEOUT bounds how long OpenBLAS threads spin after a product (training sets 22).');
      return 0;
    }
    const facts = environmentFacts();
    if (values.json) console.log(JSON.stringify(facts));
    else for (const [k, v] of Object.entries(facts)) console.log(`${k.padEnd(14)}${v ?? '-'}`);
    return 0;
  },
};
