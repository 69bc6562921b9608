/**
 * Direct preference optimisation and its reference-free relatives, on pair batches.
 *
 *   sigmoid (DPO):  −log σ(β·[(log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))])
 *   ipo:            ([(…) − (…)] − 1/(2β))², with per-token mean log-probabilities
 *   orpo:           −log π(y_c) + β·(−log σ(log odds(y_c) − log odds(y_r))), odds = p/(1 − p),
 *                   per-token means, no reference
 *   simpo:          −log σ(β·(log π(y_c) − log π(y_r)) − γ), per-token means, no reference
 *
 * as LLaMA-Factory computes them (sums of log-probabilities for sigmoid, per-token means for the
 * others), plus `pref_ftx`·(−mean log π(y_c)), an SFT loss on the chosen answer. The reference is
 * the policy with its adapter switched off (or a frozen copy for full fine-tuning); its
 * log-probabilities never change, so each pair's are computed once and kept.
 *
 * Logged as TRL names them: rewards/chosen, rewards/rejected (β·(log π − log π_ref), or β·log π
 * without a reference), rewards/accuracies, rewards/margins, logps/chosen, logps/rejected.
 */
import type { EncodedExample } from '../../data/index.js';
import type { CausalLM } from '../../models/decoder.js';
import { setLoraEnabled } from '../../nn/apply-lora.js';
import { add, clamp, log1mexp, logSigmoid, mul, reshape, scale, selectRows, sub, sum } from '../../tensor/index.js';
import { Tensor, noGrad } from '../../tensor/tensor.js';
import type { PrefLoss } from '../config.js';
import type { PairBatch } from '../preference-data.js';
import type { LossFn } from '../trainer.js';
import { rowLogprobs } from './sequence.js';

export interface DpoSettings {
  beta: number;
  loss: PrefLoss;
  /** Weight of the SFT loss on the chosen answer (pref_ftx). */
  ftx: number;
  /** SimPO's margin γ. */
  simpoGamma: number;
}

/** Summed reference log-probabilities of a pair batch's 2n rows. */
export type ReferenceLogps = (batch: PairBatch) => Float64Array;

/** Whether a loss compares with a reference model. */
export function needsReference(loss: PrefLoss): boolean {
  return loss === 'sigmoid' || loss === 'ipo';
}

/**
 * Reference log-probabilities from `model` — with its LoRA adapters switched off when
 * `adapterOff` (the policy itself), else as it is (a separate frozen model) — computed once per
 * encoded answer and kept.
 */
export function cachedReference(model: CausalLM, adapterOff: boolean): ReferenceLogps {
  const cache = new WeakMap<EncodedExample, number>();
  return (batch) => {
    const rows = [...batch.items.map((p) => p.chosen), ...batch.items.map((p) => p.rejected)];
    if (!rows.every((r) => cache.has(r))) {
      const sums = noGrad(() => {
        if (!adapterOff) return rowLogprobs(model, batch).sums.data;
        setLoraEnabled(model, false);
        try {
          return rowLogprobs(model, batch).sums.data;
        } finally {
          setLoraEnabled(model, true);
        }
      });
      rows.forEach((r, i) => cache.set(r, sums[i]));
    }
    return Float64Array.from(rows, (r) => cache.get(r) as number);
  };
}

/** The trainer's loss for stage dpo; `tokens` counts pairs, so the loss is a mean over pairs. */
export function dpoLoss(s: DpoSettings, reference: ReferenceLogps | null): LossFn<PairBatch> {
  if (needsReference(s.loss) && !reference) throw new Error(`dpoLoss: pref_loss ${s.loss} needs a reference`);
  return (model, batch, normalizer) => {
    const n = batch.pairs;
    const { sums, counts } = rowLogprobs(model, batch);
    const inverse = constant(counts.map((c) => 1 / Math.max(1, c)));
    const means = mul(sums, inverse); // [2n] mean log-probability per answer token
    const logps = s.loss === 'sigmoid' ? sums : means;
    const [chosen, rejected] = halves(logps, n);
    const policy = Array.from(logps.data);

    let losses: Tensor;
    let refLogps: number[] | null = null;
    if (s.loss === 'sigmoid' || s.loss === 'ipo') {
      const ref = (reference as ReferenceLogps)(batch);
      refLogps = Array.from(ref, (v, i) => (s.loss === 'sigmoid' ? v : v / Math.max(1, counts[i])));
      const refMargin = constant(Array.from({ length: n }, (_, i) => (refLogps as number[])[i] - (refLogps as number[])[n + i]));
      const logits = sub(sub(chosen, rejected), refMargin);
      if (s.loss === 'sigmoid') losses = scale(logSigmoid(scale(logits, s.beta)), -1);
      else {
        const d = add(logits, constant(new Array<number>(n).fill(-1 / (2 * s.beta))));
        losses = mul(d, d);
      }
    } else if (s.loss === 'orpo') {
      // log(1 − p) needs p < 1; a mean log-probability of exactly 0 is rounding.
      const below = (t: Tensor) => clamp(t, -1e30, -1e-6);
      const logOdds = sub(sub(chosen, rejected), sub(log1mexp(below(chosen)), log1mexp(below(rejected))));
      losses = sub(scale(logSigmoid(logOdds), -s.beta), chosen);
    } else {
      const logits = add(sub(chosen, rejected), constant(new Array<number>(n).fill(-s.simpoGamma / s.beta)));
      losses = scale(logSigmoid(scale(logits, s.beta)), -1);
    }
    const metrics: Record<string, number> = {};
    if (s.ftx > 0) {
      const [chosenMean] = halves(means, n);
      losses = sub(losses, scale(chosenMean, s.ftx));
      metrics.sft_loss = -mean(Array.from(chosenMean.data));
    }
    const loss = scale(sum(losses), 1 / Math.max(1, normalizer));

    const reward = (i: number) => s.beta * (policy[i] - (refLogps ? refLogps[i] : 0));
    const rc = Array.from({ length: n }, (_, i) => reward(i));
    const rr = Array.from({ length: n }, (_, i) => reward(n + i));
    Object.assign(metrics, {
      'rewards/chosen': mean(rc),
      'rewards/rejected': mean(rr),
      'rewards/accuracies': mean(rc.map((c, i) => (c > rr[i] ? 1 : 0))),
      'rewards/margins': mean(rc.map((c, i) => c - rr[i])),
      'logps/chosen': mean(policy.slice(0, n)),
      'logps/rejected': mean(policy.slice(n)),
    });
    return { loss, tokens: n, metrics };
  };
}

/** The first n and the last n entries of a [2n] tensor, each [n]. */
export function halves(x: Tensor, n: number): [Tensor, Tensor] {
  const col = reshape(x, [2 * n, 1]);
  const first = Int32Array.from({ length: n }, (_, i) => i);
  const second = Int32Array.from({ length: n }, (_, i) => n + i);
  return [reshape(selectRows(col, first), [n]), reshape(selectRows(col, second), [n])];
}

function constant(values: number[]): Tensor {
  return Tensor.from(values);
}

function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}
