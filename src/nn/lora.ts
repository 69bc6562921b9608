import { backend } from '../backend/select.js';
import { add, dropout, linear, scale } from '../tensor/index.js';
import type { Rng } from '../tensor/random.js';
import type { Tensor } from '../tensor/tensor.js';
import { Linear } from './layers.js';
import type { LinearLike } from './layers.js';
import { Module } from './module.js';

export type LoraInit = 'kaiming' | 'gaussian';

export interface LoraSettings {
  r: number;
  alpha: number;
  dropout: number;
  useRslora: boolean;
  init: LoraInit;
}

/** alpha/r, or alpha/√r with rank-stabilised LoRA. */
export function loraScaling(s: Pick<LoraSettings, 'r' | 'alpha' | 'useRslora'>): number {
  return s.useRslora ? s.alpha / Math.sqrt(s.r) : s.alpha / s.r;
}

/**
 * A frozen linear layer plus a trainable low-rank update, as LoRA and PEFT define it:
 * y = W₀x + b + (alpha/r)·B(A(dropout(x))), A [r, in] random, B [out, r] zero at the start.
 * The base weight and bias keep their own names (`weight`, `bias`), so a checkpoint loads
 * unchanged; the update lives in `lora_A.weight` and `lora_B.weight`, PEFT's names.
 */
export class LoraLinear extends Module implements LinearLike {
  readonly lora_A: Linear;
  readonly lora_B: Linear;
  readonly scaling: number;
  /** True while B·A is folded into the base weight. */
  merged = false;
  /** Off: behave exactly like the base layer (the DPO/PPO reference). */
  enabled = true;
  private readonly dropoutP: number;

  /** Draws the dropout masks; the trainer reseeds it per step so a resumed run repeats them. */
  dropoutRng: Rng;

  constructor(
    readonly base: Linear,
    settings: LoraSettings,
    rng: Rng,
  ) {
    super();
    this.registerParameter('weight', base.weight);
    if (base.bias) this.registerParameter('bias', base.bias);
    base.weight.requiresGrad = false;
    if (base.bias) base.bias.requiresGrad = false;
    this.lora_A = this.registerModule('lora_A', new Linear(base.inFeatures, settings.r));
    this.lora_B = this.registerModule('lora_B', new Linear(settings.r, base.outFeatures));
    this.scaling = loraScaling(settings);
    this.dropoutP = settings.dropout;
    this.dropoutRng = rng;
    this.initialize(settings.init, rng);
  }

  get inFeatures(): number {
    return this.base.inFeatures;
  }

  get outFeatures(): number {
    return this.base.outFeatures;
  }

  protected override onParameterReplaced(name: string, t: Tensor): void {
    if (name === 'weight' || name === 'bias') this.base.setParameter(name, t);
  }

  /** PEFT's default: A ~ Kaiming-uniform with a = √5 (bound 1/√in); or N(0, 1/r) as in the paper. B = 0. */
  private initialize(init: LoraInit, rng: Rng): void {
    const a = this.lora_A.weight.data;
    const r = this.lora_A.outFeatures;
    if (init === 'gaussian') rng.fillNormal(a, 1 / r);
    else {
      const bound = 1 / Math.sqrt(this.base.inFeatures);
      rng.fillUniform(a, -bound, bound);
    }
    this.lora_B.weight.data.fill(0);
  }

  forward(x: Tensor): Tensor {
    const y = this.base.forward(x);
    if (this.merged || !this.enabled) {
      if (this.merged && !this.enabled) throw new Error('LoRA: cannot disable an adapter that is merged; unmerge first');
      return y;
    }
    const dropped = this.training ? dropout(x, this.dropoutP, this.dropoutRng) : x;
    const update = linear(linear(dropped, this.lora_A.weight), this.lora_B.weight);
    return add(y, scale(update, this.scaling));
  }

  /** W ← W + scaling·B·A: inference then costs nothing extra. */
  merge(): void {
    if (this.merged) return;
    this.foldDelta(1);
    this.merged = true;
  }

  /** W ← W − scaling·B·A, undoing `merge`. */
  unmerge(): void {
    if (!this.merged) return;
    this.foldDelta(-1);
    this.merged = false;
  }

  /**
   * Folds ±scaling·B·A into the base weight in float32. A base stored as bf16 is widened first
   * and stays float32 (merged, or unmerged again): rounding the sum back to bf16 would make
   * unmerge inexact; saving converts to whatever dtype is asked for.
   */
  private foldDelta(sign: 1 | -1): void {
    const w = this.base.weight.toFloat32().data;
    const delta = new Float32Array(w.length);
    const r = this.lora_A.outFeatures;
    const out = this.base.outFeatures;
    const inF = this.base.inFeatures;
    backend().gemm({
      transA: false, transB: false, m: out, n: inF, k: r, alpha: this.scaling,
      a: this.lora_B.weight.data, lda: r, b: this.lora_A.weight.data, ldb: inF, beta: 0, c: delta, ldc: inF,
    });
    for (let i = 0; i < delta.length; i++) {
      if (!Number.isFinite(delta[i])) throw new Error('LoRA merge: the update contains NaN or infinity; the adapter is broken');
    }
    for (let i = 0; i < w.length; i++) w[i] += sign * delta[i];
  }
}
