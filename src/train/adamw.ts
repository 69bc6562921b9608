import type { Tensor } from '../tensor/tensor.js';

export interface AdamWSettings {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export const ADAMW_DEFAULTS: Omit<AdamWSettings, 'lr'> = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };

/** Moment buffers of one parameter, saved in checkpoints so a resumed run continues exactly. */
export interface AdamWState {
  step: number;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
}

/**
 * AdamW as PyTorch implements it: decoupled weight decay (p ← p − lr·wd·p), bias-corrected
 * moments, eps added to √v̂.
 */
export class AdamW {
  state: AdamWState = { step: 0, m: new Map(), v: new Map() };

  constructor(
    private readonly params: ReadonlyArray<[string, Tensor]>,
    readonly settings: AdamWSettings,
  ) {}

  /** One update with learning rate `lr` (the schedule's value for this step). */
  step(lr: number): void {
    const { beta1, beta2, eps, weightDecay } = this.settings;
    this.state.step++;
    const t = this.state.step;
    const c1 = 1 - beta1 ** t;
    const c2 = 1 - beta2 ** t;
    const stepSize = lr / c1;
    const sqrtC2 = Math.sqrt(c2);
    for (const [name, p] of this.params) {
      const g = p.grad?.data;
      if (!g) continue;
      const w = p.data;
      let m = this.state.m.get(name);
      let v = this.state.v.get(name);
      if (!m || !v) {
        m = new Float32Array(w.length);
        v = new Float32Array(w.length);
        this.state.m.set(name, m);
        this.state.v.set(name, v);
      }
      const decay = 1 - lr * weightDecay;
      for (let i = 0; i < w.length; i++) {
        const gi = g[i];
        const mi = beta1 * m[i] + (1 - beta1) * gi;
        const vi = beta2 * v[i] + (1 - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i] * decay - (stepSize * mi) / (Math.sqrt(vi) / sqrtC2 + eps);
      }
    }
  }

  zeroGrad(): void {
    for (const [, p] of this.params) p.grad = null;
  }
}

/** Scales every gradient so their global L2 norm is at most `maxNorm`; returns the norm before. */
export function clipGradNorm(params: ReadonlyArray<[string, Tensor]>, maxNorm: number): number {
  let sq = 0;
  for (const [, p] of params) {
    const g = p.grad?.data;
    if (g) for (let i = 0; i < g.length; i++) sq += g[i] * g[i];
  }
  const norm = Math.sqrt(sq);
  if (maxNorm > 0 && norm > maxNorm) {
    // PyTorch's clip_grad_norm_ adds 1e-6 to the norm.
    const k = maxNorm / (norm + 1e-6);
    for (const [, p] of params) {
      const g = p.grad?.data;
      if (g) for (let i = 0; i < g.length; i++) g[i] *= k;
    }
  }
  return norm;
}
