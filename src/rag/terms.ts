/**
 * Words for lexical retrieval (BM25) in Chinese and English alike.
 *
 * Chinese has no spaces, so runs of Han characters go through jieba's search mode
 * (`@node-rs/jieba`), which emits a long word and its shorter dictionary words (营业时间 →
 * 营业, 时间, 营业时间): a paraphrased question that says 营业 still meets a text that says
 * 营业时间. Latin letters and digits are cut at anything else, lower-cased and lightly stemmed
 * (hours → hour, opening → open). Very common words of either language are dropped.
 */
import { createRequire } from 'node:module';

import { Jieba } from '@node-rs/jieba';

let jieba: Jieba | null = null;

/** jieba with its default dictionary, loaded once (~0.2 s). */
function segmenter(): Jieba {
  if (!jieba) {
    const require = createRequire(import.meta.url);
    const { dict } = require('@node-rs/jieba/dict.js') as { dict: Uint8Array };
    jieba = Jieba.withDict(dict);
  }
  return jieba;
}

const HAN = /\p{Script=Han}/u;
const WORD = /[\p{L}\p{N}]+/gu;

const ENGLISH_STOPWORDS = new Set(
  ('a an and are as at be been but by can could did do does for from had has have he her his how i if in into is it its ' +
    'me my no not of on or our she so than that the their them then there these they this those to too us was we were ' +
    'what when where which who whom why will with would you your yours about any am also just do does don s t d ll re ve m ' +
    'anything something everything some there here please get got give tell know want like need much many very')
    .split(' '),
);

const CHINESE_STOPWORDS = new Set(
  ('的 了 是 在 和 与 及 或 也 都 就 而 又 吗 呢 吧 啊 呀 么 嘛 哦 着 过 被 把 给 让 向 从 对 为 以 之 其 这 那 这个 那个 ' +
    '这些 那些 我 你 他 她 它 我们 你们 他们 她们 您 请 请问 一下 什么 怎么 怎样 如何 哪 哪些 哪里 一个 有 没 没有 有没有 ' +
    '可以 能 会 要 想 还 很 更 最 个 些 等 中 上 下 里 去 来 到 做 用 看 说 得 地 啦 嗯 好 多 少 吗 嘛')
    .split(' '),
);

/** A light English stemmer: enough that plural and -ing/-ed forms meet their base word. */
export function stem(word: string): string {
  if (word.length <= 3 || /\d/.test(word)) return word;
  if (word.endsWith('ies') && word.length > 4) return word.slice(0, -3) + 'y';
  if (word.endsWith('sses')) return word.slice(0, -2);
  if (word.endsWith('ing') && word.length > 5) return undouble(word.slice(0, -3));
  if (word.endsWith('ed') && word.length > 4) return undouble(word.slice(0, -2));
  if (word.endsWith('es') && /(?:ch|sh|x|ss|zz)es$/.test(word)) return word.slice(0, -2);
  if (word.endsWith('s') && !word.endsWith('ss') && !word.endsWith('us') && !word.endsWith('is')) return word.slice(0, -1);
  return word;
}

function undouble(w: string): string {
  return /([b-df-hj-np-tv-z])\1$/.test(w) && !/(?:ll|ss|zz)$/.test(w) ? w.slice(0, -1) : w;
}

/**
 * The lexical terms of `text`, in order, repeats kept (BM25 counts them). Han runs are
 * segmented by jieba; other words are lower-cased and stemmed; stop words are dropped.
 */
export function lexicalTerms(text: string): string[] {
  const out: string[] = [];
  for (const piece of segmenter().cutForSearch(text.normalize('NFKC'), true)) {
    if (HAN.test(piece)) {
      const word = piece.trim();
      if (word && !CHINESE_STOPWORDS.has(word)) out.push(word);
      continue;
    }
    for (const m of piece.toLowerCase().matchAll(WORD)) {
      const word = m[0];
      if (ENGLISH_STOPWORDS.has(word)) continue;
      out.push(stem(word));
    }
  }
  return out;
}

/**
 * The query's words (jieba's precise mode), each with the terms it is indexed as: a Chinese
 * compound with its dictionary sub-words, an English word stemmed. Stop words are left out.
 * Relevance asks how much of each word a chunk contains.
 */
export function queryWords(text: string): string[][] {
  const words: string[][] = [];
  for (const piece of segmenter().cut(text.normalize('NFKC'), true)) {
    const terms = [...new Set(lexicalTerms(piece))];
    if (terms.length) words.push(terms);
  }
  return words;
}

/** Term → count. */
export function termFrequencies(terms: readonly string[]): Map<string, number> {
  const tf = new Map<string, number>();
  for (const t of terms) tf.set(t, (tf.get(t) ?? 0) + 1);
  return tf;
}
