/**
 * Rule-based rewards for PPO, declared in the config, never code: each rule tests the generated
 * answer and adds its weight when the test passes. A reward_function is one rule or a list:
 *
 *   reward_function:
 *     - contains: [您好, 欢迎]     # any of these appears            (+weight)
 *       weight: 1
 *     - contains_all: [小笼包, 元]  # every one appears
 *     - not_contains: 不知道        # none appears
 *     - regex: "\\d+元"            # a JavaScript regular expression matches
 *       flags: i
 *     - length: {min: 10, max: 80}  # answer length in characters within the bounds
 *       weight: 0.5
 *
 * `count: true` on contains or regex adds the weight once per occurrence instead of once.
 */
import { UserError } from '../../errors.js';

export type RewardRule =
  | { kind: 'contains' | 'contains_all' | 'not_contains'; words: string[]; weight: number; count: boolean }
  | { kind: 'regex'; pattern: string; flags: string; weight: number; count: boolean }
  | { kind: 'length'; min: number; max: number; weight: number; count: false };

/** Parsed and checked rules, plain data (JSON-serialisable). */
export interface RewardFunction {
  rules: RewardRule[];
}

const KINDS = ['contains', 'contains_all', 'not_contains', 'regex', 'length'] as const;
const EXTRA_KEYS = new Set(['weight', 'count', 'flags']);

/** Checks a `reward_function` value from a config; `where` names it in errors. */
export function parseRewardFunction(value: unknown, where: string): RewardFunction {
  const list = Array.isArray(value) ? value : [value];
  if (list.length === 0) throw new UserError(`${where}: expected a rule or a list of rules, got an empty list`);
  return { rules: list.map((item, i) => parseRule(item, Array.isArray(value) ? `${where}[${i}]` : where)) };
}

function parseRule(item: unknown, where: string): RewardRule {
  if (typeof item !== 'object' || item === null || Array.isArray(item)) {
    throw new UserError(`${where}: expected a rule such as {contains: [您好], weight: 1}, got ${JSON.stringify(item)}`);
  }
  const r = item as Record<string, unknown>;
  const kinds = KINDS.filter((k) => r[k] !== undefined);
  if (kinds.length !== 1) {
    throw new UserError(`${where}: a rule has exactly one of ${KINDS.join(', ')}${kinds.length ? `; this one has ${kinds.join(' and ')}` : ''}`);
  }
  for (const key of Object.keys(r)) {
    if (!EXTRA_KEYS.has(key) && !(KINDS as readonly string[]).includes(key)) {
      throw new UserError(`${where}: unknown key "${key}" (a rule has one of ${KINDS.join(', ')}, and weight, count, flags)`);
    }
  }
  const weight = r.weight ?? 1;
  if (typeof weight !== 'number' || !Number.isFinite(weight)) throw new UserError(`${where}: "weight" must be a number, got ${JSON.stringify(weight)}`);
  const count = r.count ?? false;
  if (typeof count !== 'boolean') throw new UserError(`${where}: "count" must be true or false`);
  const kind = kinds[0];
  if (r.flags !== undefined && kind !== 'regex') throw new UserError(`${where}: "flags" goes with regex only`);
  if (count && (kind === 'contains_all' || kind === 'not_contains' || kind === 'length')) {
    throw new UserError(`${where}: "count" goes with contains or regex only`);
  }
  if (kind === 'regex') {
    const pattern = r.regex;
    const flags = r.flags ?? '';
    if (typeof pattern !== 'string' || pattern === '') throw new UserError(`${where}: "regex" must be a non-empty string`);
    if (typeof flags !== 'string' || !/^[imsu]*$/.test(flags)) throw new UserError(`${where}: "flags" may hold i, m, s and u`);
    try {
      new RegExp(pattern, flags);
    } catch (e) {
      throw new UserError(`${where}: "regex" ${JSON.stringify(pattern)} is not a valid regular expression (${(e as Error).message})`);
    }
    return { kind, pattern, flags, weight, count };
  }
  if (kind === 'length') {
    const b = r.length;
    if (typeof b !== 'object' || b === null || Array.isArray(b)) throw new UserError(`${where}: "length" must be {min: N, max: N}`);
    const { min = 0, max = Infinity, ...rest } = b as Record<string, unknown>;
    if (Object.keys(rest).length) throw new UserError(`${where}: "length" takes min and max only`);
    if (typeof min !== 'number' || typeof max !== 'number' || !(min >= 0 && max >= min)) {
      throw new UserError(`${where}: "length" needs 0 ≤ min ≤ max, got ${JSON.stringify(b)}`);
    }
    return { kind, min, max, weight, count: false };
  }
  const raw = r[kind];
  const words = typeof raw === 'string' ? [raw] : raw;
  if (!Array.isArray(words) || words.length === 0 || !words.every((w) => typeof w === 'string' && w !== '')) {
    throw new UserError(`${where}: "${kind}" must be a non-empty string or a list of them`);
  }
  return { kind, words: words as string[], weight, count };
}

/** The reward of one answer: the sum of the weights of the rules it passes. */
export function scoreByRules(fn: RewardFunction, text: string): number {
  let score = 0;
  for (const rule of fn.rules) score += rule.weight * ruleHits(rule, text);
  return score;
}

/** How many times a rule counts for `text` (0 or 1, or occurrences with `count`). */
function ruleHits(rule: RewardRule, text: string): number {
  switch (rule.kind) {
    case 'contains': {
      if (!rule.count) return rule.words.some((w) => text.includes(w)) ? 1 : 0;
      return rule.words.reduce((n, w) => n + occurrences(text, w), 0);
    }
    case 'contains_all':
      return rule.words.every((w) => text.includes(w)) ? 1 : 0;
    case 'not_contains':
      return rule.words.some((w) => text.includes(w)) ? 0 : 1;
    case 'regex': {
      if (!rule.count) return new RegExp(rule.pattern, rule.flags).test(text) ? 1 : 0;
      return [...text.matchAll(new RegExp(rule.pattern, `${rule.flags}g`))].length;
    }
    case 'length': {
      const n = [...text].length;
      return n >= rule.min && n <= rule.max ? 1 : 0;
    }
  }
}

function occurrences(text: string, word: string): number {
  let n = 0;
  for (let at = text.indexOf(word); at >= 0; at = text.indexOf(word, at + word.length)) n++;
  return n;
}
