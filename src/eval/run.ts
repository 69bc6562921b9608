/**
 * `tunekit eval`: scores a model, and with an adapter the base and the adapted model side by
 * side, on held-out rows. One model is in memory: the adapter is loaded over the base and
 * switched off (`setLoraEnabled`) for the base's numbers, which is then exactly the base model.
 *
 *   ppl     perplexity of the reference answers given the prompts (see perplexity.ts)
 *   bleu    BLEU-4 of greedy answers, as LLaMA-Factory computes it (see similarity.ts)
 *   rouge   ROUGE-1/2/L of greedy answers on jieba words, as LLaMA-Factory
 *   em      exact match of greedy answers (trimmed), in %
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

import { UserError } from '../errors.js';
import { writeJsonAtomic } from '../io/model-folder.js';
import { generate } from '../infer/generate.js';
import { encodeChatPrompt, loadPipeline } from '../infer/pipeline.js';
import type { Pipeline } from '../infer/pipeline.js';
import { GREEDY } from '../infer/sampling.js';
import { describeSource } from '../data/index.js';
import { setLoraEnabled } from '../nn/apply-lora.js';
import type { ChatMessage } from '../text/chat-template.js';
import { loadEvalExamples } from './data.js';
import type { EvalExample } from './data.js';
import { answerNll, perplexity } from './perplexity.js';
import { exactMatch, similarityScores } from './similarity.js';
import type { SimilarityScores } from './similarity.js';

export type MetricName = 'ppl' | 'bleu' | 'rouge' | 'em';
export const METRIC_NAMES: readonly MetricName[] = ['ppl', 'bleu', 'rouge', 'em'];

export interface EvaluateOptions {
  model: string;
  adapter?: string | null;
  /** A data file or folder, or a dataset name in `datasetDir`/dataset_info.json. */
  data: string;
  datasetDir?: string;
  metrics?: readonly MetricName[];
  /** Longest generated answer (default 128). */
  maxNewTokens?: number;
  /** A built-in chat template instead of the model's own. */
  template?: string | null;
  /** Evaluate the first N examples only. */
  limit?: number;
  /** Called after each example of each variant. */
  onProgress?: (p: { variant: Variant; done: number; total: number }) => void;
}

export type Variant = 'base' | 'adapter';

/** Averages over the data set; BLEU, ROUGE and EM in % as LLaMA-Factory reports them. */
export interface VariantResult {
  ppl?: number;
  /** Mean NLL per answer token (exp of it is ppl). */
  eval_loss?: number;
  'bleu-4'?: number;
  'rouge-1'?: number;
  'rouge-2'?: number;
  'rouge-l'?: number;
  em?: number;
}

export interface SampleResult {
  prediction?: string;
  nll?: number;
  tokens?: number;
  scores?: Partial<SimilarityScores> & { em?: number };
}

export interface EvalSample {
  index: number;
  source: string;
  prompt: ChatMessage[];
  reference: string;
  base: SampleResult;
  adapter?: SampleResult;
}

export interface EvalReport {
  model: string;
  adapter: string | null;
  data: string;
  examples: number;
  metrics: MetricName[];
  maxNewTokens: number;
  results: { base: VariantResult; adapter?: VariantResult };
  samples: EvalSample[];
}

/** Comma-separated metric names, checked. */
export function parseMetrics(value: string): MetricName[] {
  const names = value.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
  if (names.length === 0) throw new UserError(`--metrics names no metric; choose from ${METRIC_NAMES.join(', ')}`);
  for (const n of names) {
    if (!(METRIC_NAMES as readonly string[]).includes(n)) throw new UserError(`unknown metric "${n}"; choose from ${METRIC_NAMES.join(', ')}`);
  }
  return [...new Set(names)] as MetricName[];
}

export function evaluate(opts: EvaluateOptions): EvalReport {
  const metrics = [...(opts.metrics ?? METRIC_NAMES)];
  const maxNewTokens = opts.maxNewTokens ?? 128;
  const examples = loadEvalExamples(opts.data, { datasetDir: opts.datasetDir, limit: opts.limit });
  const p = loadPipeline(opts.model, { adapter: opts.adapter, template: opts.template });
  const samples: EvalSample[] = examples.map((ex, index) => ({
    index, source: describeSource(ex.source), prompt: ex.prompt, reference: ex.reference, base: {},
  }));
  const variants: Variant[] = opts.adapter ? ['base', 'adapter'] : ['base'];
  const results: EvalReport['results'] = { base: {} };
  for (const variant of variants) {
    if (opts.adapter) setLoraEnabled(p.model, variant === 'adapter');
    const perSample = examples.map((ex, i) => {
      const r = scoreExample(p, ex, metrics, maxNewTokens);
      opts.onProgress?.({ variant, done: i + 1, total: examples.length });
      return r;
    });
    perSample.forEach((r, i) => {
      samples[i][variant] = r;
    });
    results[variant] = summarize(perSample, metrics);
  }
  if (opts.adapter) setLoraEnabled(p.model, true);
  return {
    model: opts.model,
    adapter: opts.adapter ?? null,
    data: opts.data,
    examples: examples.length,
    metrics,
    maxNewTokens,
    results,
    samples,
  };
}

