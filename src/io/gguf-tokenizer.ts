/**
 * A Hugging Face byte-level BPE tokenizer (tokenizer.json + tokenizer_config.json) as GGUF
 * metadata, by the rules of llama.cpp's `convert_hf_to_gguf.py` (`get_vocab_base`,
 * `_set_vocab_gpt2`) and gguf-py's `SpecialVocab`:
 *
 *   tokenizer.ggml.model        "gpt2"
 *   tokenizer.ggml.pre          the pre-tokenizer llama.cpp must reproduce ("qwen2", "llama-bpe")
 *   tokenizer.ggml.tokens       one string per id up to config.json's vocab_size; ids the
 *                               tokenizer lacks become "[PAD<id>]"
 *   tokenizer.ggml.token_type   NORMAL 1, CONTROL 3 (special added tokens, or ones that look
 *                               special: <|…|>), USER_DEFINED 4 (other added tokens), UNUSED 5
 *   tokenizer.ggml.merges       "a b" per merge, in rank order
 *   tokenizer.ggml.*_token_id   from tokenizer_config.json's *_token, else config.json's *_token_id
 *   tokenizer.ggml.add_*_token  tokenizer_config.json's add_bos_token / add_eos_token, or a
 *                               TemplateProcessing post-processor that prepends the bos token
 *   tokenizer.chat_template     the Jinja chat template
 *
 * The converter names the pre-tokenizer by hashing how the tokenizer splits a probe text; a
 * tokenizer tunekit trained itself has no known hash, so here the name comes from the split
 * regex in tokenizer.json, which is what llama.cpp re-implements for each name.
 */
import fs from 'node:fs';
import { join } from 'node:path';

import { FileFormatError, UserError } from '../errors.js';
import { QWEN2_SPLIT_REGEX } from '../text/tiny-tokenizer.js';
import { readJsonFile } from './model-folder.js';
import type { GgufWriter } from './gguf-writer.js';

export enum TokenType {
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
}

/** Llama 3's split regex, as its tokenizer.json writes it. */
export const LLAMA3_SPLIT_REGEX = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;

/** llama.cpp pre-tokenizer names by the split regex they implement. */
export const PRE_TOKENIZERS: ReadonlyArray<{ name: string; regex: string; models: string }> = [
  { name: 'qwen2', regex: QWEN2_SPLIT_REGEX, models: 'Qwen2, Qwen2.5, Qwen3 and tunekit\'s tiny tokenizer' },
  { name: 'llama-bpe', regex: LLAMA3_SPLIT_REGEX, models: 'Llama 3, 3.1, 3.2' },
];

const SPECIAL_TYPES = ['bos', 'eos', 'unk', 'sep', 'pad', 'cls', 'mask'] as const;
type SpecialType = (typeof SPECIAL_TYPES)[number];

/** gguf-py's key for each special token (sic: "seperator"). */
const SPECIAL_KEYS: Record<SpecialType, string> = {
  bos: 'tokenizer.ggml.bos_token_id',
  eos: 'tokenizer.ggml.eos_token_id',
  unk: 'tokenizer.ggml.unknown_token_id',
  sep: 'tokenizer.ggml.seperator_token_id',
  pad: 'tokenizer.ggml.padding_token_id',
  cls: 'tokenizer.ggml.cls_token_id',
  mask: 'tokenizer.ggml.mask_token_id',
};

export interface GgufVocab {
  pre: string;
  tokens: string[];
  tokenTypes: number[];
  merges: string[];
  specialIds: Partial<Record<SpecialType, number>>;
  addSpecial: Partial<Record<'bos' | 'eos', boolean>>;
  chatTemplate: string | null;
}

interface AddedToken {
  id: number;
  content: string;
  special?: boolean;
  normalized?: boolean;
}

/**
 * Reads the tokenizer of the model folder `dir` for a model whose embedding has `vocabSize`
 * rows. `chatTemplate` replaces the folder's own template (the one training used).
 */
