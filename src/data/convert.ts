/**
 * One raw record to tunekit's shapes, by the dataset's formatting: a {@link Conversation} for
 * supervised fine-tuning, a {@link PreferencePair} for ranking data, a {@link TextDocument} for
 * pre-training. A bad row throws {@link InvalidRow} with the field and what was expected.
 */
import { alpacaPrompt, alpacaResponse, userTurn } from './convert-alpaca.js';
import { answer, messageTurns } from './convert-messages.js';
import type { RawRecord } from './files.js';
import type { DatasetSpec } from './registry.js';
import type { Conversation, PreferencePair, TextDocument } from './types.js';
import { InvalidRow, asRow, requiredString } from './validate.js';

export function toConversation(record: RawRecord, spec: DatasetSpec): Conversation {
  const row = asRow(record.value);
  if (spec.formatting === 'alpaca') {
    const { system, messages } = alpacaPrompt(row, spec);
    messages.push({ role: 'assistant', content: alpacaResponse(row, spec) });
    return withSystem<Conversation>({ messages, source: record.source }, system);
  }
  if (spec.formatting === 'text') throw new InvalidRow('plain text has no turns to fine-tune on (use it for pre-training)');
  const { system, messages } = messageTurns(row, spec, 'assistant');
  return withSystem<Conversation>({ messages, source: record.source }, system);
}

export function toPreferencePair(record: RawRecord, spec: DatasetSpec): PreferencePair {
  const row = asRow(record.value);
  const { chosen: chosenColumn, rejected: rejectedColumn } = spec.columns;
  if (chosenColumn === null || rejectedColumn === null) throw new InvalidRow('the dataset names no chosen/rejected columns');
  if (spec.formatting === 'alpaca') {
    const { system, messages } = alpacaPrompt(row, spec);
    const chosen = requiredString(row, chosenColumn, chosenColumn, true);
    const rejected = requiredString(row, rejectedColumn, rejectedColumn, true);
    return withSystem<PreferencePair>({ messages, chosen, rejected, source: record.source }, system);
  }
  if (spec.formatting === 'text') throw new InvalidRow('plain text has no chosen and rejected answers');
  const { system, messages, tags } = messageTurns(row, spec, 'user');
  const chosen = answer(row, chosenColumn, tags);
  const rejected = answer(row, rejectedColumn, tags);
  return withSystem<PreferencePair>({ messages, chosen, rejected, source: record.source }, system);
}

/**
 * Pre-training text: a .txt document; the text column (`text`, or the entry's `columns.prompt`);
 * or, for alpaca rows, the user turn (instruction + "\n" + input), as LLaMA-Factory's pre-training
 * stage reads it. Alpaca rows of an entry without `columns` that hold `text` and no instruction
 * are read as text, so `{"text": …}` JSON lines work without an entry.
 */
export function toTextDocument(record: RawRecord, spec: DatasetSpec): TextDocument {
  const row = asRow(record.value);
  const source = record.source;
  if (record.source.file.toLowerCase().endsWith('.txt')) return { text: requiredString(row, 'text'), source };
  if (spec.formatting === 'text') {
    const column = spec.columns.prompt ?? 'text';
    return { text: requiredString(row, column, column, true), source };
  }
  if (spec.formatting === 'alpaca') {
    const prompt = spec.columns.prompt;
    if (!spec.columnsGiven && prompt !== null && row[prompt] === undefined && row.text !== undefined) {
      return { text: requiredString(row, 'text', 'text', true), source };
    }
    return { text: userTurn(row, spec), source };
  }
  throw new InvalidRow('pre-training reads plain text (.txt, {"text": …} rows or alpaca rows), not conversations');
}

function withSystem<T extends { system?: string }>(value: T, system: string | undefined): T {
  if (system !== undefined) value.system = system;
  return value;
}
