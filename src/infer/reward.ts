/**
 * Scoring with a trained reward model: every answer of a dataset, and for preference data the
 * pairwise accuracy (how often the chosen answer scores above the rejected one).
 */
import { describeSource, loadConversations, loadPreferencePairs, resolveDatasets } from '../data/index.js';
import type { DatasetSpec } from '../data/index.js';
import { UserError } from '../errors.js';
import { loadRewardModel, scoreConversations } from '../train/stages/reward-model.js';
import type { LoadRewardOptions, RewardModel, ScoredConversation } from '../train/stages/reward-model.js';

export { loadRewardModel, scoreConversations };
export type { LoadRewardOptions, RewardModel, ScoredConversation };

export interface ScoredRow {
  /** `file: row N` */
  source: string;
  /** A conversation's score; absent for pairs. */
  score?: number;
  chosen?: number;
  rejected?: number;
}

export interface RewardReport {
  rows: ScoredRow[];
  /** Pairs whose chosen answer scored higher, over all pairs; null for data without pairs. */
  accuracy: number | null;
  pairs: number;
  correct: number;
}

export interface ScoreDataOptions {
  /** Folder of dataset_info.json when `data` is a dataset name (default: the current folder). */
  datasetDir?: string;
  batchSize?: number;
}

/**
 * Scores a dataset: preference rows (chosen/rejected) give both scores and count toward the
 * accuracy; conversation rows give the score of their last answer.
 */
export function scoreDataset(rm: RewardModel, data: string, opts: ScoreDataOptions = {}): RewardReport {
  const specs = resolveDatasets(data, opts.datasetDir ?? '.');
  const batchSize = opts.batchSize ?? 8;
  const ranking = specs.filter((s) => s.ranking);
  if (ranking.length && ranking.length !== specs.length) throw new UserError('reward: give either preference datasets (chosen/rejected) or conversations, not both');
  return ranking.length ? scorePairs(rm, specs, batchSize) : scoreAnswers(rm, specs, batchSize);
}

function scorePairs(rm: RewardModel, specs: DatasetSpec[], batchSize: number): RewardReport {
  const pairs = loadPreferencePairs(specs).items;
  const conv = (p: (typeof pairs)[number], answer: string): ScoredConversation => {
    const messages = [...p.messages, { role: 'assistant' as const, content: answer }];
    return p.system !== undefined ? { system: p.system, messages } : { messages };
  };
  const scores = scoreConversations(rm, [...pairs.map((p) => conv(p, p.chosen)), ...pairs.map((p) => conv(p, p.rejected))], batchSize);
  const n = pairs.length;
  const rows = pairs.map((p, i) => ({ source: describeSource(p.source), chosen: scores[i], rejected: scores[n + i] }));
  const correct = rows.filter((r) => r.chosen > r.rejected).length;
  return { rows, accuracy: correct / n, pairs: n, correct };
}

function scoreAnswers(rm: RewardModel, specs: DatasetSpec[], batchSize: number): RewardReport {
  const convs = loadConversations(specs).items;
  const scores = scoreConversations(rm, convs, batchSize);
  return { rows: convs.map((c, i) => ({ source: describeSource(c.source), score: scores[i] })), accuracy: null, pairs: 0, correct: 0 };
}
