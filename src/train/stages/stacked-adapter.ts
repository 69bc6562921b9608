/**
 * Continuing from an SFT adapter: its update is kept, frozen, inside each adapted layer, so the
 * layer computes W₀x + b + s·B(Ax) while W₀ itself stays untouched. A new LoRA adapter then wraps
 * these layers; switched off, the model is exactly the SFT model (the DPO/PPO reference), and the
 * pristine base weights can still be shared with a reward model trained on the bare base.
 */
import fs from 'node:fs';
import { join, resolve } from 'node:path';
import { FileFormatError, UserError } from '../../errors.js';
import { readJsonFile, writeJsonAtomic } from '../../io/model-folder.js';
import { loadAdapter } from '../../io/peft-adapter.js';
import type { CausalLM } from '../../models/decoder.js';
import { loraLayers } from '../../nn/apply-lora.js';
import { Linear } from '../../nn/layers.js';
import { add, linear, scale } from '../../tensor/index.js';
import { Tensor } from '../../tensor/tensor.js';

/** A frozen linear layer plus a frozen low-rank update; a `Linear`, so LoRA can wrap it again. */
export class FrozenLoraLinear extends Linear {
  constructor(
    base: Linear,
    readonly a: Tensor,
    readonly b: Tensor,
    readonly scaling: number,
  ) {
    super(base.inFeatures, base.outFeatures, base.bias !== null);
    this.setParameter('weight', base.weight);
    if (base.bias) this.setParameter('bias', base.bias);
  }

  override forward(x: Tensor): Tensor {
    const y = linear(x, this.weight, this.bias);
    return add(y, scale(linear(linear(x, this.a), this.b), this.scaling));
  }
}

/** Loads the PEFT adapter in `dir` onto `model` as frozen updates; returns how many layers it changed. */
export function stackFrozenAdapter(model: CausalLM, dir: string): number {
  loadAdapter(model, dir);
  const layers = loraLayers(model);
  for (const [path, l] of layers) {
    const frozen = (t: Tensor) => new Tensor(t.data, t.shape, false);
    model.replaceModule(path, new FrozenLoraLinear(l.base, frozen(l.lora_A.weight), frozen(l.lora_B.weight), l.scaling));
  }
  return layers.length;
}

/**
 * Beside an adapter trained over another, frozen one: which one. Readers that load the adapter
 * (the reward model, `tunekit reward`) stack that one first; PEFT and other tools see a plain
 * adapter whose base is the model with the first adapter merged.
 */
export const BASE_ADAPTER_FILE = 'base_adapter.json';

export function writeBaseAdapter(dir: string, adapter: string): void {
  writeJsonAtomic(join(dir, BASE_ADAPTER_FILE), {
    base_adapter: resolve(adapter),
    note: 'this adapter was trained over base_adapter (kept frozen); apply base_adapter first, or use a model with it merged (tunekit export) as the base',
  });
}

/** The adapter `dir` was trained over, or null. */
export function readBaseAdapter(dir: string): string | null {
  const path = join(dir, BASE_ADAPTER_FILE);
  if (!fs.existsSync(path)) return null;
  const value = readJsonFile(path).base_adapter;
  if (typeof value !== 'string' || value === '') throw new FileFormatError(path, '"base_adapter" must be the path of an adapter folder');
  if (!fs.existsSync(value)) throw new UserError(`${path}: the adapter it was trained over, ${value}, does not exist`);
  return value;
}
