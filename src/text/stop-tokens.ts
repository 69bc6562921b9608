/**
 * Which token ids end generation. Models disagree on where they say it: Qwen2.5-Instruct's
 * generation_config.json lists both <|im_end|> and <|endoftext|>, its tokenizer_config.json names
 * only one eos, and a base model's files may name neither chat marker. Taking the union is what
 * makes a chat stop at the end of its turn instead of running on into a made-up next one.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { FileFormatError } from '../errors.js';
import { readJsonFile } from '../json-file.js';

/** The slice of generation_config.json that matters here. */
export interface GenerationConfig {
  eos_token_id?: number | number[] | null;
}

/** What stop-token discovery needs from a tokenizer (a {@link Tokenizer} has it). */
export interface StopTokenSource {
  eosTokenId: number | null;
  tokenToId(token: string): number | undefined;
}

/** End-of-turn markers of the chat formats tunekit knows: chatml (Qwen) and Llama 3. */
export const CHAT_END_TOKENS = ['<|im_end|>', '<|eot_id|>'] as const;

export interface StopTokenOptions {
  /** Also stop at chat end-of-turn markers present in the vocabulary (default true). */
  chat?: boolean;
}

/** Sorted, de-duplicated stop ids from an already-read generation config and tokenizer. */
export function stopTokenIds(
  generationConfig: GenerationConfig | null,
  tokenizer: StopTokenSource,
  options: StopTokenOptions = {},
): number[] {
  const ids = new Set<number>();
  const fromConfig = generationConfig?.eos_token_id;
  if (typeof fromConfig === 'number') ids.add(fromConfig);
  else if (Array.isArray(fromConfig)) fromConfig.forEach((id) => ids.add(id));
  if (tokenizer.eosTokenId !== null) ids.add(tokenizer.eosTokenId);
  if (options.chat ?? true) {
    for (const token of CHAT_END_TOKENS) {
      const id = tokenizer.tokenToId(token);
      if (id !== undefined) ids.add(id);
    }
  }
  return [...ids].sort((a, b) => a - b);
}

/** Stop ids for the model in `modelDir`; generation_config.json is optional. */
export function readStopTokenIds(modelDir: string, tokenizer: StopTokenSource, options: StopTokenOptions = {}): number[] {
  return stopTokenIds(readGenerationConfig(modelDir), tokenizer, options);
}

/** `modelDir/generation_config.json`, or null when the model has none. */
export function readGenerationConfig(modelDir: string): GenerationConfig | null {
  const path = join(modelDir, 'generation_config.json');
  if (!existsSync(path)) return null;
  const parsed = readJsonFile(path);
  const eos = (parsed as GenerationConfig).eos_token_id;
  const isId = (v: unknown) => Number.isInteger(v) && (v as number) >= 0;
  if (eos != null && !isId(eos) && !(Array.isArray(eos) && eos.every(isId))) {
    throw new FileFormatError(path, `eos_token_id must be a token id or a list of token ids, got ${JSON.stringify(eos)}`);
  }
  return parsed as GenerationConfig;
}
