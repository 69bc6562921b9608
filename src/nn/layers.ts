import { embedding, linear, rmsNorm } from '../tensor/index.js';
import { Tensor } from '../tensor/tensor.js';
import { Module } from './module.js';

/** Anything that maps [..., in] to [..., out]: a Linear, or a LoRA wrapper around one. */
export interface LinearLike extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  forward(x: Tensor): Tensor;
}

/**
 * y = x·Wᵀ + b with W stored [out, in], as Hugging Face and PyTorch store it. A frozen W may be
 * stored as bf16 (`base_dtype: bf16`, see nn/base-dtype.ts): the product widens it on the fly.
 */
export class Linear extends Module implements LinearLike {
  weight: Tensor;
  bias: Tensor | null;

  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    hasBias = false,
  ) {
    super();
    this.weight = this.registerParameter('weight', Tensor.zeros([outFeatures, inFeatures], true));
    this.bias = hasBias ? this.registerParameter('bias', Tensor.zeros([outFeatures], true)) : null;
  }

  protected override onParameterReplaced(name: string, t: Tensor): void {
    if (name === 'weight') this.weight = t;
    if (name === 'bias') this.bias = t;
  }

  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

export class Embedding extends Module {
  weight: Tensor;

  constructor(
    readonly numEmbeddings: number,
    readonly dim: number,
  ) {
    super();
    this.weight = this.registerParameter('weight', Tensor.zeros([numEmbeddings, dim], true));
  }

  protected override onParameterReplaced(name: string, t: Tensor): void {
    if (name === 'weight') this.weight = t;
  }

  forward(ids: Int32Array, shape: readonly number[]): Tensor {
    return embedding(this.weight, ids, shape);
  }
}

export class RMSNorm extends Module {
  weight: Tensor;

  constructor(
    readonly dim: number,
    readonly eps: number,
  ) {
    super();
    this.weight = this.registerParameter('weight', Tensor.from(new Float32Array(dim).fill(1), [dim], true));
  }

  protected override onParameterReplaced(name: string, t: Tensor): void {
    if (name === 'weight') this.weight = t;
  }

  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.weight, this.eps);
  }
}

/** Sub-modules named 0, 1, 2 … as PyTorch's ModuleList names them. */
export class ModuleList<M extends Module> extends Module {
  readonly items: M[] = [];

  constructor(items: M[]) {
    super();
    items.forEach((m, i) => this.items.push(this.registerModule(String(i), m)));
  }

  protected override onModuleReplaced(name: string, m: Module): void {
    this.items[Number(name)] = m as M;
  }
}
