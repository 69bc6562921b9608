/**
 * Evaluation rows: the SFT formats (alpaca instruction/input/output, sharegpt or OpenAI
 * messages, a name in dataset_info.json) read by the data layer, plus plain
 * `{"prompt": …, "response": …}` rows (optional `system`). Each becomes the conversation up to
 * its last user turn (what the model is asked) and the last assistant turn (the reference).
 */
import { existsSync, statSync } from 'node:fs';
import { extname } from 'node:path';

import { UserError } from '../errors.js';
import { chatMessages, describeSource, listDataFiles, loadConversations, peekFirstRecord, readRecords, resolveDatasets } from '../data/index.js';
import type { Conversation, Source } from '../data/index.js';
import type { ChatMessage } from '../text/chat-template.js';

export interface EvalExample {
  /** The whole conversation, ending with the reference answer (for perplexity). */
  conversation: Conversation;
  /** What the model is given: everything before the reference answer. */
  prompt: ChatMessage[];
  reference: string;
  source: Source;
}

export interface LoadEvalOptions {
  /** Where dataset_info.json is looked for when `data` is a dataset name (default "."). */
  datasetDir?: string;
  /** Keep the first N examples. */
  limit?: number;
}

/** The examples of a data file, folder or dataset name. */
export function loadEvalExamples(data: string, opts: LoadEvalOptions = {}): EvalExample[] {
  const conversations = isPromptResponseFile(data) ? promptResponseRows(data) : sftConversations(data, opts.datasetDir ?? '.');
  const picked = opts.limit !== undefined ? conversations.slice(0, opts.limit) : conversations;
  if (picked.length === 0) throw new UserError(`${data}: no examples to evaluate`);
  return picked.map(toExample);
}

function sftConversations(data: string, datasetDir: string): Conversation[] {
  return loadConversations(resolveDatasets([data], datasetDir)).items;
}

function toExample(conversation: Conversation): EvalExample {
  const messages = chatMessages(conversation);
  const last = messages[messages.length - 1];
  if (!last || last.role !== 'assistant') {
    throw new UserError(`${describeSource(conversation.source)}: the conversation does not end with an assistant answer to compare with`);
  }
  return { conversation, prompt: messages.slice(0, -1), reference: last.content, source: conversation.source };
}

/** A data file (or folder) whose first row has `prompt` and `response` and no alpaca `instruction`. */
function isPromptResponseFile(data: string): boolean {
  if (!existsSync(data)) return false;
  const files = statSync(data).isDirectory() ? listDataFiles(data) : [data];
  const first = files.find((f) => extname(f).toLowerCase() !== '.txt');
  if (!first) return false;
  const row = peekFirstRecord(first);
  return typeof row === 'object' && row !== null && 'prompt' in row && 'response' in row && !('instruction' in row);
}

function promptResponseRows(data: string): Conversation[] {
  return readRecords(data).map(({ value, source }) => {
    const where = describeSource(source);
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new UserError(`${where}: expected an object with "prompt" and "response"`);
    const row = value as Record<string, unknown>;
    for (const key of ['prompt', 'response']) {
      if (typeof row[key] !== 'string' || (row[key] as string).trim() === '') throw new UserError(`${where}: "${key}" must be a non-empty string`);
    }
    if (row.system !== undefined && typeof row.system !== 'string') throw new UserError(`${where}: "system" must be a string`);
    const conv: Conversation = {
      messages: [
        { role: 'user', content: row.prompt as string },
        { role: 'assistant', content: row.response as string },
      ],
      source,
    };
    if (typeof row.system === 'string' && row.system !== '') conv.system = row.system;
    return conv;
  });
}
