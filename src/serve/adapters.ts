/**
 * Several LoRA adapters over one base model in memory, switched per request without reloading.
 *
 * Each adapter is loaded once with `loadAdapter`, which wraps the targeted linear layers in
 * `LoraLinear`s holding that adapter's A and B; the wrappers are then taken off again and kept.
 * A `LoraLinear` shares its base layer (the very same weight tensors), so switching is only
 * putting one adapter's wrappers into the module tree and the plain layers back elsewhere: a few
 * hundred pointer swaps, no copy, no merge, and exact numbers. Adapters may differ in rank,
 * alpha and target modules.
 */
import { basename, resolve } from 'node:path';

import { UserError } from '../errors.js';
import { loadAdapter } from '../io/peft-adapter.js';
import type { CausalLM } from '../models/decoder.js';
import { loraLayers } from '../nn/apply-lora.js';
import type { LoraLinear } from '../nn/lora.js';

export interface AdapterSpec {
  /** The id clients put in `model`; default the folder's name. */
  name?: string;
  dir: string;
}

/**
 * `NAME=DIR` or `DIR` (named after its folder), as `--adapter` takes it. A plain folder path
 * containing `=` can be given as `./a=b`.
 */
export function parseAdapterFlag(value: string): AdapterSpec {
  const eq = value.indexOf('=');
  if (eq > 0 && !value.slice(0, eq).includes('/')) {
    const name = value.slice(0, eq).trim();
    const dir = value.slice(eq + 1);
    if (!dir) throw new UserError(`--adapter ${value}: no folder after "="`);
    return { name, dir };
  }
  return { dir: value };
}

/** A folder's name as a model id: `out/sft-lora/` → `sft-lora`. */
export function folderId(dir: string): string {
  return basename(resolve(dir));
}

export class AdapterSet {
  private readonly adapters = new Map<string, { dir: string; layers: Array<[string, LoraLinear]> }>();
  private active: string | null = null;

  constructor(private readonly model: CausalLM) {
    if (loraLayers(model).length > 0) throw new Error('AdapterSet: the model already has LoRA layers');
  }

  get names(): string[] {
    return [...this.adapters.keys()];
  }

  /** The adapter in use, or null for the base model. */
  get current(): string | null {
    return this.active;
  }

  has(name: string): boolean {
    return this.adapters.has(name);
  }

  /** Loads the adapter in `dir` under `name`; the model is left as the base. */
  add(name: string, dir: string): void {
    if (this.adapters.has(name)) throw new UserError(`two adapters are named "${name}"; give one another name with --adapter NAME=DIR`);
    this.use(null);
    loadAdapter(this.model, dir);
    const layers = loraLayers(this.model);
    for (const [, layer] of layers) layer.eval();
    this.adapters.set(name, { dir, layers });
    this.unwrap(layers);
  }

  /** Puts adapter `name` in place (null: none, the plain base model). */
  use(name: string | null): void {
    if (name === this.active) return;
    const next = name === null ? null : this.adapters.get(name);
    if (next === undefined) throw new Error(`AdapterSet: no adapter "${name}"`);
    if (this.active !== null) this.unwrap(this.adapters.get(this.active)!.layers);
    if (next) for (const [path, layer] of next.layers) this.model.replaceModule(path, layer);
    this.active = name;
  }

  private unwrap(layers: Array<[string, LoraLinear]>): void {
    for (const [path, layer] of layers) this.model.replaceModule(path, layer.base);
  }
}
