/**
 * Trains a small byte-level BPE tokenizer in the exact file format of Qwen2's, for the tiny models
 * tunekit builds itself (`tunekit init-model --preset tiny`, the built-in demo model).
 *
 * Byte-level: text is cut by Qwen2's split regex, each piece's UTF-8 bytes become 256 printable
 * stand-in characters (GPT-2's table), and merges are learned over those. Every byte is in the
 * vocabulary, so any text — Chinese, emoji, control characters — encodes and decodes back exactly.
 */
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

import { UserError } from '../errors.js';
import { BUILTIN_TEMPLATES } from './chat-template.js';

/** Qwen2's (and Qwen3's) pre-tokenizer regex, as their tokenizer.json writes it. */
export const QWEN2_SPLIT_REGEX = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;

/** Always present, first, in this order: the config below refers to them. */
export const CHATML_SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] as const;

export interface TinyTokenizerOptions {
  corpus: string;
  /** Total vocabulary, special tokens included; fewer if the corpus runs out of pairs to merge. */
  vocabSize: number;
  /** Added after the chatml ones (duplicates of those are ignored). */
  specialTokens?: readonly string[];
  /** `model_max_length` in tokenizer_config.json. */
  modelMaxLength?: number;
}

export interface TokenizerFiles {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
}

export function buildByteLevelTokenizer(options: TinyTokenizerOptions): TokenizerFiles {
  const specials = [...new Set([...CHATML_SPECIAL_TOKENS, ...(options.specialTokens ?? [])])];
  if (specials.some((s) => s === '')) throw new UserError('special tokens must not be empty');
  const minimum = 256 + specials.length;
  if (!Number.isInteger(options.vocabSize) || options.vocabSize < minimum || options.vocabSize >= PAIR_KEY_BASE) {
    throw new UserError(
      `vocab size must be an integer from ${minimum} (256 bytes + ${specials.length} special tokens) to ${PAIR_KEY_BASE - 1}, got ${options.vocabSize}`,
    );
  }

  const alphabet = byteAlphabet();
  const pieces = countPieces(options.corpus, specials, alphabet);
  const { tokens, merges } = learnMerges(pieces, alphabet, options.vocabSize - specials.length);

  const vocab: Record<string, number> = {};
  tokens.forEach((token, id) => (vocab[token] = id));
  const addedTokens = specials.map((content, i) => ({ id: tokens.length + i, ...addedTokenFlags(content) }));
  return {
    tokenizerJson: tokenizerJson(vocab, merges, addedTokens),
    tokenizerConfig: {
      add_bos_token: false,
      add_prefix_space: false,
      added_tokens_decoder: Object.fromEntries(addedTokens.map(({ id, ...flags }) => [String(id), flags])),
      additional_special_tokens: specials.filter((s) => s !== '<|endoftext|>'),
      bos_token: null,
      chat_template: BUILTIN_TEMPLATES.chatml,
      clean_up_tokenization_spaces: false,
      eos_token: '<|im_end|>',
      errors: 'replace',
      model_max_length: options.modelMaxLength ?? 2048,
      pad_token: '<|endoftext|>',
      split_special_tokens: false,
      tokenizer_class: 'Qwen2Tokenizer',
      unk_token: null,
    },
  };
}

/**
 * GPT-2's byte → character table, as a list indexed by token id: the printable Latin-1 bytes map
 * to themselves, the other 68 to U+0100 onwards. Sorted by character, which is the id order of
 * GPT-2's and Qwen2's vocabularies ("!" is 0).
 */
function byteAlphabet(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const chars: string[] = [];
  let shifted = 0;
  for (let b = 0; b < 256; b++) chars[b] = String.fromCharCode(printable(b) ? b : 256 + shifted++);
  return chars.sort((x, y) => x.charCodeAt(0) - y.charCodeAt(0));
}

function addedTokenFlags(content: string) {
  return { content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

function tokenizerJson(
  vocab: Record<string, number>,
  merges: string[],
  addedTokens: ({ id: number } & ReturnType<typeof addedTokenFlags>)[],
): Record<string, unknown> {
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    // Qwen2 has an NFC normaliser; leaving it out keeps decode(encode(text)) === text for text
    // that is not in NFC (e.g. "e" + U+0301), which the tiny model's tests rely on.
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: QWEN2_SPLIT_REGEX }, behavior: 'Isolated', invert: false },
        byteLevel,
      ],
    },
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

