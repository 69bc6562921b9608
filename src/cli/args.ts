import { parseArgs } from 'node:util';
import type { ParseArgsConfig } from 'node:util';
import { UserError } from '../errors.js';

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * Parses a command's flags; an unknown flag is the user's mistake and names the closest
 * known one.
 */
export function parseFlags<O extends Options>(
  command: string,
  argv: string[],
  options: O,
): ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>> {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    const message = (e as Error).message;
    const unknown = /Unknown option '(--?[^']+)'/.exec(message)?.[1];
    if (unknown) {
      const hint = closest(unknown.replace(/^-+/, ''), Object.keys(options));
      throw new UserError(`${command}: unknown option ${unknown}${hint ? `; did you mean --${hint}?` : ''}`);
    }
    throw new UserError(`${command}: ${message}`);
  }
}

export function requireFlag<T>(command: string, value: T | undefined, flag: string): T {
  if (value === undefined || value === '') throw new UserError(`${command}: --${flag} is required`);
  return value;
}

/** A numeric flag, checked. */
export function numberFlag(command: string, value: string | undefined, flag: string, opts: { integer?: boolean; min?: number } = {}): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || (opts.integer && !Number.isInteger(n)) || (opts.min !== undefined && n < opts.min)) {
    const what = opts.integer ? 'an integer' : 'a number';
    throw new UserError(`${command}: --${flag} must be ${what}${opts.min !== undefined ? ` ≥ ${opts.min}` : ''}, got "${value}"`);
  }
  return n;
}

/** The known name nearest to `name` by edit distance, when it is near enough to be a typo. */
export function closest(name: string, known: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = editDistance(name, k);
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best !== null && bestDistance <= Math.max(2, Math.floor(name.length / 3)) ? best : null;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length];
}
