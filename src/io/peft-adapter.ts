/**
 * LoRA adapters in PEFT's format, so an adapter tunekit trains loads in PEFT, vLLM and
 * llama.cpp's converter unchanged, and an adapter they made loads here:
 *
 *   adapter_config.json        LoraConfig as PEFT's `save_pretrained` writes it (keys sorted)
 *   adapter_model.safetensors  base_model.model.<module path>.lora_A.weight  [r, in]   F32
 *                              base_model.model.<module path>.lora_B.weight  [out, r]  F32
 *
 * `base_model.model.` is the prefix of PEFT's wrappers (PeftModel → LoraModel); the module path
 * is the transformers one (`model.layers.0.self_attn.q_proj`), which is ours too. In memory PEFT
 * puts the adapter's name between `lora_A` and `weight` (`lora_A.default.weight`) and strips it
 * when saving; some files still carry it, so reading accepts both.
 *
 * Reading refuses, with the field named, every option that would change what the numbers mean
 * (DoRA, transposed weights, per-layer ranks, extra saved modules, trained biases, base weights
 * rewritten by PiSSA/OLoRA/LoftQ): silently loading those would give a different model.
 */
import fs from 'node:fs';
import { join } from 'node:path';
import { FileFormatError, UserError } from '../errors.js';
import { applyLora, ALL_LINEAR_TARGETS, loraLayers } from '../nn/apply-lora.js';
import type { AppliedLora } from '../nn/apply-lora.js';
import { Linear } from '../nn/layers.js';
import { loraScaling } from '../nn/lora.js';
import type { LoraInit, LoraSettings } from '../nn/lora.js';
import type { Module } from '../nn/module.js';
import { readJsonFile, writeJsonAtomic } from './model-folder.js';
import { describeNames, readSafetensors, writeSafetensors } from './safetensors.js';
import type { TensorToWrite } from './safetensors.js';

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
const ADAPTER_BIN_FILE = 'adapter_model.bin';
/** PeftModel wraps LoraModel wraps the transformers model: two `.model`-style prefixes. */
export const PEFT_KEY_PREFIX = 'base_model.model.';

/** What an adapter_config.json says, checked and reduced to what tunekit acts on. */
export interface AdapterConfig {
  settings: LoraSettings;
  /**
   * PEFT's `target_modules`: a list of module names or path suffixes, or a string that is a
   * regular expression matched against whole module paths (or `all-linear`, or, as tunekit
   * also accepts, one plain module name).
   */
  targetModules: string[] | string;
  /** PEFT's `exclude_modules`, same forms; null when absent. */
  excludeModules: string[] | string | null;
  baseModelNameOrPath: string | null;
  /** The file's whole JSON object, unknown fields included. */
  raw: Record<string, unknown>;
}

export interface SaveAdapterOptions {
  /** Written as `base_model_name_or_path`: the folder or hub id the adapter was trained on. */
  baseModelNameOrPath?: string | null;
}

export interface LoadedAdapter extends AppliedLora {
  config: AdapterConfig;
}

// ---------------------------------------------------------------------------------------------
// Saving

/**
 * Writes `dir/adapter_model.safetensors` and `dir/adapter_config.json` for the LoRA layers of
 * `model`, each through a temporary file and a rename.
 */
