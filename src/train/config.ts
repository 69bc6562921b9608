import fs from 'node:fs';
import YAML from 'yaml';
import { closest } from '../cli/args.js';
import { BASE_DTYPE_SPELLINGS, parseBaseDtype } from '../nn/base-dtype.js';
import type { BaseDtype } from '../nn/base-dtype.js';
import { FileFormatError, UserError } from '../errors.js';
import { SCHEDULER_TYPES } from './schedule.js';
import { parseRewardFunction } from './stages/reward-function.js';
import type { RewardFunction } from './stages/reward-function.js';
import type { SchedulerType } from './schedule.js';

/** A training run's settings, under LLaMA-Factory's key names. */
export interface TrainConfig {
  model_name_or_path: string;
  adapter_name_or_path: string | null;
  stage: 'pt' | 'sft' | 'rm' | 'dpo' | 'ppo';
  finetuning_type: 'lora' | 'full';
  lora_rank: number;
  lora_alpha: number | null;
  lora_dropout: number;
  lora_target: string | string[];
  use_rslora: boolean;
  lora_init: 'kaiming' | 'gaussian';
  /** How the frozen base weights are stored: `bf16` halves their memory (LoRA only; see nn/base-dtype.ts). */
  base_dtype: BaseDtype;
  dataset: string | string[];
  dataset_dir: string;
  eval_dataset: string | string[] | null;
  template: string | null;
  cutoff_len: number;
  max_samples: number | null;
  packing: boolean;
  train_on_prompt: boolean;
  mask_history: boolean;
  layout: 'task' | 'persona';
  skip_invalid: boolean;
  val_size: number;
  per_device_train_batch_size: number;
  per_device_eval_batch_size: number;
  gradient_accumulation_steps: number;
  learning_rate: number;
  num_train_epochs: number;
  max_steps: number;
  lr_scheduler_type: SchedulerType;
  warmup_ratio: number;
  warmup_steps: number;
  max_grad_norm: number;
  weight_decay: number;
  adam_beta1: number;
  adam_beta2: number;
  adam_epsilon: number;
  seed: number;
  output_dir: string;
  overwrite_output_dir: boolean;
  logging_steps: number;
  save_steps: number;
  eval_steps: number | null;
  resume_from_checkpoint: string | boolean | null;
  /**
   * Activation checkpointing: keep each decoder layer's input only and recompute the layer in
   * backward. Off unless set (LLaMA-Factory turns it on by default).
   */
  gradient_checkpointing: boolean;
  /** LLaMA-Factory's switch: true turns checkpointing off, whatever gradient_checkpointing says. */
  disable_gradient_checkpointing: boolean;
  /** DPO's β: how far the policy may move from the reference (also ORPO's and SimPO's weight). */
  pref_beta: number;
  pref_loss: PrefLoss;
  /** Weight of an added SFT loss (mean NLL per token of the chosen answer) in DPO. */
  pref_ftx: number;
  /** SimPO's target reward margin γ. */
  simpo_gamma: number;
  /** PPO: a reward model folder (an adapter with value_head.safetensors, or a full model with one). */
  reward_model: string | null;
  /** PPO: `lora` (an adapter over this base model) or `full`; null: whichever the folder holds. */
  reward_model_type: 'lora' | 'full' | null;
  /** PPO: a rule-based reward instead of a reward model (see `parseRewardFunction`). */
  reward_function: RewardFunction | null;
  ppo_epochs: number;
  /** Mini-batches of per_device_train_batch_size × gradient_accumulation_steps rollouts per round. */
  ppo_buffer_size: number;
  /** Initial coefficient of the per-token KL penalty against the reference. */
  ppo_kl_coef: number;
  /** Target KL of the adaptive controller; null keeps ppo_kl_coef fixed. */
  ppo_target: number | null;
  ppo_horizon: number;
  ppo_gamma: number;
  ppo_lambda: number;
  ppo_cliprange: number;
  ppo_cliprange_value: number;
  ppo_vf_coef: number;
  /** Scale and normalise scores by their running statistics (TRL's use_score_scaling + use_score_norm). */
  ppo_score_norm: boolean;
  /** Whiten the per-token rewards of each rollout batch before GAE. */
  ppo_whiten_rewards: boolean;
  /** PPO rollouts: generation settings (LLaMA-Factory's names). */
  max_new_tokens: number;
  do_sample: boolean;
  temperature: number;
  top_p: number;
  top_k: number;
  repetition_penalty: number;
}

export const PREF_LOSSES = ['sigmoid', 'ipo', 'orpo', 'simpo'] as const;
export type PrefLoss = (typeof PREF_LOSSES)[number];

