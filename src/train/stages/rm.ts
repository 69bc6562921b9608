/**
 * Reward modelling: a scalar value head on each answer's last real token, trained so the chosen
 * answer scores above the rejected one, −log σ(r_chosen − r_rejected), mean over pairs (as
 * LLaMA-Factory's pairwise trainer). Logged: rewards/chosen, rewards/rejected,
 * rewards/accuracies (chosen scored higher), rewards/margins.
 */
import { logSigmoid, scale, sub, sum } from '../../tensor/index.js';
import type { PairBatch } from '../preference-data.js';
import type { LossFn } from '../trainer.js';
import { halves } from './dpo.js';
import { lastTokenScores } from './sequence.js';
import type { ValueHead } from './value-head.js';

export function rewardModelLoss(head: ValueHead): LossFn<PairBatch> {
  return (model, batch, normalizer) => {
    const n = batch.pairs;
    const scores = lastTokenScores(model, head, batch); // [2n, 1]
    const [chosen, rejected] = halves(scores, n);
    const loss = scale(sum(logSigmoid(sub(chosen, rejected))), -1 / Math.max(1, normalizer));
    const c = Array.from(chosen.data);
    const r = Array.from(rejected.data);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    return {
      loss,
      tokens: n,
      metrics: {
        'rewards/chosen': mean(c),
        'rewards/rejected': mean(r),
        'rewards/accuracies': mean(c.map((v, i) => (v > r[i] ? 1 : 0))),
        'rewards/margins': mean(c.map((v, i) => v - r[i])),
      },
    };
  };
}