export function saveAdapter(model: Module, applied: AppliedLora, dir: string, opts: SaveAdapterOptions = {}): void {
  const layers = loraLayers(model);
  if (layers.length === 0) throw new Error('saveAdapter: the model has no LoRA layers (merged and unloaded already?)');
  const { settings } = applied;
  const scaling = loraScaling(settings);
  const tensors: TensorToWrite[] = [];
  for (const [path, layer] of layers) {
    // A mismatch here is a bug in the caller (settings from another model), not the user's.
    if (layer.lora_A.outFeatures !== settings.r || layer.scaling !== scaling) {
      throw new Error(`saveAdapter: ${path} has rank ${layer.lora_A.outFeatures} and scaling ${layer.scaling}, but the settings say r=${settings.r}, scaling ${scaling}`);
    }
    const a = layer.lora_A.weight;
    const b = layer.lora_B.weight;
    tensors.push({ name: `${PEFT_KEY_PREFIX}${path}.lora_A.weight`, shape: a.shape, data: a.data });
    tensors.push({ name: `${PEFT_KEY_PREFIX}${path}.lora_B.weight`, shape: b.shape, data: b.data });
  }
  fs.mkdirSync(dir, { recursive: true });
  // PEFT writes this metadata; some readers (transformers) check for it.
  writeSafetensors(join(dir, ADAPTER_WEIGHTS_FILE), tensors, { format: 'pt' });
  writeJsonAtomic(join(dir, ADAPTER_CONFIG_FILE), peftConfigJson(settings, targetModulesOf(model, layers.map(([p]) => p)), opts.baseModelNameOrPath ?? null));
}

/**
 * The module names when the wrapped layers are exactly every decoder linear layer with those
 * names (the usual case); otherwise the full paths, which PEFT matches exactly.
 */
function targetModulesOf(model: Module, paths: string[]): string[] {
  const names = [...new Set(paths.map(lastPart))].sort();
  const leftOut = decoderLinearPaths(model).filter((p) => names.includes(lastPart(p)));
  return leftOut.length === 0 ? names : [...paths].sort();
}

/**
 * LoraConfig's fields, sorted as PEFT sorts them. The fields every PEFT release since DoRA
 * (0.9) knows; later additions (lora_bias, exclude_modules, eva_config, …) take their defaults
 * when absent, while older releases would reject a field they do not know.
 */
function peftConfigJson(s: LoraSettings, targetModules: string[], baseModel: string | null): Record<string, unknown> {
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: baseModel,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: s.init === 'gaussian' ? 'gaussian' : true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: s.alpha,
    lora_dropout: s.dropout,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    peft_type: 'LORA',
    r: s.r,
    rank_pattern: {},
    revision: null,
    target_modules: targetModules,
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: s.useRslora,
  };
}

// ---------------------------------------------------------------------------------------------
// Reading the config

/** Options that must be off: each changes the computation in a way tunekit does not implement. */
const MUST_BE_FALSE: Record<string, string> = {
  use_dora: 'DoRA adapters are not supported',
  fan_in_fan_out: 'weights stored [in, out] (GPT-2 Conv1D) are not supported',
  lora_bias: 'a bias on lora_B is not supported',
  use_qalora: 'QALoRA adapters are not supported',
};

/** Options that must be null or empty: each adds tensors or per-layer settings tunekit ignores. */
const MUST_BE_EMPTY: Record<string, string> = {
  rank_pattern: 'per-layer ranks are not supported',
  alpha_pattern: 'per-layer alphas are not supported',
  modules_to_save: 'fully trained extra modules are not supported',
  layers_to_transform: 'adapting only some layers this way is not supported',
  layer_replication: 'replicated layers are not supported',
  trainable_token_indices: 'trained token embeddings are not supported',
  target_parameters: 'LoRA on parameters (rather than modules) is not supported',
  alora_invocation_tokens: 'activated LoRA (aLoRA) is not supported',
};

/** init_lora_weights values whose adapters expect a base model rewritten at init time. */
const BASE_REWRITING_INIT = /^(pissa|olora|corda|loftq)/;

