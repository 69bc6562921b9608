/**
 * The benchmark's vocabulary: a section measures figures; a figure may name another figure as
 * its bound (the best the machine could do), and the report prints the fraction reached.
 * Timing helpers live here too, so every section times the same way.
 */
import { performance } from 'node:perf_hooks';
import type { CausalLM } from '../src/models/decoder.js';

/** One measured (or stated) number or fact, printed as a table row and a JSON key. */
export interface Figure {
  /** JSON key, snake_case, e.g. `decode_tokens_per_s`. */
  key: string;
  /** Table label. */
  label: string;
  value: number | string;
  unit?: string;
  /** Decimals shown in the table and kept in the JSON; default 2. */
  digits?: number;
  /** Key of the figure this one is measured against (may come from another section). */
  bound?: string;
  /** How it was measured, shown after the row. */
  note?: string;
}

export interface BenchContext {
  /**
   * A figure measured by another section, running that section first if it has not run yet
   * (so `--only inference` still gets its bounds).
   */
  figure(key: string): Promise<number>;
  /** The benchmarked model (qwen2.5-0.5b, random fp32 weights), built on first use and shared. */
  model(): CausalLM;
  /** A line on stderr for the slow parts; stdout stays the report. */
  progress(message: string): void;
}

export interface Section {
  /** What `--only` takes. */
  name: string;
  title: string;
  /** Keys of the figures it returns, so others can ask for them through `ctx.figure`. */
  provides: string[];
  run(ctx: BenchContext): Promise<Figure[]> | Figure[];
}

/** Seconds taken by `fn`. */
export function seconds(fn: () => void): number {
  const start = performance.now();
  fn();
  return (performance.now() - start) / 1000;
}

/** The smallest of `runs` timings: the machine's rate with the least interference. */
export function bestSeconds(runs: number, fn: () => void): number {
  let best = Infinity;
  for (let i = 0; i < runs; i++) best = Math.min(best, seconds(fn));
  return best;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error('median of no values');
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export const MB = 1024 * 1024;
export const GB = 1e9;
