import fs from 'node:fs';
import { join, resolve } from 'node:path';
import { exportMerged } from '../io/export.js';
import { generate } from '../infer/generate.js';
import { encodeChatPrompt, loadPipeline } from '../infer/pipeline.js';
import type { Pipeline } from '../infer/pipeline.js';
import { packageRoot } from '../paths.js';
import { TRAIN_DEFAULTS } from '../train/config.js';
import type { TrainConfig } from '../train/config.js';
import { runTraining } from '../train/run.js';
import { ensureBuiltinModel } from './base-model.js';

/** The tutorial's persona (method 1): the instruction becomes the system prompt. */
export const PERSONA = '你是一个名为“小笼大师”的智能客服，负责热情、专业地回答顾客关于我们小笼包餐厅的各种问题。';
export const DEMO_QUESTIONS = ['你们店的招-牌-菜是-什么呀？', '营业时间？', '可以外卖吗？'];

export interface DemoOptions {
  out: string;
  epochs?: number;
  print?: (line: string) => void;
  log?: (line: string) => void;
}

export interface DemoResult {
  before: string[];
  after: string[];
  merged: string[];
  lossCurve: string;
  firstLoss: number;
  lastLoss: number;
}

/**
 * The whole pipeline on the built-in model, offline: answers before, LoRA fine-tuning on the
 * persona-layout restaurant data, answers after, merge, and the loss curve.
 */
export async function runDemo(opts: DemoOptions): Promise<DemoResult> {
  const print = opts.print ?? ((l: string) => console.log(l));
  const log = opts.log ?? ((l: string) => console.error(l));
  const out = resolve(opts.out);
  fs.mkdirSync(out, { recursive: true });
  const base = await ensureBuiltinModel(log);

  print(`\n== 1. The built-in base model (${base}) answers, before fine-tuning ==`);
  const before = answerAll(loadPipeline(base), print);

  print('\n== 2. LoRA fine-tuning on examples/data/restaurant_persona.json (persona layout) ==');
  const adapter = join(out, 'adapter');
  const config: TrainConfig = {
    ...TRAIN_DEFAULTS,
    model_name_or_path: base,
    stage: 'sft',
    finetuning_type: 'lora',
    lora_rank: 16,
    lora_alpha: 32,
    lora_target: 'all',
    dataset: 'restaurant_persona',
    dataset_dir: join(packageRoot(), 'examples', 'data'),
    cutoff_len: 256,
    per_device_train_batch_size: 4,
    learning_rate: 5e-3,
    num_train_epochs: opts.epochs ?? 40,
    lr_scheduler_type: 'cosine',
    warmup_ratio: 0.05,
    logging_steps: 10,
    save_steps: 1_000_000,
    seed: 42,
    output_dir: adapter,
    overwrite_output_dir: true,
  };
  const result = await runTraining(config, { log });
  const losses = result.history.filter((e) => e.loss !== undefined).map((e) => e.loss);

  print('\n== 3. The same questions, with the adapter ==');
  const after = answerAll(loadPipeline(base, { adapter }), print);

  print('\n== 4. Merge: W\' = W0 + (alpha/r)·B·A, saved as a plain model folder ==');
  const mergedDir = join(out, 'merged');
  exportMerged({ model: base, adapter, out: mergedDir });
  print(`wrote ${mergedDir}`);
  const merged = answerAll(loadPipeline(mergedDir), print, 1);

  const lossCurve = join(adapter, 'training_loss.png');
  print('\n== 5. Loss curve ==');
  print(`${sparkline(losses)}  ${losses[0]?.toFixed(3)} → ${losses[losses.length - 1]?.toFixed(3)}`);
  print(`picture: ${lossCurve}`);
  print(`\nNext: npx tunekit chat --model ${base} --adapter ${adapter} --system "${PERSONA}"`);
  return { before, after, merged, lossCurve, firstLoss: losses[0], lastLoss: losses[losses.length - 1] };
}

function answerAll(p: Pipeline, print: (l: string) => void, count = DEMO_QUESTIONS.length): string[] {
  return DEMO_QUESTIONS.slice(0, count).map((q) => {
    const ids = encodeChatPrompt(p, [
      { role: 'system', content: PERSONA },
      { role: 'user', content: q },
    ]);
    const r = generate(p.model, p.tokenizer, ids, {
      maxNewTokens: 80, temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1.1, seed: 0, stopTokenIds: p.stopTokenIds, stopStrings: [],
    });
    print(`顾客: ${q}\n模型: ${r.text.trim()}`);
    return r.text;
  });
}

/** The loss values as a row of block characters, for a terminal. */
export function sparkline(values: number[]): string {
  if (values.length === 0) return '';
  const blocks = '▁▂▃▄▅▆▇█';
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  return values.map((v) => blocks[hi > lo ? Math.round(((v - lo) / (hi - lo)) * (blocks.length - 1)) : 0]).join('');
}
