/**
 * A Hugging Face fast tokenizer (tokenizer.json + tokenizer_config.json), wrapped so the rest of
 * tunekit sees plain number arrays and camelCase options.
 *
 * Encoding and decoding are delegated to `@huggingface/tokenizers`, which reproduces the Rust
 * `tokenizers` crate (it matches transformers' ids for Qwen3, including added tokens, NFC
 * normalisation and the split regex); this file adds loading with clear errors, the special-token
 * ids from tokenizer_config.json, and a streaming decoder.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

import { FileFormatError } from '../errors.js';
import { readJsonFile } from '../json-file.js';

/** A special token as tokenizer_config.json writes it: a string, an AddedToken dict, or null. */
export type SpecialTokenField = string | { content: string } | null | undefined;

/** The fields of tokenizer_config.json that tunekit reads; the rest is passed through untouched. */
export interface TokenizerConfig {
  bos_token?: SpecialTokenField;
  eos_token?: SpecialTokenField;
  pad_token?: SpecialTokenField;
  /** A Jinja source, or a list of named templates (the one named "default" is used). */
  chat_template?: string | { name: string; template: string }[] | null;
  [key: string]: unknown;
}

export interface EncodeOptions {
  /**
   * Apply the tokenizer's post-processor (e.g. Llama 3 prepends `<|begin_of_text|>`). Defaults to
   * true, as in transformers; pass false for text that a chat template already wrapped.
   */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop tokens marked `special` (e.g. `<|im_end|>`); `<think>` is not special in Qwen3. */
  skipSpecialTokens?: boolean;
}

export class Tokenizer {
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly padToken: string | null;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  readonly padTokenId: number | null;
  /** The model's own Jinja chat template, or null when it ships none. */
  readonly chatTemplate: string | null;
  /** Largest id (added tokens included) + 1: the smallest embedding table that covers every id. */
  readonly vocabSize: number;

  private readonly hf: HfTokenizer;

  private constructor(hf: HfTokenizer, config: TokenizerConfig, configName: string) {
    this.hf = hf;
    let maxId = -1;
    for (const id of hf.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;

    const special = (field: 'bos_token' | 'eos_token' | 'pad_token'): [string | null, number | null] => {
      const token = specialTokenContent(config[field]);
      if (token === null) return [null, null];
      const id = hf.token_to_id(token);
      if (id === undefined) {
        throw new FileFormatError(configName, `${field} "${token}" is not in the tokenizer's vocabulary`);
      }
      return [token, id];
    };
    [this.bosToken, this.bosTokenId] = special('bos_token');
    [this.eosToken, this.eosTokenId] = special('eos_token');
    [this.padToken, this.padTokenId] = special('pad_token');
    this.chatTemplate = pickChatTemplate(config.chat_template);
  }

  /**
   * Loads `dir/tokenizer.json` and `dir/tokenizer_config.json` (optional; without it there are no
   * special-token ids). A chat template in `chat_template.jinja` or `chat_template.json`, where
   * newer transformers versions save it, is used when tokenizer_config.json has none.
   */
  static fromFolder(dir: string): Tokenizer {
    const tokenizerPath = join(dir, 'tokenizer.json');
    if (!existsSync(tokenizerPath)) {
      throw new FileFormatError(
        dir,
        'no tokenizer.json here (tunekit needs the fast-tokenizer file that Hugging Face model folders ship)',
      );
    }
    const tokenizerJson = readJsonFile(tokenizerPath);
    const configPath = join(dir, 'tokenizer_config.json');
    const config = (existsSync(configPath) ? readJsonFile(configPath) : {}) as TokenizerConfig;
    if (config.chat_template == null) {
      const jinjaPath = join(dir, 'chat_template.jinja');
      const jsonPath = join(dir, 'chat_template.json');
      if (existsSync(jinjaPath)) config.chat_template = readFileSync(jinjaPath, 'utf8');
      else if (existsSync(jsonPath)) config.chat_template = (readJsonFile(jsonPath) as TokenizerConfig).chat_template;
    }
    return Tokenizer.build(tokenizerJson, config, tokenizerPath, configPath);
  }

  /** Builds from already-parsed files (e.g. the tiny tokenizer that tunekit trains itself). */
  static fromJSON(tokenizerJson: object, tokenizerConfig: object = {}): Tokenizer {
    return Tokenizer.build(tokenizerJson, tokenizerConfig as TokenizerConfig, 'tokenizer.json', 'tokenizer_config.json');
  }

  private static build(json: object, config: TokenizerConfig, jsonName: string, configName: string): Tokenizer {
    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(json, config);
    } catch (err) {
      // The library throws on unsupported components; say which file, keep its reason.
      throw new FileFormatError(jsonName, `cannot build a tokenizer from it: ${(err as Error).message}`);
    }
    return new Tokenizer(hf, config, configName);
  }

  /** Token ids for `text`; special tokens written in the text (`<|im_start|>`) map to their ids. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    return this.hf.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  /** Text for `ids`. Ids outside the vocabulary are skipped, as transformers' fast tokenizers do. */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    if (ids.length === 0) return ''; // the library rejects an empty list
    return this.hf.decode(ids as number[], { skip_special_tokens: options.skipSpecialTokens ?? false });
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  /** A decoder for generated ids one at a time; see {@link StreamDecoder}. */
  createStreamDecoder(options: DecodeOptions = {}): StreamDecoder {
    return new StreamDecoder(this, options);
  }
}

/**
 * Turns ids arriving one at a time into text, emitting only what is final.
 *
 * A byte-level token can end in the middle of a UTF-8 character (Qwen splits 真 into three
 * tokens), and decoding that prefix yields U+FFFD; so text is held back while the decoding ends
 * in U+FFFD. Decoders are also context-sensitive (SentencePiece drops a leading space), so each
 * step decodes the pending ids together with the ids emitted just before them and emits the
 * difference, the scheme text-generation-inference uses. Cost per token is a decode of a few ids.
 */
export class StreamDecoder {
  /** ids[0, emitted) were emitted last time (kept as context); ids[emitted, …) are pending. */
  private ids: number[] = [];
  private emitted = 0;

  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly options: DecodeOptions,
  ) {}

  /** Adds one id; returns the newly completed text ('' while a character is still incomplete). */
  push(id: number): string {
    this.ids.push(id);
    const context = this.tokenizer.decode(this.ids.slice(0, this.emitted), this.options);
    const all = this.tokenizer.decode(this.ids, this.options);
    if (all.length <= context.length || all.endsWith('\uFFFD')) return '';
    this.ids = this.ids.slice(this.emitted);
    this.emitted = this.ids.length;
    return all.slice(context.length);
  }

  /** Emits whatever is pending, incomplete characters included (as U+FFFD): call at end of stream. */
  flush(): string {
    const context = this.tokenizer.decode(this.ids.slice(0, this.emitted), this.options);
    const all = this.tokenizer.decode(this.ids, this.options);
    this.ids = [];
    this.emitted = 0;
    return all.slice(context.length);
  }
}

function specialTokenContent(field: SpecialTokenField): string | null {
  if (field == null) return null;
  return typeof field === 'string' ? field : field.content;
}

function pickChatTemplate(field: TokenizerConfig['chat_template']): string | null {
  if (field == null) return null;
  if (typeof field === 'string') return field;
  return field.find((t) => t.name === 'default')?.template ?? null;
}
