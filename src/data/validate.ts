/**
 * Row checks and how their failures are reported: each bad row gives one line naming the file,
 * the row (or line), the field and what was expected, e.g.
 * `examples/bad.json: row 3: "output" is missing (expected a string)`.
 */
import { UserError } from '../errors.js';
import { describeSource, type Source } from './types.js';

/** Thrown by converters for a row that cannot be used; the loader adds where the row is. */
export class InvalidRow extends Error {
  constructor(problem: string) {
    super(problem);
    this.name = 'InvalidRow';
  }
}

/** How many problems a report lists; the rest are counted. */
export const MAX_LISTED_PROBLEMS = 5;

/** `a number`, `an array`, `null` … for "is a number (expected a string)". */
export function describeType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  const t = typeof value;
  return t === 'object' || t === 'undefined' ? `an ${t}` : `a ${t}`;
}

export type Row = Record<string, unknown>;

/** The row as an object, or an InvalidRow saying what it is instead. */
export function asRow(value: unknown): Row {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidRow(`expected an object, got ${describeType(value)}`);
  }
  return value as Row;
}

/** `row[key]` as a string: missing, null or another type is a problem; '' is allowed unless `nonEmpty`. */
export function requiredString(row: Row, key: string, label = key, nonEmpty = false): string {
  const value = row[key];
  if (value === undefined || value === null) throw new InvalidRow(`"${label}" is missing (expected a string)`);
  if (typeof value !== 'string') throw new InvalidRow(`"${label}" is ${describeType(value)} (expected a string)`);
  if (nonEmpty && value.trim() === '') throw new InvalidRow(`"${label}" is empty`);
  return value;
}

/** `row[key]` as a string, or '' when absent or null; another type is a problem. */
export function optionalString(row: Row, key: string | null, label = key ?? ''): string {
  if (key === null) return '';
  const value = row[key];
  if (value === undefined || value === null) return '';
  if (typeof value !== 'string') throw new InvalidRow(`"${label}" is ${describeType(value)} (expected a string)`);
  return value;
}

/** Collects the problems of one load; see {@link ProblemLog.report}. */
export class ProblemLog {
  count = 0;
  readonly first: string[] = [];

  add(source: Source, problem: string): void {
    this.count++;
    if (this.first.length < MAX_LISTED_PROBLEMS) this.first.push(`${describeSource(source)}: ${problem}`);
  }

  /**
   * Nothing when there were no problems or `skipInvalid`; otherwise a UserError listing the first
   * few and how many in all, so training never starts on data with silently missing rows.
   */
  report(total: number, skipInvalid: boolean): void {
    if (this.count === 0 || skipInvalid) return;
    const rows = this.count === 1 ? '1 row is' : `${this.count} rows are`;
    const more = this.count - this.first.length;
    const lines = [
      `${rows} invalid (of ${total}); fix them, or set skip_invalid: true (--skip-invalid) to drop them:`,
      ...this.first.map((p) => `  ${p}`),
      ...(more > 0 ? [`  … and ${more} more`] : []),
    ];
    throw new UserError(lines.join('\n'));
  }
}
