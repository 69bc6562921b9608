/**
 * BLEU against NLTK's own documented values (its doctests) and hand-computed cases, ROUGE
 * against hand-computed values under rouge-chinese's rules (distinct n-grams, LCS over all
 * words, Chinese sentence cutting), jieba segmentation against Python jieba's output, and the
 * per-example scores LLaMA-Factory's `ComputeSimilarity` would report.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { brevityPenalty, closestRefLength, corpusBleu, modifiedPrecision, sentenceBleu } from '../src/eval/bleu.js';
import { cutSentences, lcsLength, pySplit, rougeL, rougeN, rougeScores, rougeWords } from '../src/eval/rouge.js';
import { jiebaCut } from '../src/eval/segment.js';
import { exactMatch, similarityScores } from '../src/eval/similarity.js';

/** NLTK doctests print "0.5045..."; the value must start with those digits. */
function startsWith(x: number, digits: string): void {
  const places = digits.split('.')[1].length;
  assert.equal(x.toFixed(places + 3).slice(0, digits.length), digits, `${x} should start with ${digits}`);
}

const close = (a: number, b: number, tol = 1e-12) => assert.ok(Math.abs(a - b) <= tol, `${a} ≠ ${b}`);

// NLTK's examples (nltk/translate/bleu_score.py docstrings).
const hyp1 = 'It is a guide to action which ensures that the military always obeys the commands of the party'.split(' ');
const hyp2 = 'It is to insure the troops forever hearing the activity guidebook that party direct'.split(' ');
const ref1 = 'It is a guide to action that ensures that the military will forever heed Party commands'.split(' ');
const ref2 = 'It is the guiding principle which guarantees the military forces always being under the command of the Party'.split(' ');
const ref3 = 'It is the practical guide for the army always to heed the directions of the party'.split(' ');
const refs = [ref1, ref2, ref3];