/** Reads and checks `dir/adapter_config.json`; every problem names the file and the field. */
export function readAdapterConfig(dir: string): AdapterConfig {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new UserError(`adapter folder ${dir} does not exist`);
  const file = join(dir, ADAPTER_CONFIG_FILE);
  if (!fs.existsSync(file)) throw new UserError(`${dir} has no ${ADAPTER_CONFIG_FILE}; expected a PEFT adapter folder (${ADAPTER_CONFIG_FILE} + ${ADAPTER_WEIGHTS_FILE})`);
  const raw = readJsonFile(file);
  const fail = (field: string, problem: string): FileFormatError => new FileFormatError(file, `"${field}" ${problem}`);

  if (raw.peft_type !== 'LORA') {
    throw fail('peft_type', `is ${JSON.stringify(raw.peft_type ?? null)}; tunekit loads LoRA adapters only ("LORA")`);
  }
  if (raw.task_type !== undefined && raw.task_type !== null && raw.task_type !== 'CAUSAL_LM') {
    throw fail('task_type', `is ${JSON.stringify(raw.task_type)}; tunekit loads causal-LM adapters only ("CAUSAL_LM")`);
  }
  for (const [field, why] of Object.entries(MUST_BE_FALSE)) {
    if (raw[field] !== undefined && raw[field] !== null && raw[field] !== false) throw fail(field, `is ${JSON.stringify(raw[field])}: ${why}`);
  }
  for (const [field, why] of Object.entries(MUST_BE_EMPTY)) {
    if (!isEmpty(raw[field])) throw fail(field, `is ${JSON.stringify(raw[field])}: ${why}; expected null or empty`);
  }
  if (raw.bias !== undefined && raw.bias !== 'none') {
    throw fail('bias', `is ${JSON.stringify(raw.bias)}: trained base biases are not supported; expected "none"`);
  }

  const r = raw.r ?? 8;
  if (!Number.isInteger(r) || (r as number) < 1) throw fail('r', `must be a positive integer, got ${JSON.stringify(r)}`);
  const alpha = raw.lora_alpha ?? 8;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw fail('lora_alpha', `must be a number, got ${JSON.stringify(alpha)}`);
  const dropout = raw.lora_dropout ?? 0;
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) throw fail('lora_dropout', `must be a number in [0, 1), got ${JSON.stringify(dropout)}`);
  const useRslora = raw.use_rslora ?? false;
  if (typeof useRslora !== 'boolean') throw fail('use_rslora', `must be true or false, got ${JSON.stringify(useRslora)}`);

  const init = raw.init_lora_weights ?? true;
  if (typeof init === 'string' && BASE_REWRITING_INIT.test(init)) {
    throw fail('init_lora_weights', `is ${JSON.stringify(init)}: this adapter expects base weights rewritten at init time; convert it with PEFT (save_pretrained with path_initial_model_for_weight_conversion) first`);
  }
  if (typeof init !== 'boolean' && typeof init !== 'string') throw fail('init_lora_weights', `must be true, false or a name, got ${JSON.stringify(init)}`);
  const loraInit: LoraInit = init === 'gaussian' ? 'gaussian' : 'kaiming';

  const targetModules = moduleSpec(raw.target_modules, 'target_modules', fail);
  if (targetModules === null) throw fail('target_modules', 'is missing; expected a list of module names or a regular expression');
  const excludeModules = moduleSpec(raw.exclude_modules, 'exclude_modules', fail);

  const base = raw.base_model_name_or_path;
  return {
    settings: { r: r as number, alpha, dropout, useRslora, init: loraInit },
    targetModules,
    excludeModules,
    baseModelNameOrPath: typeof base === 'string' && base !== '' ? base : null,
    raw,
  };
}

function moduleSpec(value: unknown, field: string, fail: (f: string, p: string) => FileFormatError): string[] | string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') {
    if (value === '') throw fail(field, 'is an empty string');
    return value;
  }
  if (Array.isArray(value) && value.every((v) => typeof v === 'string' && v !== '')) return value as string[];
  throw fail(field, `must be a list of module names or a regular expression string, got ${JSON.stringify(value)}`);
}

function isEmpty(value: unknown): boolean {
  if (value === undefined || value === null) return true;
  if (Array.isArray(value)) return value.length === 0;
  if (typeof value === 'object') return Object.keys(value).length === 0;
  return false;
}

// ---------------------------------------------------------------------------------------------
// Loading

/**
 * Wraps the layers an adapter folder names in LoRA with its settings and loads its A and B
 * matrices, checking that every tensor is there, has the shape the model implies, and that the
 * file holds nothing else. Every parameter but A and B ends up frozen, as after `applyLora`.
 */
