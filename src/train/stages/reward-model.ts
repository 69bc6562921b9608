/**
 * A trained reward model as a scorer: a decoder (the base plus a LoRA adapter, or a fully trained
 * model) and its value head, scoring whole conversations at their last token, as stage rm trains
 * it. With an adapter over the same base as the PPO policy, the base weights are shared with the
 * policy rather than loaded twice.
 */
import fs from 'node:fs';
import { join } from 'node:path';
import { encodeConversation, makeBatches, padIdOf } from '../../data/index.js';
import type { Turn } from '../../data/index.js';
import { UserError } from '../../errors.js';
import { loadModel } from '../../io/model-folder.js';
import { ADAPTER_CONFIG_FILE, loadAdapter } from '../../io/peft-adapter.js';
import { CausalLM } from '../../models/decoder.js';
import type { BaseDtype } from '../../nn/base-dtype.js';
import { noGrad } from '../../tensor/tensor.js';
import { resolveTemplate } from '../../text/chat-template.js';
import { Tokenizer } from '../../text/tokenizer.js';
import { lastTokenScores } from './sequence.js';
import { readBaseAdapter, stackFrozenAdapter } from './stacked-adapter.js';
import { VALUE_HEAD_FILE, ValueHead } from './value-head.js';

export interface RewardModel {
  model: CausalLM;
  head: ValueHead;
  tokenizer: Tokenizer;
  template: string;
  cutoffLen: number;
}

export interface ScoredConversation {
  system?: string;
  /** Ending with the assistant's answer, which is scored. */
  messages: Turn[];
}

export interface LoadRewardOptions {
  /** The base model folder, for a reward model that is an adapter (default: the adapter's base_model_name_or_path). */
  baseModel?: string | null;
  /** `lora`, `full`, or null: an adapter when the folder has adapter_config.json. */
  type?: 'lora' | 'full' | null;
  /** A built-in chat template name instead of the model's own. */
  template?: string | null;
  /** A model whose base weights the reward model may share (the PPO policy with LoRA). */
  shareWith?: CausalLM | null;
  /** How to store the reward model's frozen linear weights when it loads its own (not shared). */
  baseDtype?: BaseDtype;
  cutoffLen?: number;
}

/** Loads a reward model folder written by stage rm. */
export function loadRewardModel(dir: string, opts: LoadRewardOptions = {}): RewardModel {
  if (!fs.existsSync(dir)) throw new UserError(`reward model ${dir} does not exist`);
  if (!fs.existsSync(join(dir, VALUE_HEAD_FILE))) throw new UserError(`${dir} has no ${VALUE_HEAD_FILE}; train a reward model with stage: rm`);
  const isAdapter = fs.existsSync(join(dir, ADAPTER_CONFIG_FILE));
  const type = opts.type ?? (isAdapter ? 'lora' : 'full');
  if (type === 'lora' && !isAdapter) throw new UserError(`reward model ${dir} has no ${ADAPTER_CONFIG_FILE}, so it is not a LoRA adapter; use reward_model_type: full`);
  let model: CausalLM;
  let tokenizerDir = dir;
  if (type === 'lora') {
    const base = opts.baseModel ?? adapterBase(dir);
    model = opts.shareWith ? sharedBaseCopy(opts.shareWith) : loadModel(base, { baseDtype: opts.baseDtype });
    const under = readBaseAdapter(dir);
    if (under) stackFrozenAdapter(model, under);
    loadAdapter(model, dir);
    if (!fs.existsSync(join(dir, 'tokenizer.json'))) tokenizerDir = base;
  } else {
    model = loadModel(dir, { baseDtype: opts.baseDtype });
  }
  model.eval();
  const tokenizer = Tokenizer.fromFolder(tokenizerDir);
  return {
    model,
    head: ValueHead.load(dir, model.config.hiddenSize),
    tokenizer,
    template: resolveTemplate(opts.template, tokenizer),
    cutoffLen: opts.cutoffLen ?? 4096,
  };
}

/** Scores of conversations (each at its last token), in batches. */
export function scoreConversations(rm: RewardModel, convs: readonly ScoredConversation[], batchSize = 8): number[] {
  const encoded = convs.map((c) => {
    const conv = c.system !== undefined ? { system: c.system, messages: c.messages, source: { file: '', row: 0 } } : { messages: c.messages, source: { file: '', row: 0 } };
    const e = encodeConversation(conv, { tokenizer: rm.tokenizer, template: rm.template, cutoffLen: rm.cutoffLen, maskHistory: true });
    return { inputIds: e.inputIds, labels: e.labels };
  });
  const out: number[] = [];
  noGrad(() => {
    for (const batch of makeBatches(encoded, { batchSize, cutoffLen: Number.MAX_SAFE_INTEGER, padId: padIdOf(rm.tokenizer) })) {
      out.push(...lastTokenScores(rm.model, rm.head, batch).data);
    }
  });
  return out;
}

/**
 * A second model object over the same base weight buffers as `model` (its own LoRA layers, if
 * any, are not copied): nothing is duplicated but the module tree. The shared weights must stay
 * frozen, as they are under LoRA.
 */
export function sharedBaseCopy(model: CausalLM): CausalLM {
  const copy = new CausalLM(model.config);
  const source = new Map(model.namedParameters());
  for (const [name] of copy.namedParameters()) {
    const t = source.get(name);
    if (!t) throw new Error(`sharedBaseCopy: the model has no ${name}`);
    if (t.requiresGrad) throw new Error(`sharedBaseCopy: ${name} is being trained; only frozen weights can be shared`);
    copy.setParameter(name, t);
  }
  return copy;
}

function adapterBase(dir: string): string {
  const config = JSON.parse(fs.readFileSync(join(dir, ADAPTER_CONFIG_FILE), 'utf8')) as { base_model_name_or_path?: unknown };
  const base = config.base_model_name_or_path;
  if (typeof base !== 'string' || base === '') {
    throw new UserError(`${dir}/${ADAPTER_CONFIG_FILE} names no base_model_name_or_path; give the base model folder`);
  }
  return base;
}
