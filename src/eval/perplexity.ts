/**
 * Perplexity of reference answers given their prompts: the conversation is rendered with the chat
 * template and tokenized span by span exactly as SFT encodes it (`tokenizeSpans`), and the
 * answer's tokens — its content and the template's end-of-turn text, the tokens SFT trains on —
 * are scored with `sequenceLogprob`. Over a data set, perplexity = exp(Σ NLL / Σ tokens): the
 * exponential of the mean per-token loss, the same number as exp(eval_loss) of training.
 */
import { UserError } from '../errors.js';
import { describeSource, tokenizeSpans } from '../data/index.js';
import type { Conversation } from '../data/index.js';
import { sequenceLogprob } from '../infer/logprobs.js';
import type { CausalLM } from '../models/decoder.js';
import type { Tokenizer } from '../text/tokenizer.js';

export interface AnswerNll {
  /** −Σ log p(token | everything before it) over the answer's tokens. */
  nll: number;
  tokens: number;
}

/** The ids of the conversation up to the end of its last answer, and where that answer starts. */
export function answerIds(tokenizer: Tokenizer, template: string, conv: Conversation): { ids: number[]; start: number } {
  const spans = tokenizeSpans(conv, { tokenizer, template, cutoffLen: Number.MAX_SAFE_INTEGER });
  let last = -1;
  spans.forEach((s, i) => {
    if (s.trained) last = i;
  });
  if (last < 0) throw new UserError(`${describeSource(conv.source)}: the conversation has no assistant answer to score`);
  const ids = spans.slice(0, last + 1).flatMap((s) => s.ids);
  const start = ids.length - spans[last].ids.length;
  if (start < 1) throw new UserError(`${describeSource(conv.source)}: the answer has no prompt before it`);
  return { ids, start };
}

export function answerNll(model: CausalLM, tokenizer: Tokenizer, template: string, conv: Conversation): AnswerNll {
  const { ids, start } = answerIds(tokenizer, template, conv);
  const limit = model.config.maxPositions;
  if (ids.length > limit) {
    throw new UserError(`${describeSource(conv.source)}: the conversation is ${ids.length} tokens, longer than the model's ${limit} positions; shorten or drop it`);
  }
  const { logprob, tokens } = sequenceLogprob(model, ids, start);
  return { nll: -logprob, tokens };
}

/** exp(Σ nll / Σ tokens) over examples; NaN when no token was scored. */
export function perplexity(items: readonly AnswerNll[]): number {
  let nll = 0;
  let tokens = 0;
  for (const x of items) {
    nll += x.nll;
    tokens += x.tokens;
  }
  return tokens === 0 ? NaN : Math.exp(nll / tokens);
}
