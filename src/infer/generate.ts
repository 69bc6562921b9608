import type { CausalLM } from '../models/decoder.js';
import { noGrad } from '../tensor/tensor.js';
import type { Tokenizer } from '../text/tokenizer.js';
import { Decoding } from './decoding.js';
import type { GenerateOptions, GenerateResult } from './decoding.js';

export type { GenerateOptions, GenerateResult } from './decoding.js';

/**
 * Continues `promptIds` with the KV cache: one forward over the prompt, then one position per
 * new token, so each step costs one token's worth of compute.
 */
export function generate(model: CausalLM, tokenizer: Tokenizer, promptIds: readonly number[], opts: GenerateOptions): GenerateResult {
  return noGrad(() => {
    const decoding = new Decoding(model, tokenizer, promptIds, opts);
    while (!decoding.done) decoding.step();
    return decoding.result();
  });
}
