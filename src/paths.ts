import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | null = null;

/** The installed package's folder (where package.json is), from source or from dist alike. */
export function packageRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('tunekit: cannot find its package.json');
    dir = up;
  }
  root = dir;
  return dir;
}

/** A file shipped with tunekit under assets/. */
export function assetPath(...parts: string[]): string {
  return join(packageRoot(), 'assets', ...parts);
}