export const TRAIN_DEFAULTS: Omit<TrainConfig, 'model_name_or_path' | 'dataset' | 'output_dir'> = {
  adapter_name_or_path: null,
  stage: 'sft',
  finetuning_type: 'lora',
  lora_rank: 8,
  lora_alpha: null,
  lora_dropout: 0,
  lora_target: 'q_proj,v_proj',
  use_rslora: false,
  lora_init: 'kaiming',
  base_dtype: 'fp32',
  dataset_dir: 'data',
  eval_dataset: null,
  template: null,
  cutoff_len: 1024,
  max_samples: null,
  packing: false,
  train_on_prompt: false,
  mask_history: false,
  layout: 'task',
  skip_invalid: false,
  val_size: 0,
  per_device_train_batch_size: 8,
  per_device_eval_batch_size: 8,
  gradient_accumulation_steps: 1,
  learning_rate: 5e-5,
  num_train_epochs: 3,
  max_steps: -1,
  lr_scheduler_type: 'linear',
  warmup_ratio: 0,
  warmup_steps: 0,
  max_grad_norm: 1,
  weight_decay: 0,
  adam_beta1: 0.9,
  adam_beta2: 0.999,
  adam_epsilon: 1e-8,
  seed: 42,
  overwrite_output_dir: false,
  logging_steps: 10,
  save_steps: 500,
  eval_steps: null,
  resume_from_checkpoint: null,
  gradient_checkpointing: false,
  disable_gradient_checkpointing: false,
  pref_beta: 0.1,
  pref_loss: 'sigmoid',
  pref_ftx: 0,
  simpo_gamma: 0.5,
  reward_model: null,
  reward_model_type: null,
  reward_function: null,
  ppo_epochs: 4,
  ppo_buffer_size: 1,
  ppo_kl_coef: 0.2,
  ppo_target: 6,
  ppo_horizon: 10000,
  ppo_gamma: 1,
  ppo_lambda: 0.95,
  ppo_cliprange: 0.2,
  ppo_cliprange_value: 0.2,
  ppo_vf_coef: 0.1,
  ppo_score_norm: false,
  ppo_whiten_rewards: false,
  max_new_tokens: 128,
  do_sample: true,
  temperature: 1,
  top_p: 1,
  top_k: 0,
  repetition_penalty: 1,
};

const REQUIRED = ['model_name_or_path', 'dataset', 'output_dir'] as const;
const KNOWN = new Set<string>([...REQUIRED, ...Object.keys(TRAIN_DEFAULTS)]);

/** LLaMA-Factory keys that mean nothing on a CPU run here: accepted with a one-line note. */
export const IGNORED_KEYS: Record<string, string> = {
  do_train: 'training is what `tunekit train` does',
  do_eval: 'evaluation runs when val_size > 0',
  bf16: 'tunekit computes in float32 (base_dtype: bf16 stores the frozen base weights in bf16)',
  fp16: 'tunekit computes in float32',
  pure_bf16: 'tunekit computes in float32 (base_dtype: bf16 stores the frozen base weights in bf16)',
  ddp_timeout: 'there is one process',
  deepspeed: 'there is one process',
  plot_loss: 'the loss curve is always plotted',
  overwrite_cache: 'there is no dataset cache',
  preprocessing_num_workers: 'tokenization runs in-process',
  dataloader_num_workers: 'batches are built in-process',
  report_to: 'logs go to trainer_log.jsonl',
  logging_dir: 'logs go to output_dir',
  trust_remote_code: 'no remote code is ever run',
  flash_attn: 'attention is computed by tunekit',
  eval_strategy: 'evaluation runs every eval_steps when val_size > 0',
  evaluation_strategy: 'evaluation runs every eval_steps when val_size > 0',
  save_strategy: 'checkpoints are saved every save_steps',
  save_only_model: 'checkpoints always keep the optimizer state for resuming',
  save_total_limit: 'all checkpoints are kept',
  optim: 'the optimizer is AdamW',
  upcast_layernorm: 'tunekit computes in float32',
  quantization_bit: 'quantized training is not supported; the base runs in float32 (base_dtype: bf16 halves it)',
};

/** Whether a run checkpoints activations: only when asked for, and not disabled. */
export function gradientCheckpointingOn(c: Pick<TrainConfig, 'gradient_checkpointing' | 'disable_gradient_checkpointing'>): boolean {
  return c.gradient_checkpointing && !c.disable_gradient_checkpointing;
}

export interface ParsedConfig {
  config: TrainConfig;
  notes: string[];
  /** Folder of the YAML file, for messages. */
  source: string;
}

