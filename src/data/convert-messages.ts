/**
 * ShareGPT (`conversations` of `{from, value}` with human/gpt/system) and OpenAI (`messages` of
 * `{role, content}` with user/assistant/system) rows to turns. A system message may come first
 * only; then turns alternate user, assistant; a supervised row ends with the assistant, a
 * preference row with the user (its answers are in `chosen` and `rejected`).
 */
import { OPENAI_TAGS, SHAREGPT_TAGS, type DatasetSpec, type Tags } from './registry.js';
import type { Turn } from './types.js';
import { rejectTools } from './convert-alpaca.js';
import { InvalidRow, asRow, describeType, optionalString, requiredString, type Row } from './validate.js';

export interface MessagesPrompt {
  system?: string;
  messages: Turn[];
  /** The tags the row was read with (detected per row when the dataset gives none). */
  tags: Tags;
}

/**
 * The row's turns. `endsWith` is the role the last turn must have: 'assistant' for supervised
 * rows, 'user' for preference rows.
 */
export function messageTurns(row: Row, spec: DatasetSpec, endsWith: Turn['role']): MessagesPrompt {
  const column = spec.columns.messages ?? 'conversations';
  rejectTools(row, spec.columns.tools);
  const list = row[column];
  if (list === undefined || list === null) throw new InvalidRow(`"${column}" is missing (expected an array of messages)`);
  if (!Array.isArray(list)) throw new InvalidRow(`"${column}" is ${describeType(list)} (expected an array of messages)`);
  if (list.length === 0) throw new InvalidRow(`"${column}" is empty`);
  const tags = spec.tagsGiven ? spec.tags : detectTags(list[0]);

  let system = optionalString(row, spec.columns.system);
  const messages: Turn[] = [];
  list.forEach((item, i) => {
    const at = `${column}[${i}]`;
    if (typeof item !== 'object' || item === null || Array.isArray(item)) {
      throw new InvalidRow(`"${at}" is ${describeType(item)} (expected an object with "${tags.roleTag}" and "${tags.contentTag}")`);
    }
    const message = item as Row;
    const role = requiredString(message, tags.roleTag, `${at}.${tags.roleTag}`);
    const label = `${at}.${tags.roleTag}`;
    if (role === tags.systemTag) {
      if (i !== 0) throw new InvalidRow(`"${label}" is "${role}": a system message may only come first`);
      system = requiredString(message, tags.contentTag, `${at}.${tags.contentTag}`);
      return;
    }
    if (role === tags.observationTag || role === tags.functionTag || hasToolCalls(message)) {
      throw new InvalidRow(`"${label}" is "${role}": tool calls and tool results are not supported yet`);
    }
    if (role !== tags.userTag && role !== tags.assistantTag) {
      throw new InvalidRow(
        `"${label}" is "${role}", an unknown role (expected ${tags.userTag}, ${tags.assistantTag} or ${tags.systemTag})`,
      );
    }
    const expected = messages.length % 2 === 0 ? tags.userTag : tags.assistantTag;
    if (role !== expected) {
      throw new InvalidRow(
        `"${label}" is "${role}" where "${expected}" was expected (turns alternate ${tags.userTag}, ${tags.assistantTag})`,
      );
    }
    const content = requiredString(message, tags.contentTag, `${at}.${tags.contentTag}`, true);
    messages.push({ role: role === tags.userTag ? 'user' : 'assistant', content });
  });

  if (messages.length === 0) throw new InvalidRow(`"${column}" has no ${tags.userTag} or ${tags.assistantTag} message`);
  const last = messages[messages.length - 1].role;
  if (last !== endsWith) {
    const want = endsWith === 'user' ? `${tags.userTag} (a preference row's answers are in "chosen" and "rejected")` : tags.assistantTag;
    throw new InvalidRow(`"${column}" ends with a ${last === 'user' ? tags.userTag : tags.assistantTag} message (the last must be ${want})`);
  }
  return system === '' ? { messages, tags } : { system, messages, tags };
}

/** A preference answer: a message object (`{from: "gpt", value}`) or a plain string. */
export function answer(row: Row, column: string, tags: Tags): string {
  const value = row[column];
  if (typeof value === 'string' || value === undefined || value === null) return requiredString(row, column, column, true);
  const message = asRowOr(value, column);
  const role = message[tags.roleTag];
  if (role !== undefined && role !== tags.assistantTag) {
    throw new InvalidRow(`"${column}.${tags.roleTag}" is ${JSON.stringify(role)} (expected "${tags.assistantTag}")`);
  }
  return requiredString(message, tags.contentTag, `${column}.${tags.contentTag}`, true);
}

/** OpenAI keys when the first message has `role` and no `from`; ShareGPT's otherwise. */
function detectTags(first: unknown): Tags {
  const keys = typeof first === 'object' && first !== null ? Object.keys(first) : [];
  return keys.includes('role') && !keys.includes('from') ? { ...OPENAI_TAGS } : { ...SHAREGPT_TAGS };
}

function hasToolCalls(message: Row): boolean {
  const calls = message.tool_calls;
  return Array.isArray(calls) && calls.length > 0;
}

function asRowOr(value: unknown, column: string): Row {
  try {
    return asRow(value);
  } catch {
    throw new InvalidRow(`"${column}" is ${describeType(value)} (expected a string or a message object)`);
  }
}
