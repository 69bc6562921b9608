/**
 * What the supervised and the alignment stages do alike with the model they train: a new LoRA
 * adapter from the config's settings, full weights restored from a checkpoint, the trained
 * weights saved (adapter or model, with the tokenizer files), and the run's closing line.
 */
import { UserError } from '../errors.js';
import { copyTokenizerFiles, loadModel, saveModel } from '../io/model-folder.js';
import { saveAdapter } from '../io/peft-adapter.js';
import type { CausalLM } from '../models/decoder.js';
import { applyLora, parseLoraTargets } from '../nn/apply-lora.js';
import type { AppliedLora } from '../nn/apply-lora.js';
import type { TrainConfig } from './config.js';
import type { TrainResult } from './trainer.js';

/** A fresh LoRA adapter on `model` with the config's rank, alpha, dropout, targets and init. */
export function newLoraAdapter(model: CausalLM, c: TrainConfig): AppliedLora {
  return applyLora(model, {
    r: c.lora_rank, alpha: c.lora_alpha ?? 2 * c.lora_rank, dropout: c.lora_dropout, targets: parseLoraTargets(c.lora_target),
    init: c.lora_init, useRslora: c.use_rslora, seed: c.seed,
  });
}

/** Full fine-tuning's resume: every parameter's values from the model saved in checkpoint `dir`. */
export function loadFullWeights(model: CausalLM, dir: string): void {
  const saved = loadModel(dir);
  const byName = new Map(saved.namedParameters());
  for (const [name, t] of model.namedParameters()) {
    const s = byName.get(name);
    if (!s) throw new UserError(`${dir}: checkpoint lacks ${name}`);
    t.data = s.data;
  }
}

/** Writes the trained weights to `dir` (the adapter, or the whole model) with `modelDir`'s tokenizer files. */
export function saveTrainedWeights(model: CausalLM, applied: AppliedLora | null, modelDir: string, dir: string): void {
  if (applied) saveAdapter(model, applied, dir, { baseModelNameOrPath: modelDir });
  else saveModel(model, dir, {});
  copyTokenizerFiles(modelDir, dir);
}

/** The line a run ends with: where it stopped, or its steps, time, losses and output folder. */
export function resultLine(c: TrainConfig, result: TrainResult): string {
  return result.stoppedEarly
    ? `stopped at step ${result.globalStep}`
    : `done: ${result.globalStep} steps in ${result.seconds.toFixed(1)} s, train loss ${result.trainLoss.toFixed(4)}${result.evalLoss !== null ? `, eval loss ${result.evalLoss.toFixed(4)}` : ''}; saved to ${c.output_dir}`;
}