export function readGgufVocab(dir: string, vocabSize: number, chatTemplate?: string | null): GgufVocab {
  const tokenizerPath = join(dir, 'tokenizer.json');
  if (!fs.existsSync(tokenizerPath)) throw new UserError(`${dir} has no tokenizer.json; a GGUF file carries its tokenizer, so export needs it`);
  const tokenizer = readJsonFile(tokenizerPath);
  const configPath = join(dir, 'tokenizer_config.json');
  const tokenizerConfig = fs.existsSync(configPath) ? readJsonFile(configPath) : {};
  const modelConfig = readJsonFile(join(dir, 'config.json'));

  const model = tokenizer.model as Record<string, unknown> | undefined;
  if (!model || model.type !== 'BPE' || model.byte_fallback === true) {
    throw new FileFormatError(tokenizerPath, `model type ${JSON.stringify(model?.type)}${model?.byte_fallback ? ' with byte_fallback' : ''}: GGUF export supports byte-level BPE tokenizers (Qwen, Llama 3), not SentencePiece`);
  }
  const vocab = model.vocab as Record<string, number>;
  const added = ((tokenizer.added_tokens as AddedToken[] | undefined) ?? []).filter((t) => typeof t.id === 'number' && typeof t.content === 'string');

  const byId = new Map<number, string>();
  for (const [token, id] of Object.entries(vocab)) byId.set(id, token);
  const addedById = new Map<number, AddedToken>();
  for (const t of added) {
    byId.set(t.id, t.content);
    addedById.set(t.id, t);
  }
  let maxId = -1;
  for (const id of byId.keys()) maxId = Math.max(maxId, id);
  if (maxId >= vocabSize) {
    throw new FileFormatError(tokenizerPath, `has token id ${maxId}, but config.json's vocab_size is ${vocabSize}`);
  }

  const tokens: string[] = [];
  const tokenTypes: number[] = [];
  for (let i = 0; i < vocabSize; i++) {
    const token = byId.get(i);
    if (token === undefined) {
      tokens.push(`[PAD${i}]`);
      tokenTypes.push(TokenType.UNUSED);
      continue;
    }
    const a = addedById.get(i);
    if (a) {
      tokenTypes.push(a.special || looksSpecial(token) ? TokenType.CONTROL : TokenType.USER_DEFINED);
    } else tokenTypes.push(TokenType.NORMAL);
    tokens.push(token);
  }

  const { specialIds, addSpecial } = specialTokens(tokenizer, tokenizerConfig, modelConfig, added);
  return {
    pre: preTokenizerName(tokenizer, tokenizerPath),
    tokens,
    tokenTypes,
    merges: readMerges(model, tokenizerPath),
    specialIds,
    addSpecial,
    chatTemplate: chatTemplate ?? folderChatTemplate(dir, tokenizerConfig),
  };
}

/** Writes the vocabulary's keys in the order gguf-py does. */
export function addVocabToGguf(w: GgufWriter, v: GgufVocab): void {
  w.str('tokenizer.ggml.model', 'gpt2');
  w.str('tokenizer.ggml.pre', v.pre);
  w.strings('tokenizer.ggml.tokens', v.tokens);
  w.i32s('tokenizer.ggml.token_type', v.tokenTypes);
  w.strings('tokenizer.ggml.merges', v.merges);
  for (const type of SPECIAL_TYPES) {
    const id = v.specialIds[type];
    if (id !== undefined) w.u32(SPECIAL_KEYS[type], id);
  }
  for (const type of ['bos', 'eos'] as const) {
    const add = v.addSpecial[type];
    if (add !== undefined) w.bool(`tokenizer.ggml.add_${type}_token`, add);
  }
  if (v.chatTemplate !== null) w.str('tokenizer.chat_template', v.chatTemplate);
}

/** The converter's `does_token_look_special`. */
function looksSpecial(token: string): boolean {
  return (
    ['<pad>', '<mask>', '<2mass>', '[@BOS@]'].includes(token) ||
    (token.startsWith('<|') && token.endsWith('|>')) ||
    (token.startsWith('<｜') && token.endsWith('｜>')) ||
    (token.startsWith('<unused') && token.endsWith('>'))
  );
}

/** The split regexes of the pre-tokenizer, in order. */
function splitRegexes(node: unknown): string[] {
  if (typeof node !== 'object' || node === null) return [];
  const n = node as Record<string, unknown>;
  if (n.type === 'Sequence') return ((n.pretokenizers as unknown[]) ?? []).flatMap(splitRegexes);
  if (n.type === 'Split') {
    const pattern = n.pattern as Record<string, unknown> | undefined;
    if (typeof pattern?.Regex === 'string') return [pattern.Regex];
    if (typeof pattern?.String === 'string') return [`literal:${pattern.String}`];
  }
  if (n.type === 'ByteLevel' && n.use_regex === true) return ['gpt2-byte-level'];
  return [];
}

