/**
 * The arithmetic of PPO rollouts, on plain numbers (as TRL's PPOTrainer does it): the KL-shaped
 * per-token rewards, generalised advantage estimation, whitening, the adaptive KL controller and
 * running score statistics.
 */

/**
 * Per-token rewards of one response: −β·(log π − log π_ref) at every token (the KL penalty), plus
 * the sequence's score on its last token.
 */
export function shapedRewards(score: number, logprobs: ArrayLike<number>, refLogprobs: ArrayLike<number>, klCoef: number): Float64Array {
  const r = new Float64Array(logprobs.length);
  for (let t = 0; t < r.length; t++) r[t] = -klCoef * (logprobs[t] - refLogprobs[t]);
  if (r.length) r[r.length - 1] += score;
  return r;
}

/**
 * Generalised advantage estimation over one response (the value after its last token is 0):
 * δ_t = r_t + γ·V_{t+1} − V_t, A_t = δ_t + γλ·A_{t+1}; returns = A + V.
 */
export function gae(rewards: ArrayLike<number>, values: ArrayLike<number>, gamma: number, lambda: number): { advantages: Float64Array; returns: Float64Array } {
  const n = rewards.length;
  const advantages = new Float64Array(n);
  const returns = new Float64Array(n);
  let last = 0;
  for (let t = n - 1; t >= 0; t--) {
    const next = t + 1 < n ? values[t + 1] : 0;
    const delta = rewards[t] + gamma * next - values[t];
    last = delta + gamma * lambda * last;
    advantages[t] = last;
    returns[t] = last + values[t];
  }
  return { advantages, returns };
}

/**
 * Whitens every value of every array together: (x − mean)/√(var + 1e-8), with the unbiased
 * variance (torch.var) as TRL's masked_whiten; `shiftMean: false` adds the mean back.
 */
export function whiten(arrays: Float64Array[], shiftMean = true): void {
  let n = 0;
  let s = 0;
  for (const a of arrays) for (const v of a) { s += v; n++; }
  if (n < 2) return;
  const mean = s / n;
  let sq = 0;
  for (const a of arrays) for (const v of a) sq += (v - mean) ** 2;
  const inv = 1 / Math.sqrt(sq / (n - 1) + 1e-8);
  for (const a of arrays) for (let i = 0; i < a.length; i++) a[i] = (a[i] - mean) * inv + (shiftMean ? 0 : mean);
}

/**
 * The KL coefficient. Fixed, or adaptive (Ziegler et al.): after each round it moves toward
 * keeping the measured KL at `target`, by at most 20 % of `samples/horizon` per round.
 */
export class KlController {
  constructor(
    public value: number,
    readonly target: number | null,
    readonly horizon: number,
  ) {}

  update(currentKl: number, samples: number): void {
    if (this.target === null || this.target <= 0) return;
    const error = Math.min(Math.max(currentKl / this.target - 1, -0.2), 0.2);
    this.value *= 1 + (error * samples) / this.horizon;
  }
}

/** Running mean and standard deviation of scores (TRL's RunningMoments), for ppo_score_norm. */
export class RunningMoments {
  mean = 0;
  std = 1;
  var = 1;
  count = 1e-24;

  /** Adds a batch; returns its own mean and (unbiased) std. */
  update(xs: readonly number[]): { mean: number; std: number } {
    const n = xs.length;
    const m = xs.reduce((a, b) => a + b, 0) / n;
    const v = xs.reduce((a, b) => a + (b - m) ** 2, 0) / n;
    const delta = m - this.mean;
    const total = this.count + n;
    const m2 = this.var * this.count + v * n + (delta * delta * this.count * n) / total;
    this.mean += (delta * n) / total;
    this.var = m2 / total;
    this.std = Math.sqrt((this.var * total) / Math.max(1, total - 1));
    this.count = total;
    return { mean: m, std: Math.sqrt((v * n) / Math.max(1, n - 1)) };
  }
}