describe('BLEU (NLTK)', () => {
  it('reproduces the modified precisions of NLTK’s docstrings', () => {
    const p = (r: string[][], h: string[], n: number) => {
      const x = modifiedPrecision(r, h, n);
      return x.numerator / x.denominator;
    };
    startsWith(p(['the cat is on the mat'.split(' '), 'there is a cat on the mat'.split(' ')], 'the the the the the the the'.split(' '), 1), '0.2857');
    assert.equal(p(refs, ['of', 'the'], 1), 1);
    assert.equal(p(refs, ['of', 'the'], 2), 1);
    startsWith(p(refs, hyp1, 1), '0.9444');
    startsWith(p(refs, hyp2, 1), '0.5714');
    assert.equal(p(refs, hyp1, 2), 0.5882352941176471);
    startsWith(p(refs, hyp2, 2), '0.07692');
  });

  it('reproduces the brevity penalties of NLTK’s docstrings', () => {
    const a = (n: number) => new Array<string>(n).fill('a');
    assert.equal(brevityPenalty(closestRefLength([a(12), a(15), a(17)], 12), 12), 1);
    assert.equal(brevityPenalty(closestRefLength([a(28), a(28)], 12), 12), 0.2635971381157267);
    startsWith(brevityPenalty(closestRefLength([a(13), a(2)], 12), 12), '0.9200');
    assert.equal(closestRefLength([a(13), a(11)], 12), 11, 'a tie goes to the shorter reference');
    startsWith(brevityPenalty(closestRefLength([a(11), a(8)], 7), 7), '0.8668');
    assert.equal(brevityPenalty(closestRefLength([a(11), a(8), a(6), a(7)], 7), 7), 1);
  });

  it('reproduces sentence_bleu and corpus_bleu of NLTK’s docstrings', () => {
    startsWith(sentenceBleu(refs, hyp1), '0.5045');
    assert.equal(sentenceBleu(refs, hyp2).toFixed(4), '0.0000', 'no 3- or 4-gram match and no smoothing: ~0');
    startsWith(sentenceBleu(refs, hyp2, { smoothing: 'method1' }), '0.0370');
    startsWith(sentenceBleu(refs, hyp1, { weights: [0.2, 0.2, 0.2, 0.2, 0.2] }), '0.3920');
    startsWith(sentenceBleu(refs, hyp1, { weights: [0.5, 0.5] }), '0.7453');
    startsWith(sentenceBleu(refs, hyp1, { weights: [1 / 3, 1 / 3, 1 / 3] }), '0.6240');
    // SmoothingFunction's docstring: one reference, methods 0, 1 and 3 agree when every order matches.
    for (const smoothing of ['none', 'method1', 'method3'] as const) startsWith(sentenceBleu([ref1], hyp1, { smoothing }), '0.4118');
    const hypB = 'he read the book because he was interested in world history'.split(' ');
    const refB = 'he was interested in world history because he read the book'.split(' ');
    startsWith(corpusBleu([refs, [refB]], [hyp1, hypB]), '0.5920');
    startsWith(corpusBleu([refs, [refB]], [hyp1, hypB], { weights: [0.1, 0.3, 0.5, 0.1] }), '0.5818');
    startsWith((sentenceBleu(refs, hyp1) + sentenceBleu([refB], hypB)) / 2, '0.6223');
  });

  it('smooths zero matches with method 3 as 1/(2^k · count), checked by hand on characters', () => {
    // 我爱上海 vs 我爱北京: 1-grams 2/4, 2-grams 1/3 (我爱), 3-grams 0/2 → 1/(2·2), 4-grams 0/1 → 1/(4·1);
    // equal lengths, so no brevity penalty: BLEU = (1/2 · 1/3 · 1/4 · 1/4)^(1/4) = (1/96)^(1/4).
    close(sentenceBleu([Array.from('我爱北京')], Array.from('我爱上海'), { smoothing: 'method3' }), (1 / 96) ** 0.25);
    // Shorter than the reference: every order matches fully, so BLEU is the brevity penalty exp(1 − 7/4).
    close(sentenceBleu([Array.from('我爱北京天安门')], Array.from('我爱北京'), { smoothing: 'method3' }), Math.exp(1 - 7 / 4));
    // Two characters: 3- and 4-grams do not exist (count 0, denominator 1) → 1/2 and 1/4.
    close(sentenceBleu([Array.from('北京')], Array.from('北京'), { smoothing: 'method3' }), (1 * 1 * 0.5 * 0.25) ** 0.25);
    assert.equal(sentenceBleu([Array.from('北京')], Array.from('上海'), { smoothing: 'method3' }), 0, 'no unigram match: 0');
    assert.equal(sentenceBleu([Array.from('北京')], [], { smoothing: 'method3' }), 0);
  });
});

describe('ROUGE (rouge-chinese)', () => {
  it('counts distinct n-grams and takes the LCS over all words, by hand', () => {
    const h = ['我', '爱', '北京', '天安门'];
    const r = ['我', '爱', '北京'];
    const r1 = rougeN(h, r, 1); // distinct: hyp 4, ref 3, overlap 3
    assert.deepEqual([r1.p, r1.r], [3 / 4, 1]);
    close(r1.f, 2 * ((0.75 * 1) / (0.75 + 1 + 1e-8)));
    const r2 = rougeN(h, r, 2); // {我爱, 爱北京, 北京天安门} vs {我爱, 爱北京}
    assert.deepEqual([r2.p, r2.r], [2 / 3, 1]);
    const rl = rougeL(h, r);
    assert.deepEqual([rl.p, rl.r], [3 / 4, 1]);
    // Repeated words count once in ROUGE-N (exclusive=True), but every occurrence in ROUGE-L.
    const rep = rougeN(['的', '的', '的', '好'], ['的', '好', '好'], 1);
    assert.deepEqual([rep.p, rep.r], [1, 1]);
    close(rep.f, 2 / (2 + 1e-8));
    const repL = rougeL(['的', '的', '的', '好'], ['的', '好', '好']);
    assert.deepEqual([repL.p, repL.r], [2 / 4, 2 / 3]);
    assert.equal(lcsLength(['a', 'b', 'c', 'b', 'd', 'a', 'b'], ['b', 'd', 'c', 'a', 'b', 'a']), 4);
    assert.deepEqual(rougeN(['a'], ['a', 'b'], 2), { f: 0, p: 0, r: 0 }, 'a text shorter than n has no n-grams');
  });

  it('cuts sentences as rouge-chinese does, keeping a closing quote with its sentence', () => {
    assert.deepEqual(cutSentences('你好。世界！再见?好'), ['你好。', '世界！', '再见?', '好']);
    assert.deepEqual(cutSentences('他说：“好。”然后走了。'), ['他说：“好。”', '然后走了。']);
    assert.deepEqual(cutSentences('等等......然后……………好'), ['等等......', '然后……', '………', '好']);
    assert.deepEqual(cutSentences('结束。  \n'), ['结束。']);
  });

  it('reads words as rouge-chinese does: whitespace collapsed per sentence, a blank line an empty word', () => {
    assert.deepEqual(rougeWords('你好 。 世界'), ['你好', '。', '世界']);
    assert.deepEqual(rougeWords('a  \t b'), ['a', 'b']);
    assert.deepEqual(rougeWords('a \n \n b'), ['a', '', 'b']);
    // Python's str.split() separators: U+0085 is one, U+FEFF is not.
    assert.deepEqual(pySplit('a\u0085b\ufeffc d'), ['a', 'b\ufeffc', 'd']);
    // n-grams run across sentence ends.
    const s = rougeScores('你好 。 世界', '你好 。 世界');
    assert.deepEqual([s['rouge-2'].p, s['rouge-2'].r], [1, 1]);
  });
});