/** Reads a YAML config, applies `--key value` overrides, fills defaults and checks every value. */
export function loadTrainConfig(path: string | null, overrides: Record<string, unknown> = {}): ParsedConfig {
  let raw: Record<string, unknown> = {};
  const source = path ?? 'command line';
  if (path) {
    if (!fs.existsSync(path)) throw new UserError(`${path}: config file not found`);
    let parsed: unknown;
    try {
      parsed = YAML.parse(fs.readFileSync(path, 'utf8'));
    } catch (e) {
      throw new FileFormatError(path, `not valid YAML (${(e as Error).message.split('\n')[0]})`);
    }
    if (parsed !== null && (typeof parsed !== 'object' || Array.isArray(parsed))) {
      throw new FileFormatError(path, 'expected a mapping of keys to values');
    }
    raw = (parsed ?? {}) as Record<string, unknown>;
  }
  raw = { ...raw, ...overrides };
  return { ...validate(raw, source), source };
}

/** Turns `--key value` pairs into overrides, values read as YAML scalars (numbers, booleans). */
export function parseOverrides(argv: string[]): { file: string | null; overrides: Record<string, unknown> } {
  let file: string | null = null;
  const overrides: Record<string, unknown> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) {
      if (file) throw new UserError(`train: unexpected argument "${arg}"; give one CONFIG.yaml and --key value pairs`);
      file = arg;
      continue;
    }
    const eq = arg.indexOf('=');
    const key = (eq > 0 ? arg.slice(2, eq) : arg.slice(2)).replace(/-/g, '_');
    let value: string;
    if (eq > 0) value = arg.slice(eq + 1);
    else {
      if (i + 1 >= argv.length || argv[i + 1].startsWith('--')) value = 'true';
      else value = argv[++i];
    }
    overrides[key] = yamlScalar(value);
  }
  return { file, overrides };
}

/**
 * A command-line value read as YAML (numbers, booleans, `null`, `[a, b]` lists); anything YAML
 * cannot read, or reads as a mapping (`out: 1`), stays the string the user typed.
 */
function yamlScalar(text: string): unknown {
  let value: unknown;
  try {
    value = YAML.parse(text);
  } catch {
    return text;
  }
  if (value === null) return /^(null|Null|NULL|~)$/.test(text.trim()) ? null : text;
  if (typeof value === 'object' && !Array.isArray(value)) return text;
  return value;
}

function validate(raw: Record<string, unknown>, source: string): { config: TrainConfig; notes: string[] } {
  const notes: string[] = [];
  for (const key of Object.keys(raw)) {
    if (KNOWN.has(key)) continue;
    if (key in IGNORED_KEYS) {
      notes.push(`note: ${key} is accepted and ignored: ${IGNORED_KEYS[key]}`);
      continue;
    }
    const hint = closest(key, [...KNOWN]);
    throw new UserError(`${source}: unknown key "${key}"${hint ? `; did you mean "${hint}"?` : ''}`);
  }
  for (const key of REQUIRED) {
    if (raw[key] === undefined || raw[key] === null || raw[key] === '') throw new UserError(`${source}: "${key}" is required`);
  }
  const c = { ...TRAIN_DEFAULTS } as Record<string, unknown>;
  for (const [k, v] of Object.entries(raw)) if (KNOWN.has(k)) c[k] = v;
  const fail = (key: string, expected: string): never => {
    throw new UserError(`${source}: "${key}" must be ${expected}, got ${JSON.stringify(c[key])}`);
  };
  const oneOf = (key: string, allowed: readonly string[]) => {
    if (!allowed.includes(c[key] as string)) fail(key, `one of ${allowed.join(', ')}`);
  };
  const int = (key: string, min: number) => {
    if (!Number.isInteger(c[key]) || (c[key] as number) < min) fail(key, `an integer ≥ ${min}`);
  };
  const num = (key: string, min: number, max = Infinity) => {
    if (typeof c[key] === 'string' && /^[-+]?[\d.]+(e[-+]?\d+)?$/i.test(c[key] as string)) c[key] = Number(c[key]);
    if (typeof c[key] !== 'number' || !((c[key] as number) >= min && (c[key] as number) <= max)) fail(key, `a number in [${min}, ${max}]`);
  };
  const bool = (key: string) => {
    if (typeof c[key] !== 'boolean') fail(key, 'true or false');
  };
  const str = (key: string) => {
    if (typeof c[key] !== 'string') fail(key, 'a string');
  };
  str('model_name_or_path');
  str('output_dir');
  str('dataset_dir');
  if (c.stage === 'kto') throw new UserError(`${source}: stage "kto" is not available yet; stages: pt, sft, rm, dpo, ppo`);
  oneOf('stage', ['pt', 'sft', 'rm', 'dpo', 'ppo']);
  if (c.finetuning_type === 'freeze') throw new UserError(`${source}: finetuning_type "freeze" is not supported; use lora or full`);
  oneOf('finetuning_type', ['lora', 'full']);
  oneOf('lr_scheduler_type', SCHEDULER_TYPES);
  oneOf('layout', ['task', 'persona']);
  oneOf('lora_init', ['kaiming', 'gaussian']);
  c.base_dtype = parseBaseDtype(c.base_dtype) ?? fail('base_dtype', `one of ${Object.keys(BASE_DTYPE_SPELLINGS).join(', ')}`);
  if (c.base_dtype === 'bf16' && c.finetuning_type === 'full') {
    throw new UserError(`${source}: base_dtype bf16 stores the frozen base weights of LoRA training; with finetuning_type full every weight trains in float32, so use base_dtype fp32`);
  }
  int('lora_rank', 1);
  if (c.lora_alpha !== null) num('lora_alpha', 0);
  num('lora_dropout', 0, 0.999);
  int('cutoff_len', 2);
  if (c.max_samples !== null) int('max_samples', 1);
  num('val_size', 0, 0.999999);
  int('per_device_train_batch_size', 1);
  int('per_device_eval_batch_size', 1);
  int('gradient_accumulation_steps', 1);
  num('learning_rate', 0);
  num('num_train_epochs', 0);
  if (c.max_steps !== -1) int('max_steps', 1);
  num('warmup_ratio', 0, 1);
  int('warmup_steps', 0);
  num('max_grad_norm', 0);
  num('weight_decay', 0);
  num('adam_beta1', 0, 0.999999);
  num('adam_beta2', 0, 0.999999);
  num('adam_epsilon', 0);
  int('seed', 0);
  int('logging_steps', 1);
  int('save_steps', 1);
  if (c.eval_steps !== null) int('eval_steps', 1);
  for (const key of ['use_rslora', 'packing', 'train_on_prompt', 'mask_history', 'skip_invalid', 'overwrite_output_dir', 'gradient_checkpointing', 'disable_gradient_checkpointing']) bool(key);
  if (c.template !== null) str('template');
  if (c.adapter_name_or_path !== null) str('adapter_name_or_path');
  validatePreference(c, source, { fail, oneOf, int, num, bool, str });
  return { config: c as unknown as TrainConfig, notes };
}