function preTokenizerName(tokenizer: Record<string, unknown>, file: string): string {
  const regexes = splitRegexes(tokenizer.pre_tokenizer);
  if (regexes.length === 1) {
    const known = PRE_TOKENIZERS.find((p) => p.regex === regexes[0]);
    if (known) return known.name;
  }
  const supported = PRE_TOKENIZERS.map((p) => `"${p.name}" (${p.models})`).join(', ');
  throw new FileFormatError(
    file,
    `its pre-tokenizer (split ${regexes.length ? regexes.map((r) => JSON.stringify(r)).join(', ') : 'none'}) matches none that tunekit can name for llama.cpp; supported: ${supported}`,
  );
}

/** Merges as "a b" strings; the newer pair format gets its spaces encoded as gguf-py does. */
function readMerges(model: Record<string, unknown>, file: string): string[] {
  const merges = model.merges;
  if (!Array.isArray(merges) || merges.length === 0) throw new FileFormatError(file, 'model.merges is missing or empty; a BPE tokenizer needs its merges');
  if (typeof merges[0] === 'string') return merges as string[];
  return (merges as unknown[]).map((pair, i) => {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') {
      throw new FileFormatError(file, `model.merges[${i}] is neither "a b" nor ["a", "b"]`);
    }
    return pair.map((s: string) => s.replace(/ /g, '\u0120')).join(' ');
  });
}

function specialContent(entry: unknown): string | null {
  if (typeof entry === 'string') return entry;
  if (typeof entry === 'object' && entry !== null && typeof (entry as { content?: unknown }).content === 'string') return (entry as { content: string }).content;
  return null;
}

/** SpecialVocab: ids from tokenizer_config.json's tokens, then config.json's ids; add_* flags. */
function specialTokens(
  tokenizer: Record<string, unknown>,
  tokenizerConfig: Record<string, unknown>,
  modelConfig: Record<string, unknown>,
  added: AddedToken[],
): Pick<GgufVocab, 'specialIds' | 'addSpecial'> {
  const specialIds: GgufVocab['specialIds'] = {};
  const addSpecial: GgufVocab['addSpecial'] = {};
  const bos = specialContent(tokenizerConfig.bos_token);

  // A TemplateProcessing post-processor whose single template starts with the bos token adds it.
  const post = tokenizer.post_processor as Record<string, unknown> | null | undefined;
  const processors = post ? ((post.processors as Record<string, unknown>[] | undefined) ?? [post]) : [];
  for (const p of processors) {
    if (p.type !== 'TemplateProcessing') continue;
    const single = (p.single as Array<Record<string, { id?: string }>> | undefined) ?? [];
    const first = single.length > 1 ? single[0].SpecialToken?.id : undefined;
    if (first) addSpecial.bos = first === bos;
  }

  for (const type of SPECIAL_TYPES) {
    if (type === 'bos' || type === 'eos') {
      const flag = tokenizerConfig[`add_${type}_token`];
      if (typeof flag === 'boolean') addSpecial[type] = flag;
    }
    const content = specialContent(tokenizerConfig[`${type}_token`]);
    if (content === null) continue;
    const id = added.find((t) => t.content === content)?.id;
    if (id !== undefined) specialIds[type] = id;
  }
  for (const type of SPECIAL_TYPES) {
    const id = modelConfig[`${type}_token_id`];
    if (specialIds[type] === undefined && Number.isInteger(id) && (id as number) >= 0) specialIds[type] = id as number;
  }
  return { specialIds, addSpecial };
}

/** The folder's own template: tokenizer_config.json, else chat_template.jinja / .json. */
function folderChatTemplate(dir: string, tokenizerConfig: Record<string, unknown>): string | null {
  let template = tokenizerConfig.chat_template;
  if (template == null) {
    const jinja = join(dir, 'chat_template.jinja');
    const json = join(dir, 'chat_template.json');
    if (fs.existsSync(jinja)) template = fs.readFileSync(jinja, 'utf8');
    else if (fs.existsSync(json)) template = readJsonFile(json).chat_template;
  }
  if (typeof template === 'string') return template;
  if (Array.isArray(template)) {
    const named = template.find((t) => (t as { name?: unknown }).name === 'default') as { template?: unknown } | undefined;
    return typeof named?.template === 'string' ? named.template : null;
  }
  return null;
}
