/**
 * The shapes every dataset is converted to, whatever its file layout (alpaca, sharegpt, OpenAI
 * messages, plain text), and where each example came from so errors can point at it.
 */

/** Where a record sits: the file as the user named it, its 1-based row, and its line for .jsonl/.txt. */
export interface Source {
  file: string;
  row: number;
  line?: number;
}

/** `file: line 7` for line-based files, `file: row 3` otherwise. */
export function describeSource(source: Source): string {
  return source.line !== undefined ? `${source.file}: line ${source.line}` : `${source.file}: row ${source.row}`;
}

export interface Turn {
  role: 'user' | 'assistant';
  content: string;
}

/** One supervised example: turns alternate user, assistant, …, and end with the assistant. */
export interface Conversation {
  system?: string;
  messages: Turn[];
  source: Source;
}

/**
 * One preference example (ranking datasets, for reward modelling and DPO): the prompt turns end
 * with the user; `chosen` and `rejected` are two answers to it.
 */
export interface PreferencePair {
  system?: string;
  messages: Turn[];
  chosen: string;
  rejected: string;
  source: Source;
}

/** One document for continued pre-training. */
export interface TextDocument {
  text: string;
  source: Source;
}
