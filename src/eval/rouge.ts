/**
 * ROUGE-1, ROUGE-2 and ROUGE-L as the Python package `rouge-chinese` computes them (the one
 * LLaMA-Factory's `compute_metrics` calls on jieba words joined by spaces):
 *
 * - the text is cut into sentences at Chinese and English sentence ends, each sentence's
 *   whitespace runs collapsed, and the words of all sentences taken in order;
 * - ROUGE-N counts *distinct* n-grams (`exclusive=True`): p = |H ∩ R| / |H|, r = |H ∩ R| / |R|;
 * - ROUGE-L is the longest common subsequence of the two word lists: p = LCS / |hyp words|,
 *   r = LCS / |ref words|;
 * - f = 2·p·r / (p + r + 1e-8).
 */

export interface RougeScore {
  f: number;
  p: number;
  r: number;
}

export interface RougeScores {
  'rouge-1': RougeScore;
  'rouge-2': RougeScore;
  'rouge-l': RougeScore;
}

/** Python's `str.split()` separators (str.isspace), which differ from JavaScript's `\s` at the edges. */
const PY_WHITESPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;
const PY_TRAILING_WHITESPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/;

/** Python's `s.split()`: the non-empty runs between whitespace. */
export function pySplit(s: string): string[] {
  return s.split(PY_WHITESPACE).filter((w) => w !== '');
}

/** rouge-chinese's `cut_sent`: a line break after 。！？? (unless a closing quote follows), six dots, two ellipses. */
export function cutSentences(para: string): string[] {
  let s = para.replace(/([。！？?])([^”’])/g, '$1\n$2');
  s = s.replace(/(\.{6})([^”’])/g, '$1\n$2');
  s = s.replace(/(…{2})([^”’])/g, '$1\n$2');
  s = s.replace(/([。！？?][”’])([^，。！？?])/g, '$1\n$2');
  s = s.replace(PY_TRAILING_WHITESPACE, '');
  return s.split('\n');
}

/**
 * The words rouge-chinese scores for a space-separated text: sentences (empty ones dropped),
 * whitespace collapsed, each split on single spaces. A sentence of only spaces becomes one empty
 * word, as in the Python package.
 */
export function rougeWords(text: string): string[] {
  return cutSentences(text)
    .filter((s) => s.length > 0)
    .map((s) => pySplit(s).join(' '))
    .flatMap((s) => s.split(' '));
}

function fScore(p: number, r: number): number {
  return 2 * ((p * r) / (p + r + 1e-8));
}

function distinctNgrams(words: readonly string[], n: number): Set<string> {
  const out = new Set<string>();
  for (let i = 0; i + n <= words.length; i++) out.add(words.slice(i, i + n).join('\u0000'));
  return out;
}

/** ROUGE-N over distinct n-grams of two word lists. */
export function rougeN(hypWords: readonly string[], refWords: readonly string[], n: number): RougeScore {
  const hyp = distinctNgrams(hypWords, n);
  const ref = distinctNgrams(refWords, n);
  let overlap = 0;
  for (const g of hyp) if (ref.has(g)) overlap++;
  const p = hyp.size === 0 ? 0 : overlap / hyp.size;
  const r = ref.size === 0 ? 0 : overlap / ref.size;
  return { f: fScore(p, r), p, r };
}

/** Length of the longest common subsequence, in O(|a|·|b|) time and O(|b|) memory. */
export function lcsLength(a: readonly string[], b: readonly string[]): number {
  let prev = new Int32Array(b.length + 1);
  let cur = new Int32Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      cur[j] = a[i - 1] === b[j - 1] ? prev[j - 1] + 1 : Math.max(prev[j], cur[j - 1]);
    }
    [prev, cur] = [cur, prev];
  }
  return prev[b.length];
}

/** ROUGE-L: LCS of the whole word lists. */
export function rougeL(hypWords: readonly string[], refWords: readonly string[]): RougeScore {
  if (hypWords.length === 0 || refWords.length === 0) throw new Error('rougeL: empty word list');
  const lcs = lcsLength(refWords, hypWords);
  const r = lcs / refWords.length;
  const p = lcs / hypWords.length;
  return { f: fScore(p, r), p, r };
}

/**
 * rouge-chinese's `Rouge().get_scores(hyp, ref)[0]` for two texts whose words are separated by
 * spaces (e.g. jieba's output joined with " "). Both must contain a word.
 */
export function rougeScores(hyp: string, ref: string): RougeScores {
  const h = rougeWords(hyp);
  const r = rougeWords(ref);
  if (pySplit(hyp).length === 0 || pySplit(ref).length === 0) throw new Error('rougeScores: a text has no words');
  return { 'rouge-1': rougeN(h, r, 1), 'rouge-2': rougeN(h, r, 2), 'rouge-l': rougeL(h, r) };
}
