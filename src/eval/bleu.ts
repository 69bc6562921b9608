/**
 * BLEU as NLTK's `nltk.translate.bleu_score` computes it (Papineni et al. 2002): modified n-gram
 * precisions clipped by the references' counts, the brevity penalty against the closest reference
 * length, and a weighted geometric mean; with Chen & Cherry's (2014) smoothing methods 1 and 3
 * for precisions whose match count is zero. LLaMA-Factory's `bleu-4` is
 * `sentence_bleu([list(label)], list(pred), smoothing_function=SmoothingFunction().method3)`:
 * characters as tokens, one reference, uniform weights over 1–4-grams.
 */

/** How zero n-gram matches are treated (NLTK's SmoothingFunction methods). */
export type Smoothing = 'none' | 'method1' | 'method3';

export interface BleuOptions {
  /** Weights of the 1-gram, 2-gram, … precisions; default BLEU-4's (0.25, 0.25, 0.25, 0.25). */
  weights?: readonly number[];
  smoothing?: Smoothing;
  /** Method 1's added count (NLTK's default 0.1). */
  epsilon?: number;
}

/** A precision kept as a fraction, unreduced, as NLTK keeps it (smoothing reads the denominator). */
export interface Precision {
  numerator: number;
  denominator: number;
}

const BLEU4 = [0.25, 0.25, 0.25, 0.25];
/** Python's sys.float_info.min, what NLTK's method 0 puts in place of a zero precision. */
const FLOAT_MIN = 2.2250738585072014e-308;

function ngramCounts(tokens: readonly string[], n: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i + n <= tokens.length; i++) {
    const key = tokens.slice(i, i + n).join('\u0000');
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

/** Hypothesis n-grams matched in a reference, each counted at most as often as in the reference that has it most. */
export function modifiedPrecision(references: readonly (readonly string[])[], hypothesis: readonly string[], n: number): Precision {
  const counts = ngramCounts(hypothesis, n);
  const maxRef = new Map<string, number>();
  for (const reference of references) {
    const refCounts = ngramCounts(reference, n);
    for (const key of counts.keys()) maxRef.set(key, Math.max(maxRef.get(key) ?? 0, refCounts.get(key) ?? 0));
  }
  let numerator = 0;
  let total = 0;
  for (const [key, count] of counts) {
    numerator += Math.min(count, maxRef.get(key) ?? 0);
    total += count;
  }
  return { numerator, denominator: Math.max(1, total) };
}

/** The reference length nearest the hypothesis length; the shorter one on a tie. */
export function closestRefLength(references: readonly (readonly string[])[], hypLength: number): number {
  let best = Infinity;
  for (const r of references) {
    const d = Math.abs(r.length - hypLength);
    const bd = Math.abs(best - hypLength);
    if (d < bd || (d === bd && r.length < best)) best = r.length;
  }
  return best;
}

export function brevityPenalty(closestRefLen: number, hypLen: number): number {
  if (hypLen > closestRefLen) return 1;
  if (hypLen === 0) return 0;
  return Math.exp(1 - closestRefLen / hypLen);
}

/**
 * Corpus BLEU: numerators and denominators summed over all pairs before dividing (micro
 * average), as NLTK's `corpus_bleu`. `listOfReferences[i]` are the references of `hypotheses[i]`.
 */
export function corpusBleu(listOfReferences: readonly (readonly (readonly string[])[])[], hypotheses: readonly (readonly string[])[], opts: BleuOptions = {}): number {
  if (listOfReferences.length !== hypotheses.length) throw new Error('corpusBleu: one list of references per hypothesis');
  const weights = opts.weights ?? BLEU4;
  const maxN = weights.length;
  const numerators = new Array<number>(maxN).fill(0);
  const denominators = new Array<number>(maxN).fill(0);
  let hypLengths = 0;
  let refLengths = 0;
  hypotheses.forEach((hypothesis, k) => {
    const references = listOfReferences[k];
    if (references.length === 0) throw new Error(`corpusBleu: hypothesis ${k} has no reference`);
    for (let n = 1; n <= maxN; n++) {
      const p = modifiedPrecision(references, hypothesis, n);
      numerators[n - 1] += p.numerator;
      denominators[n - 1] += p.denominator;
    }
    hypLengths += hypothesis.length;
    refLengths += closestRefLength(references, hypothesis.length);
  });
  const bp = brevityPenalty(refLengths, hypLengths);
  // No unigram matches: no higher-order matches either.
  if (numerators[0] === 0) return 0;
  const precisions = smooth(
    numerators.map((numerator, i) => ({ numerator, denominator: denominators[i] })),
    opts.smoothing ?? 'none',
    opts.epsilon ?? 0.1,
  );
  let sum = 0;
  weights.forEach((w, i) => {
    if (precisions[i] > 0) sum += w * Math.log(precisions[i]);
  });
  return bp * Math.exp(sum);
}

/** BLEU of one hypothesis against its references (NLTK's `sentence_bleu`). */
export function sentenceBleu(references: readonly (readonly string[])[], hypothesis: readonly string[], opts: BleuOptions = {}): number {
  return corpusBleu([references], [hypothesis], opts);
}

function smooth(p: Precision[], method: Smoothing, epsilon: number): number[] {
  switch (method) {
    case 'none':
      return p.map((x) => (x.numerator !== 0 ? x.numerator / x.denominator : FLOAT_MIN));
    case 'method1':
      // Add epsilon counts to precisions with zero matches.
      return p.map((x) => (x.numerator === 0 ? (x.numerator + epsilon) / x.denominator : x.numerator / x.denominator));
    case 'method3': {
      // NIST geometric sequence: the k-th zero precision becomes 1 / (2^k · denominator).
      let k = 1;
      return p.map((x) => {
        if (x.numerator !== 0) return x.numerator / x.denominator;
        return 1 / (2 ** k++ * x.denominator);
      });
    }
  }
}