function scoreExample(p: Pipeline, ex: EvalExample, metrics: readonly MetricName[], maxNewTokens: number): SampleResult {
  const out: SampleResult = {};
  if (metrics.includes('ppl')) {
    const { nll, tokens } = answerNll(p.model, p.tokenizer, p.template, ex.conversation);
    out.nll = nll;
    out.tokens = tokens;
  }
  if (metrics.some((m) => m !== 'ppl')) {
    const ids = encodeChatPrompt(p, ex.prompt);
    const room = p.model.config.maxPositions - ids.length;
    if (room < 1) throw new UserError(`${describeSource(ex.source)}: the prompt is ${ids.length} tokens and leaves no room to answer in the model's ${p.model.config.maxPositions} positions`);
    const prediction = generate(p.model, p.tokenizer, ids, {
      ...GREEDY, maxNewTokens: Math.min(maxNewTokens, room), seed: 0, stopTokenIds: p.stopTokenIds, stopStrings: [],
    }).text;
    out.prediction = prediction;
    const sim = similarityScores(prediction, ex.reference);
    out.scores = {};
    if (metrics.includes('bleu')) out.scores['bleu-4'] = sim['bleu-4'];
    if (metrics.includes('rouge')) Object.assign(out.scores, { 'rouge-1': sim['rouge-1'], 'rouge-2': sim['rouge-2'], 'rouge-l': sim['rouge-l'] });
    if (metrics.includes('em')) out.scores.em = exactMatch(prediction, ex.reference);
  }
  return out;
}

function summarize(samples: readonly SampleResult[], metrics: readonly MetricName[]): VariantResult {
  const out: VariantResult = {};
  const mean = (key: keyof NonNullable<SampleResult['scores']>): number =>
    samples.reduce((s, x) => s + (x.scores?.[key] ?? 0), 0) / samples.length;
  if (metrics.includes('ppl')) {
    const nll = samples.map((s) => ({ nll: s.nll ?? 0, tokens: s.tokens ?? 0 }));
    out.ppl = perplexity(nll);
    out.eval_loss = Math.log(out.ppl);
  }
  if (metrics.includes('bleu')) out['bleu-4'] = mean('bleu-4');
  if (metrics.includes('rouge')) {
    out['rouge-1'] = mean('rouge-1');
    out['rouge-2'] = mean('rouge-2');
    out['rouge-l'] = mean('rouge-l');
  }
  if (metrics.includes('em')) out.em = mean('em');
  return out;
}

/** Table rows: key, label, decimals. */
const ROWS: Array<[keyof VariantResult, string, number]> = [
  ['ppl', 'perplexity', 2],
  ['eval_loss', 'eval loss', 4],
  ['bleu-4', 'BLEU-4', 2],
  ['rouge-1', 'ROUGE-1', 2],
  ['rouge-2', 'ROUGE-2', 2],
  ['rouge-l', 'ROUGE-L', 2],
  ['em', 'exact match %', 2],
];

/** The results as a text table: one column per variant, and the change when there are two. */
export function formatReport(report: EvalReport): string {
  const { base, adapter } = report.results;
  const header = adapter ? ['metric', 'base', 'adapter', 'change'] : ['metric', 'model'];
  const rows: string[][] = [];
  for (const [key, label, decimals] of ROWS) {
    if (base[key] === undefined) continue;
    const row = [label, base[key]!.toFixed(decimals)];
    if (adapter) {
      const delta = adapter[key]! - base[key]!;
      row.push(adapter[key]!.toFixed(decimals), `${delta >= 0 ? '+' : ''}${delta.toFixed(decimals)}`);
    }
    rows.push(row);
  }
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (cells: string[]) => cells.map((s, c) => (c === 0 ? s.padEnd(widths[c]) : s.padStart(widths[c]))).join('   ');
  const title = `${report.examples} examples from ${report.data}`;
  return [title, line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** Writes the report as JSON (through a temporary file and a rename), creating its folder. */
export function writeReport(path: string, report: EvalReport): void {
  mkdirSync(dirname(path), { recursive: true });
  writeJsonAtomic(path, report);
}
