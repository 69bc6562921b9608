/**
 * Examples to token ids and labels.
 *
 * A conversation is rendered with the same chat template as inference (system message first when
 * there is one) and cut into prompt and assistant spans by `renderChatSegments`; each span is
 * tokenized on its own and the ids concatenated, so the prompt/answer boundary falls exactly
 * between two tokens (LLaMA-Factory encodes each message separately too). Labels equal the ids on
 * assistant spans (content + the template's end-of-turn text, e.g. `<|im_end|>\n`) and are −100
 * (IGNORE_INDEX) on prompt spans. Labels are aligned with the ids: the trainer shifts them by one.
 */
import { UserError } from '../errors.js';
import type { ChatMessage } from '../text/chat-template.js';
import { renderChatSegments } from '../text/chat-template.js';
import type { Tokenizer } from '../text/tokenizer.js';
import { IGNORE_INDEX } from '../tensor/ops/loss.js';
import type { Conversation, Source, TextDocument } from './types.js';

export interface EncodedExample {
  inputIds: Int32Array;
  /** Same length as inputIds; IGNORE_INDEX (−100) where no loss is taken. */
  labels: Int32Array;
}

export interface EncodedConversation extends EncodedExample {
  /** The rendering was longer than cutoffLen and its end was cut. */
  truncated: boolean;
  /** Labelled positions after the first (the first is never a target once shifted). */
  trainedTokens: number;
}

export interface ConversationEncodeOptions {
  tokenizer: Tokenizer;
  /** Jinja source of the chat template (see `resolveTemplate`). */
  template: string;
  /** Longest sequence kept; longer ones keep their start. */
  cutoffLen: number;
  /** Train on the prompt spans too (LLaMA-Factory's `train_on_prompt`): alone, every token is trained. */
  trainOnPrompt?: boolean;
  /**
   * Mask every assistant turn but the last (LLaMA-Factory's `mask_history`). With trainOnPrompt
   * too, prompts are trained and earlier answers masked, as in LLaMA-Factory.
   */
  maskHistory?: boolean;
  /** Extra template variables, e.g. `{enable_thinking: false}`. */
  variables?: Record<string, unknown>;
}

/** The conversation as chat messages: the system prompt first when there is one. */
export function chatMessages(conv: Pick<Conversation, 'system' | 'messages'>): ChatMessage[] {
  const turns: ChatMessage[] = conv.messages.map((m) => ({ role: m.role, content: m.content }));
  return conv.system !== undefined ? [{ role: 'system', content: conv.system }, ...turns] : turns;
}

export interface TokenizedSpan {
  text: string;
  ids: number[];
  trained: boolean;
}

/** The rendered conversation as consecutive spans, each tokenized, with whether it is trained. */
export function tokenizeSpans(conv: Pick<Conversation, 'system' | 'messages'>, opts: ConversationEncodeOptions): TokenizedSpan[] {
  const { tokenizer } = opts;
  const segments = renderChatSegments(chatMessages(conv), {
    template: opts.template,
    bosToken: tokenizer.bosToken,
    eosToken: tokenizer.eosToken,
    variables: opts.variables,
  });
  let lastAssistant = -1;
  segments.forEach((s, i) => {
    if (s.role === 'assistant') lastAssistant = i;
  });
  return segments.map((s, i) => ({
    text: s.text,
    ids: tokenizer.encode(s.text, { addSpecialTokens: false }),
    trained: s.role === 'prompt' ? opts.trainOnPrompt === true : !opts.maskHistory || i === lastAssistant,
  }));
}

export function encodeConversation(conv: Conversation, opts: ConversationEncodeOptions): EncodedConversation {
  checkCutoff(opts.cutoffLen);
  const spans = tokenizeSpans(conv, opts);
  const length = spans.reduce((n, s) => n + s.ids.length, 0);
  const kept = Math.min(length, opts.cutoffLen);
  const inputIds = new Int32Array(kept);
  const labels = new Int32Array(kept);
  let at = 0;
  for (const span of spans) {
    for (const id of span.ids) {
      if (at === kept) break;
      inputIds[at] = id;
      labels[at] = span.trained ? id : IGNORE_INDEX;
      at++;
    }
  }
  return { inputIds, labels, truncated: length > kept, trainedTokens: countTrained(labels) };
}

export interface EncodedDataset {
  examples: EncodedExample[];
  /** Examples cut to cutoffLen. */
  truncated: number;
  /** Examples left with no trained token (the prompt alone filled cutoffLen); kept, but the loss ignores them. */
  untrained: Source[];
}

/** Every conversation encoded, with counts of the truncated and the untrainable. */
export function encodeConversations(convs: readonly Conversation[], opts: ConversationEncodeOptions): EncodedDataset {
  const out: EncodedDataset = { examples: [], truncated: 0, untrained: [] };
  for (const conv of convs) {
    const e = encodeConversation(conv, opts);
    out.examples.push({ inputIds: e.inputIds, labels: e.labels });
    if (e.truncated) out.truncated++;
    if (e.trainedTokens === 0) out.untrained.push(conv.source);
  }
  return out;
}

export interface TextEncodeOptions {
  tokenizer: Tokenizer;
  cutoffLen: number;
}

/**
 * Pre-training text: its ids (no special tokens added) and the eos token, every position trained,
 * cut into pieces of at most cutoffLen.
 */
export function encodeText(text: string, opts: TextEncodeOptions): EncodedExample[] {
  checkCutoff(opts.cutoffLen);
  const eos = opts.tokenizer.eosTokenId;
  if (eos === null) throw new UserError('the tokenizer has no eos_token, which pre-training appends to each document');
  const ids = opts.tokenizer.encode(text, { addSpecialTokens: false });
  ids.push(eos);
  const pieces: EncodedExample[] = [];
  for (let start = 0; start < ids.length; start += opts.cutoffLen) {
    const inputIds = Int32Array.from(ids.slice(start, start + opts.cutoffLen));
    pieces.push({ inputIds, labels: inputIds.slice() });
  }
  return pieces;
}

/** Every document encoded (see {@link encodeText}). */
export function encodeTexts(docs: readonly TextDocument[], opts: TextEncodeOptions): EncodedExample[] {
  return docs.flatMap((d) => encodeText(d.text, opts));
}

function countTrained(labels: Int32Array): number {
  let n = 0;
  for (let i = 1; i < labels.length; i++) if (labels[i] !== IGNORE_INDEX) n++;
  return n;
}

function checkCutoff(cutoffLen: number): void {
  if (!Number.isInteger(cutoffLen) || cutoffLen < 2) throw new UserError(`cutoff_len must be an integer ≥ 2, got ${cutoffLen}`);
}