/** A pre-token (as byte-alphabet ids) and how often it occurs in the corpus. */
interface Piece {
  symbols: number[];
  count: number;
}

/**
 * The corpus cut into pre-tokens exactly as encoding will cut it: by the same pre-tokenizer
 * implementation, run on an empty-vocabulary tokenizer. Special tokens are cut out first so their
 * text never turns into merges.
 */
function countPieces(corpus: string, specials: string[], alphabet: string[]): Piece[] {
  const idOf = new Map(alphabet.map((ch, id) => [ch, id]));
  const vocab = Object.fromEntries(idOf);
  const preTokenizer = new HfTokenizer(tokenizerJson(vocab, [], []), {}).pre_tokenizer;
  if (preTokenizer === null) throw new Error('byte-level tokenizer skeleton has no pre-tokenizer');

  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const counts = new Map<string, number>();
  for (const text of corpus.split(new RegExp(specials.map(escape).join('|')))) {
    if (text === '') continue;
    for (const piece of preTokenizer.pre_tokenize(text)) counts.set(piece, (counts.get(piece) ?? 0) + 1);
  }
  return [...counts].map(([piece, count]) => ({ symbols: [...piece].map((ch) => idOf.get(ch)!), count }));
}

// A pair of token ids (a, b) is the number a * PAIR_KEY_BASE + b: exact in a double, fast as a Map key.
const PAIR_KEY_BASE = 2 ** 20;

/**
 * Classic BPE training: repeatedly merge the most frequent adjacent pair (ties: the pair with the
 * smaller ids, as the Rust trainer breaks them) until the vocabulary is full. Pair counts are
 * updated only for the pieces that contain the merged pair, so each merge costs the size of
 * those pieces plus one scan of the live pairs.
 */
function learnMerges(pieces: Piece[], alphabet: string[], targetSize: number): { tokens: string[]; merges: string[] } {
  const tokens = [...alphabet];
  const idOf = new Map(tokens.map((t, id) => [t, id]));
  const merges: string[] = [];
  const pairCount = new Map<number, number>();
  const piecesWith = new Map<number, Set<number>>();

  const addPairs = (p: number, sign: 1 | -1) => {
    const { symbols, count } = pieces[p];
    for (let j = 0; j + 1 < symbols.length; j++) {
      const key = symbols[j] * PAIR_KEY_BASE + symbols[j + 1];
      const next = (pairCount.get(key) ?? 0) + sign * count;
      if (next === 0) pairCount.delete(key);
      else pairCount.set(key, next);
      if (sign === 1) {
        let set = piecesWith.get(key);
        if (set === undefined) piecesWith.set(key, (set = new Set()));
        set.add(p);
      }
    }
  };
  pieces.forEach((_, p) => addPairs(p, 1));

  while (tokens.length < targetSize && pairCount.size > 0) {
    let best = -1;
    let bestCount = 0;
    for (const [key, count] of pairCount) {
      if (count > bestCount || (count === bestCount && key < best)) [best, bestCount] = [key, count];
    }
    const a = Math.floor(best / PAIR_KEY_BASE);
    const b = best % PAIR_KEY_BASE;
    const merged = tokens[a] + tokens[b];
    // Two different merges can spell the same string ("ab"+"c", "a"+"bc"); they share one id.
    let c = idOf.get(merged);
    if (c === undefined) {
      c = tokens.push(merged) - 1;
      idOf.set(merged, c);
    }
    merges.push(`${tokens[a]} ${tokens[b]}`);

    for (const p of piecesWith.get(best) ?? []) {
      const old = pieces[p].symbols;
      const merged: number[] = [];
      for (let j = 0; j < old.length; j++) {
        if (j + 1 < old.length && old[j] === a && old[j + 1] === b) {
          merged.push(c);
          j++;
        } else merged.push(old[j]);
      }
      if (merged.length === old.length) continue; // the pair left this piece in an earlier merge
      addPairs(p, -1);
      pieces[p].symbols = merged;
      addPairs(p, 1);
    }
    piecesWith.delete(best);
  }
  return { tokens, merges };
}
