/**
 * Alpaca rows (`instruction`, `input`, `output`, optional `system` and `history`) to turns, as
 * LLaMA-Factory's aligner does: the user turn is the prompt column and the query column joined
 * by "\n" (an empty one is left out), earlier `[user, assistant]` pairs of `history` come first.
 *
 * The persona layout needs nothing here: the registry has already pointed the system column at
 * `instruction` and the prompt column at `input`.
 */
import type { DatasetSpec } from './registry.js';
import type { Turn } from './types.js';
import { InvalidRow, describeType, optionalString, requiredString, type Row } from './validate.js';

export interface AlpacaPrompt {
  system?: string;
  /** History turns, then the final user turn. */
  messages: Turn[];
}

/** System prompt and turns up to the final user turn. */
export function alpacaPrompt(row: Row, spec: DatasetSpec): AlpacaPrompt {
  const c = spec.columns;
  rejectTools(row, c.tools);
  const messages = history(row, c.history);
  messages.push({ role: 'user', content: userTurn(row, spec) });
  const system = optionalString(row, c.system);
  return system === '' ? { messages } : { system, messages };
}

/** The response column: a non-empty string. */
export function alpacaResponse(row: Row, spec: DatasetSpec): string {
  if (spec.columns.response === null) throw new InvalidRow('the dataset names no response column');
  return requiredString(row, spec.columns.response, spec.columns.response, true);
}

/** The user turn: prompt column + "\n" + query column, either left out when empty. */
export function userTurn(row: Row, spec: DatasetSpec): string {
  const { prompt, query } = spec.columns;
  const parts: string[] = [];
  if (prompt !== null) parts.push(requiredString(row, prompt));
  if (query !== null) parts.push(optionalString(row, query));
  const content = parts.filter((p) => p !== '').join('\n');
  if (content === '') {
    const named = [prompt, query].filter((c) => c !== null).map((c) => `"${c}"`);
    throw new InvalidRow(`the user turn is empty (${named.join(' and ') || 'no prompt column'}${named.length > 1 ? ' are both' : ' is'} empty)`);
  }
  return content;
}

function history(row: Row, column: string | null): Turn[] {
  if (column === null) return [];
  const value = row[column];
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new InvalidRow(`"${column}" is ${describeType(value)} (expected an array of [user, assistant] pairs)`);
  const turns: Turn[] = [];
  value.forEach((pair, i) => {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') {
      throw new InvalidRow(`"${column}[${i}]" is ${describeType(pair)} (expected a [user, assistant] pair of strings)`);
    }
    turns.push({ role: 'user', content: pair[0] }, { role: 'assistant', content: pair[1] });
  });
  return turns;
}

/** Tool descriptions change the prompt in ways tunekit's templates do not render yet. */
export function rejectTools(row: Row, column: string | null): void {
  if (column === null) return;
  const value = row[column];
  const empty = value === undefined || value === null || value === '' || (Array.isArray(value) && value.length === 0);
  if (!empty) throw new InvalidRow(`"${column}" is set, but tool calling is not supported yet`);
}
