/** Evaluation: perplexity, BLEU/ROUGE as LLaMA-Factory computes them (jieba for Chinese), exact match. */
export { evaluate, formatReport, parseMetrics, writeReport, METRIC_NAMES } from './run.js';
export type { EvalReport, EvalSample, EvaluateOptions, MetricName, SampleResult, Variant, VariantResult } from './run.js';
export { loadEvalExamples } from './data.js';
export type { EvalExample, LoadEvalOptions } from './data.js';
export { answerIds, answerNll, perplexity } from './perplexity.js';
export type { AnswerNll } from './perplexity.js';
export { brevityPenalty, closestRefLength, corpusBleu, modifiedPrecision, sentenceBleu } from './bleu.js';
export type { BleuOptions, Precision, Smoothing } from './bleu.js';
export { cutSentences, lcsLength, pySplit, rougeL, rougeN, rougeScores, rougeWords } from './rouge.js';
export type { RougeScore, RougeScores } from './rouge.js';
export { exactMatch, similarityScores } from './similarity.js';
export type { SimilarityScores } from './similarity.js';
export { jiebaCut } from './segment.js';