interface Checks {
  fail: (key: string, expected: string) => never;
  oneOf: (key: string, allowed: readonly string[]) => void;
  int: (key: string, min: number) => void;
  num: (key: string, min: number, max?: number) => void;
  bool: (key: string) => void;
  str: (key: string) => void;
}

/** The keys of the rm, dpo and ppo stages. */
function validatePreference(c: Record<string, unknown>, source: string, k: Checks): void {
  if (c.pref_loss === 'hinge' || c.pref_loss === 'kto_pair') {
    throw new UserError(`${source}: pref_loss "${String(c.pref_loss)}" is not supported; use one of ${PREF_LOSSES.join(', ')}`);
  }
  k.oneOf('pref_loss', PREF_LOSSES);
  k.num('pref_beta', 0);
  if ((c.pref_beta as number) === 0) k.fail('pref_beta', 'a number above 0');
  k.num('pref_ftx', 0);
  k.num('simpo_gamma', 0);
  if (c.reward_model !== null) k.str('reward_model');
  if (c.reward_model_type !== null) k.oneOf('reward_model_type', ['lora', 'full']);
  if (c.reward_function !== null) c.reward_function = parseRewardFunction(c.reward_function, `${source}: reward_function`);
  k.int('ppo_epochs', 1);
  k.int('ppo_buffer_size', 1);
  k.num('ppo_kl_coef', 0);
  if (c.ppo_target !== null) k.num('ppo_target', 0);
  k.num('ppo_horizon', 1);
  k.num('ppo_gamma', 0, 1);
  k.num('ppo_lambda', 0, 1);
  k.num('ppo_cliprange', 0);
  k.num('ppo_cliprange_value', 0);
  k.num('ppo_vf_coef', 0);
  k.bool('ppo_score_norm');
  k.bool('ppo_whiten_rewards');
  k.int('max_new_tokens', 1);
  k.bool('do_sample');
  k.num('temperature', 0);
  k.num('top_p', 0, 1);
  k.int('top_k', 0);
  k.num('repetition_penalty', 0);
  if (c.stage === 'ppo') {
    if ((c.reward_model === null) === (c.reward_function === null)) {
      throw new UserError(`${source}: stage ppo needs a reward: set either reward_model (a folder trained with stage rm) or reward_function (rules), not ${c.reward_model === null ? 'neither' : 'both'}`);
    }
  }
}