export function loadAdapter(model: Module, dir: string): LoadedAdapter {
  const config = readAdapterConfig(dir);
  const configFile = join(dir, ADAPTER_CONFIG_FILE);
  const weightsFile = join(dir, ADAPTER_WEIGHTS_FILE);
  if (!fs.existsSync(weightsFile)) {
    if (fs.existsSync(join(dir, ADAPTER_BIN_FILE))) {
      throw new UserError(
        `${dir} has only ${ADAPTER_BIN_FILE} (a pickle); tunekit reads ${ADAPTER_WEIGHTS_FILE} only: re-save it with PEFT's save_pretrained(..., safe_serialization=True)`,
      );
    }
    throw new UserError(`${dir} has no ${ADAPTER_WEIGHTS_FILE}`);
  }
  if (loraLayers(model).length > 0) throw new UserError(`cannot load the adapter in ${dir}: the model already has LoRA layers`);

  // Everything is read and checked before the model changes, so a bad file leaves it as it was.
  const paths = resolveTargets(model, config, configFile);
  const tensors = readAdapterTensors(model, paths, config, weightsFile);
  const applied = wrap(model, paths, config.settings);
  const layers = new Map(loraLayers(model));
  for (const path of applied.paths) {
    const layer = layers.get(path);
    const loaded = tensors.get(path);
    if (!layer || !loaded) throw new Error(`loadAdapter: ${path} was not wrapped or not read`);
    layer.lora_A.weight.data = loaded.a;
    layer.lora_B.weight.data = loaded.b;
  }
  return { ...applied, config };
}

/** A and B of every path, each checked against the shape the model's layer and r imply. */
function readAdapterTensors(model: Module, paths: string[], config: AdapterConfig, weightsFile: string): Map<string, { a: Float32Array; b: Float32Array }> {
  const { r } = config.settings;
  const file = readSafetensors(weightsFile);
  try {
    const byKey = canonicalKeys(file.names(), weightsFile);
    const out = new Map<string, { a: Float32Array; b: Float32Array }>();
    for (const path of paths) {
      const linear = model.getModule(path) as Linear;
      const read = (which: 'lora_A' | 'lora_B', expected: number[]): Float32Array => {
        const key = `${PEFT_KEY_PREFIX}${path}.${which}.weight`;
        const stored = byKey.get(key);
        if (stored === undefined) {
          throw new FileFormatError(weightsFile, `has no tensor "${key}", which ${ADAPTER_CONFIG_FILE}'s target_modules ${JSON.stringify(config.targetModules)} requires; the file has ${describeNames(file.names())}`);
        }
        const { shape } = file.info(stored);
        if (!sameShape(shape, expected)) {
          throw new FileFormatError(weightsFile, `tensor "${stored}" has shape [${shape.join(', ')}] but r=${r} and the model imply [${expected.join(', ')}] (an adapter for another model?)`);
        }
        byKey.delete(key);
        return file.get(stored);
      };
      out.set(path, { a: read('lora_A', [r, linear.inFeatures]), b: read('lora_B', [linear.outFeatures, r]) });
    }
    if (byKey.size > 0) {
      const [extra] = byKey.values();
      const more = byKey.size > 1 ? ` and ${byKey.size - 1} more` : '';
      throw new FileFormatError(weightsFile, `has tensor "${extra}"${more}, which no module named by ${ADAPTER_CONFIG_FILE}'s target_modules takes (expected keys "${PEFT_KEY_PREFIX}<module path>.lora_A.weight" / ".lora_B.weight")`);
    }
    return out;
  } finally {
    file.close();
  }
}

/**
 * Maps each file key to PEFT's saved form (adapter name removed):
 * `base_model.model.P.lora_A.default.weight` → `base_model.model.P.lora_A.weight`.
 */
function canonicalKeys(names: string[], file: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const name of names) {
    const m = /^(.+)\.(lora_[AB])(?:\.([^.]+))?\.weight$/.exec(name);
    const key = m ? `${m[1]}.${m[2]}.weight` : name;
    const earlier = out.get(key);
    if (earlier !== undefined) throw new FileFormatError(file, `holds both "${earlier}" and "${name}" (two adapters in one file?)`);
    out.set(key, name);
  }
  return out;
}

