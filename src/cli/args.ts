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
    return parseArgs({ args: negativeValuesJoined(argv, options), options, allowPositionals: true, strict: true });
  } catch (e) {
    // parseArgs explains some mistakes over several lines; the CLI prints one.
    const message = (e as Error).message.split('\n').join(' ');
    const unknown = /Unknown option '(--?[^']+)'/.exec(message)?.[1];
    if (unknown) {
      const hint = closest(unknown.replace(/^-+/, ''), Object.keys(options));
      throw new UserError(`${command}: unknown option ${unknown}${hint ? `; did you mean --${hint}?` : ''}`);
    }
    throw new UserError(`${command}: ${message}`);
  }
}

/**
 * `--temperature -1` as `--temperature=-1`: parseArgs takes a value that starts with a dash for
 * an option, so a negative number would fail as "ambiguous" instead of reaching the range check.
 */
function negativeValuesJoined(argv: string[], options: Options): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') return [...out, ...argv.slice(i)];
    const next = argv[i + 1];
    if (arg.startsWith('--') && !arg.includes('=') && options[arg.slice(2)]?.type === 'string' && next !== undefined && /^-(\d|\.\d)/.test(next)) {
      out.push(`${arg}=${next}`);
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
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
