/**
 * Text similarity of a generated answer to the reference, as LLaMA-Factory's
 * `ComputeSimilarity` (src/llamafactory/train/sft/metric.py) scores one prediction:
 *
 * - ROUGE-1/2/L: both texts cut into words by jieba and joined by spaces, then rouge-chinese's
 *   F1 (all three 0 when either text has no word);
 * - BLEU-4: NLTK's `sentence_bleu` over the *characters* of the texts (`list(label)`), with
 *   smoothing method 3;
 *
 * each × 100 and rounded to 4 decimals, the numbers LLaMA-Factory reports as predict_bleu-4 etc.
 */
import { sentenceBleu } from './bleu.js';
import { pySplit, rougeScores } from './rouge.js';
import { jiebaCut } from './segment.js';

export interface SimilarityScores {
  'bleu-4': number;
  'rouge-1': number;
  'rouge-2': number;
  'rouge-l': number;
}

export function similarityScores(prediction: string, reference: string): SimilarityScores {
  const hyp = jiebaCut(prediction).join(' ');
  const ref = jiebaCut(reference).join(' ');
  let rouge = { 'rouge-1': 0, 'rouge-2': 0, 'rouge-l': 0 };
  if (pySplit(hyp).length > 0 && pySplit(ref).length > 0) {
    const s = rougeScores(hyp, ref);
    rouge = { 'rouge-1': s['rouge-1'].f, 'rouge-2': s['rouge-2'].f, 'rouge-l': s['rouge-l'].f };
  }
  const bleu = sentenceBleu([Array.from(reference)], Array.from(prediction), { smoothing: 'method3' });
  return {
    'bleu-4': round4(bleu * 100),
    'rouge-1': round4(rouge['rouge-1'] * 100),
    'rouge-2': round4(rouge['rouge-2'] * 100),
    'rouge-l': round4(rouge['rouge-l'] * 100),
  };
}

/** Exact match after trimming surrounding whitespace: 100 or 0. */
export function exactMatch(prediction: string, reference: string): number {
  return prediction.trim() === reference.trim() ? 100 : 0;
}

function round4(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}
