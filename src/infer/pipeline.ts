import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { loadModel, readJsonFile } from '../io/model-folder.js';
import { loadAdapter } from '../io/peft-adapter.js';
import type { CausalLM } from '../models/decoder.js';
import { renderChat, resolveTemplate } from '../text/chat-template.js';
import type { ChatMessage } from '../text/chat-template.js';
import { readStopTokenIds } from '../text/stop-tokens.js';
import { Tokenizer } from '../text/tokenizer.js';
import type { SamplingOptions } from './sampling.js';

/** A model ready to talk: weights, tokenizer, chat template, stop tokens and its sampling defaults. */
export interface Pipeline {
  dir: string;
  model: CausalLM;
  tokenizer: Tokenizer;
  template: string;
  stopTokenIds: number[];
  /** Sampling settings from generation_config.json, where the model ships them. */
  defaults: Partial<SamplingOptions>;
}

export interface PipelineOptions {
  /** A built-in template name instead of the model's own. */
  template?: string | null;
  /** A PEFT LoRA adapter folder applied over the base weights. */
  adapter?: string | null;
}

export function loadPipeline(dir: string, opts: PipelineOptions = {}): Pipeline {
  if (!existsSync(join(dir, 'tokenizer.json'))) {
    throw new UserError(`${dir} has no tokenizer.json; a model folder needs its tokenizer files`);
  }
  const tokenizer = Tokenizer.fromFolder(dir);
  const model = loadModel(dir);
  if (opts.adapter) {
    loadAdapter(model, opts.adapter);
    warnIfStacked(opts.adapter);
  }
  model.eval();
  return {
    dir,
    model,
    tokenizer,
    template: resolveTemplate(opts.template, tokenizer),
    stopTokenIds: readStopTokenIds(dir, tokenizer),
    defaults: readSamplingDefaults(dir),
  };
}

/** The chat prompt as token ids, ending with the assistant header so the model answers next. */
export function encodeChatPrompt(p: Pipeline, messages: readonly ChatMessage[]): number[] {
  const text = renderChat(messages, {
    template: p.template,
    addGenerationPrompt: true,
    bosToken: p.tokenizer.bosToken,
    eosToken: p.tokenizer.eosToken,
  });
  return p.tokenizer.encode(text, { addSpecialTokens: false });
}

function readSamplingDefaults(dir: string): Partial<SamplingOptions> {
  const path = join(dir, 'generation_config.json');
  if (!existsSync(path)) return {};
  const g = readJsonFile(path);
  const out: Partial<SamplingOptions> = {};
  if (g.do_sample === false) out.temperature = 0;
  else if (typeof g.temperature === 'number') out.temperature = g.temperature;
  if (typeof g.top_k === 'number') out.topK = g.top_k;
  if (typeof g.top_p === 'number') out.topP = g.top_p;
  if (typeof g.repetition_penalty === 'number') out.repetitionPenalty = g.repetition_penalty;
  return out;
}

/** An adapter trained over another (DPO/PPO after SFT) is only right on a base with that one merged. */
function warnIfStacked(adapter: string): void {
  const path = join(adapter, 'base_adapter.json');
  if (!existsSync(path)) return;
  const base = readJsonFile(path).base_adapter;
  console.error(
    `note: ${adapter} was trained over the adapter ${String(base)}; its answers are right only on a base model with that adapter merged (tunekit export --adapter ${String(base)})`,
  );
}
