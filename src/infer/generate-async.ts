import { setImmediate as nextTurn } from 'node:timers/promises';

import type { CausalLM } from '../models/decoder.js';
import { noGrad } from '../tensor/tensor.js';
import type { Tokenizer } from '../text/tokenizer.js';
import { Decoding } from './decoding.js';
import type { GenerateOptions, GenerateResult } from './decoding.js';

/**
 * `generate`, yielding to the event loop after the prefill and after every token, so a server
 * keeps answering (health checks, new requests joining the queue) and notices a client that
 * went away: its `close` event aborts `opts.signal`, which the next step sees.
 * Same decoding, token for token, as `generate` (both run {@link Decoding}).
 */
export async function generateAsync(model: CausalLM, tokenizer: Tokenizer, promptIds: readonly number[], opts: GenerateOptions): Promise<GenerateResult> {
  const decoding = noGrad(() => new Decoding(model, tokenizer, promptIds, opts));
  while (!decoding.done) {
    await nextTurn();
    noGrad(() => decoding.step());
  }
  return decoding.result();
}
