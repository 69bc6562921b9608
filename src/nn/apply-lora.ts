import { UserError } from '../errors.js';
import { Rng } from '../tensor/random.js';
import { Linear } from './layers.js';
import { LoraLinear } from './lora.js';
import type { LoraInit, LoraSettings } from './lora.js';
import type { Module } from './module.js';

/** The LoRA paper's finding: adapting the query and value projections is enough. */
export const DEFAULT_LORA_TARGETS = ['q_proj', 'v_proj'];
/** Every linear layer of a decoder block (lm_head excluded, as PEFT's `all-linear` does). */
export const ALL_LINEAR_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export interface LoraOptions {
  r: number;
  /** Default 2·r. */
  alpha?: number;
  dropout?: number;
  /** Module names (`q_proj`) or `all`. */
  targets?: readonly string[] | 'all';
  init?: LoraInit;
  useRslora?: boolean;
  seed?: number;
}

export interface AppliedLora {
  settings: LoraSettings;
  /** Target module names as PEFT records them (`target_modules`). */
  targetModules: string[];
  /** Full paths of the wrapped modules. */
  paths: string[];
}

/** Parses `lora_target` as LLaMA-Factory accepts it: `all`, or names separated by commas. */
export function parseLoraTargets(value: unknown): string[] | 'all' {
  if (value === undefined || value === null || value === '') return DEFAULT_LORA_TARGETS;
  const list = Array.isArray(value) ? value.map(String) : String(value).split(',');
  const names = list.map((s) => s.trim()).filter(Boolean);
  if (names.length === 1 && (names[0] === 'all' || names[0] === 'all-linear')) return 'all';
  return names;
}

/**
 * Freezes every parameter of `model` and wraps the chosen linear layers of its decoder blocks
 * in `LoraLinear`, so only the A and B matrices train.
 */
export function applyLora(model: Module, opts: LoraOptions): AppliedLora {
  if (!Number.isInteger(opts.r) || opts.r < 1) throw new UserError(`lora_rank must be a positive integer, got ${opts.r}`);
  const settings: LoraSettings = {
    r: opts.r,
    alpha: opts.alpha ?? 2 * opts.r,
    dropout: opts.dropout ?? 0,
    useRslora: opts.useRslora ?? false,
    init: opts.init ?? 'kaiming',
  };
  if (!(settings.dropout >= 0 && settings.dropout < 1)) throw new UserError(`lora_dropout must be in [0, 1), got ${settings.dropout}`);
  if (!(Number.isFinite(settings.alpha) && settings.alpha > 0)) throw new UserError(`lora_alpha must be a positive number, got ${settings.alpha}`);
  const targets = opts.targets === 'all' ? ALL_LINEAR_TARGETS : [...(opts.targets ?? DEFAULT_LORA_TARGETS)];
  if (targets.length === 0) throw new UserError('lora_target names no module; use all, or names such as q_proj,v_proj');
  model.freeze();
  const rng = new Rng(opts.seed ?? 0);
  const paths: string[] = [];
  const found = new Set<string>();
  const candidates = [...model.namedModules()].filter(([path, m]) => m instanceof Linear && path.includes('.layers.') && !path.includes('.lora_'));
  for (const [path, m] of candidates) {
    const name = path.slice(path.lastIndexOf('.') + 1);
    if (!targets.includes(name)) continue;
    model.replaceModule(path, new LoraLinear(m as Linear, settings, rng));
    paths.push(path);
    found.add(name);
  }
  const missing = targets.filter((t) => !found.has(t));
  if (missing.length) {
    const available = [...new Set(candidates.map(([p]) => p.slice(p.lastIndexOf('.') + 1)))];
    throw new UserError(`lora_target ${missing.join(', ')} matches no linear layer; the model has: ${available.join(', ')}`);
  }
  return { settings, targetModules: [...found].sort(), paths };
}

export function loraLayers(model: Module): Array<[string, LoraLinear]> {
  return [...model.namedModules()].filter((e): e is [string, LoraLinear] => e[1] instanceof LoraLinear);
}

/** Switches every adapter on or off: off, the model is exactly its base (the DPO reference). */
export function setLoraEnabled(model: Module, enabled: boolean): void {
  for (const [, l] of loraLayers(model)) l.enabled = enabled;
}

/** Folds every adapter into its base weight and removes the wrappers: a plain model again. */
export function mergeAndUnload(model: Module): void {
  for (const [path, l] of loraLayers(model)) {
    l.merge();
    model.replaceModule(path, l.base);
  }
}

/** PEFT's summary line. */
export function trainableSummary(model: Module): string {
  let trainable = 0;
  let all = 0;
  for (const [, t] of model.namedParameters()) {
    all += t.size;
    if (t.requiresGrad) trainable += t.size;
  }
  const pct = all ? (100 * trainable) / all : 0;
  return `trainable params: ${trainable.toLocaleString('en-US')} || all params: ${all.toLocaleString('en-US')} || trainable%: ${pct.toFixed(4)}`;
}
