/**
 * What training will see, for `tunekit preview`: the rendered text of the first examples and,
 * token by token, which are trained and which are masked. Returns data; the CLI prints it.
 */
import { renderChat } from '../text/chat-template.js';
import type { Tokenizer } from '../text/tokenizer.js';
import { IGNORE_INDEX } from '../tensor/ops/loss.js';
import { chatMessages, encodeConversation, type ConversationEncodeOptions, type EncodedExample } from './encode.js';
import type { Conversation, Source } from './types.js';

export interface PreviewToken {
  id: number;
  /** The token decoded alone (a piece of a multi-byte character shows as U+FFFD). */
  text: string;
  trained: boolean;
}

/** A run of consecutive tokens with the same status, decoded together. */
export interface PreviewSpan {
  text: string;
  trained: boolean;
}

export interface TokenView {
  tokens: PreviewToken[];
  spans: PreviewSpan[];
  /** Tokens marked trained (label ≠ −100). */
  trainedTokens: number;
}

export interface ExamplePreview extends TokenView {
  source: Source;
  /** The whole rendering, before truncation. */
  text: string;
  truncated: boolean;
}

/** The first `count` (default 3) conversations as training sees them. */
export function previewExamples(
  convs: readonly Conversation[],
  opts: ConversationEncodeOptions & { count?: number },
): ExamplePreview[] {
  return convs.slice(0, opts.count ?? 3).map((conv) => {
    const text = renderChat(chatMessages(conv), {
      template: opts.template,
      addGenerationPrompt: false,
      bosToken: opts.tokenizer.bosToken,
      eosToken: opts.tokenizer.eosToken,
      variables: opts.variables,
    });
    const encoded = encodeConversation(conv, opts);
    return { source: conv.source, text, truncated: encoded.truncated, ...tokenView(encoded, opts.tokenizer) };
  });
}

/** Any encoded example (pre-training pieces too) as tokens and trained/masked spans. */
export function tokenView(example: EncodedExample, tokenizer: Tokenizer): TokenView {
  const ids = Array.from(example.inputIds);
  const trained = Array.from(example.labels, (l) => l !== IGNORE_INDEX);
  const tokens = ids.map((id, i) => ({ id, text: tokenizer.decode([id]), trained: trained[i] }));
  const spans: PreviewSpan[] = [];
  for (let start = 0; start < ids.length; ) {
    let end = start + 1;
    while (end < ids.length && trained[end] === trained[start]) end++;
    spans.push({ text: tokenizer.decode(ids.slice(start, end)), trained: trained[start] });
    start = end;
  }
  return { tokens, spans, trainedTokens: trained.filter(Boolean).length };
}

/** The spans as one string with trained text between markers, e.g. `…assistant\n⟦您好！…<|im_end|>\n⟧`. */
export function markTrained(spans: readonly PreviewSpan[], open = '⟦', close = '⟧'): string {
  return spans.map((s) => (s.trained ? `${open}${s.text}${close}` : s.text)).join('');
}