/** Paths of the linear layers inside decoder blocks, the ones `applyLora` can wrap. */
function decoderLinearPaths(model: Module): string[] {
  return [...model.namedModules()]
    .filter(([p, m]) => m instanceof Linear && p.includes('.layers.') && !p.includes('.lora_'))
    .map(([p]) => p);
}

/** The module paths PEFT would wrap for this config, each checked to be a linear layer tunekit can adapt. */
function resolveTargets(model: Module, config: AdapterConfig, configFile: string): string[] {
  const modules = [...model.namedModules()];
  const target = matcher(config.targetModules, 'target_modules', configFile);
  const exclude = config.excludeModules === null ? () => false : matcher(config.excludeModules, 'exclude_modules', configFile);
  const linear = new Set(decoderLinearPaths(model));
  const paths: string[] = [];
  for (const [path] of modules) {
    if (!target(path) || exclude(path)) continue;
    if (!linear.has(path)) {
      throw new FileFormatError(configFile, `"target_modules" ${JSON.stringify(config.targetModules)} matches ${path}; tunekit adapts only the linear layers of decoder blocks (${ALL_LINEAR_TARGETS.join(', ')})`);
    }
    paths.push(path);
  }
  if (paths.length === 0) {
    const available = [...new Set([...linear].map(lastPart))];
    throw new FileFormatError(configFile, `"target_modules" ${JSON.stringify(config.targetModules)} matches no module of the model; it has: ${available.join(', ')}`);
  }
  if (Array.isArray(config.targetModules)) {
    // PEFT tolerates a listed name that matches nothing; for us it means another base model.
    for (const t of config.targetModules) {
      if (!modules.some(([p]) => p === t || p.endsWith(`.${t}`))) {
        throw new FileFormatError(configFile, `"target_modules" names ${JSON.stringify(t)}, which matches no module of the model (an adapter for another architecture?)`);
      }
    }
  }
  return paths;
}

/**
 * PEFT's rule: a list matches a path equal to an entry or ending in `.entry`; a string is a
 * regular expression the whole path must match. Also `all-linear`, and a plain name as a list of one.
 */
function matcher(spec: string[] | string, field: string, configFile: string): (path: string) => boolean {
  if (spec === 'all-linear') return matcher(ALL_LINEAR_TARGETS, field, configFile);
  if (Array.isArray(spec) || /^[A-Za-z0-9_]+$/.test(spec)) {
    const list = Array.isArray(spec) ? spec : [spec];
    return (path) => list.some((t) => path === t || path.endsWith(`.${t}`));
  }
  let re: RegExp;
  try {
    // Python's named groups (?P<name>…) are JavaScript's (?<name>…).
    re = new RegExp(`^(?:${spec.replace(/\(\?P</g, '(?<')})$`);
  } catch (e) {
    throw new FileFormatError(configFile, `"${field}" ${JSON.stringify(spec)} is not a regular expression tunekit can read (${(e as Error).message})`);
  }
  return (path) => re.test(path);
}

/**
 * `applyLora` wraps every decoder layer with a listed name; a regular expression or a path
 * suffix can pick fewer, so the extra wrappers (B = 0, nothing loaded) are taken off again.
 */
function wrap(model: Module, paths: string[], settings: LoraSettings): AppliedLora {
  const names = [...new Set(paths.map(lastPart))];
  const applied = applyLora(model, { ...settings, targets: names });
  const wanted = new Set(paths);
  for (const [path, layer] of loraLayers(model)) {
    if (!wanted.has(path)) model.replaceModule(path, layer.base);
  }
  const kept = applied.paths.filter((p) => wanted.has(p));
  return { settings: applied.settings, targetModules: [...new Set(kept.map(lastPart))].sort(), paths: kept };
}

function lastPart(path: string): string {
  return path.slice(path.lastIndexOf('.') + 1);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