describe('LLaMA-Factory similarity scores', () => {
  it('segments Chinese as Python jieba does (rouge-chinese README’s sentence)', () => {
    const text = '###刚刚发声，A股这种情况十分罕见！大聪明逆市抄底330亿，一篇研报引爆全球，市场逻辑生变？';
    const python = '### 刚刚 发声 ， A股 这种 情况 十分 罕见 ！ 大 聪明 逆市 抄底 330 亿 ， 一篇 研报 引爆 全球 ， 市场 逻辑 生变 ？';
    assert.equal(jiebaCut(text).join(' '), python);
    assert.deepEqual(jiebaCut('hello world'), ['hello', ' ', 'world']);
  });

  it('scores ROUGE on jieba words and BLEU on characters, ×100, rounded to 4 places', () => {
    // jieba: 我/爱/北京/天安门 vs 我/爱/北京 (on characters ROUGE-1 would be p = 4/7 instead).
    assert.deepEqual(jiebaCut('我爱北京天安门'), ['我', '爱', '北京', '天安门']);
    const s = similarityScores('我爱北京天安门', '我爱北京');
    assert.equal(s['rouge-1'], Math.round(2 * ((0.75 * 1) / (1.75 + 1e-8)) * 1e6) / 1e4);
    assert.equal(s['rouge-1'], 85.7143);
    assert.equal(s['rouge-2'], Math.round(2 * (((2 / 3) * 1) / (2 / 3 + 1 + 1e-8)) * 1e6) / 1e4);
    assert.equal(s['rouge-l'], 85.7143);
    // Characters: 1-grams 4/7, 2-grams 3/6, 3-grams 2/5, 4-grams 1/4; longer than the reference, no penalty.
    assert.equal(s['bleu-4'], Math.round(((4 / 7) * (3 / 6) * (2 / 5) * (1 / 4)) ** 0.25 * 1e6) / 1e4);
  });

  it('gives zeros for an empty answer, as LLaMA-Factory does', () => {
    assert.deepEqual(similarityScores('', '营业时间是10点'), { 'bleu-4': 0, 'rouge-1': 0, 'rouge-2': 0, 'rouge-l': 0 });
    assert.deepEqual(similarityScores('  \n', '营业时间是10点'), { 'bleu-4': 0, 'rouge-1': 0, 'rouge-2': 0, 'rouge-l': 0 });
  });

  it('counts an exact match after trimming', () => {
    assert.equal(exactMatch(' 好的 \n', '好的'), 100);
    assert.equal(exactMatch('好的。', '好的'), 0);
  });
});
