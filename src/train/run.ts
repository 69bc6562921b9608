import fs from 'node:fs';
import { shortenBlasSpinForTraining } from '../backend/blas-spin.js';
import { join } from 'node:path';
import { epochOrder, makeBatches, padIdOf } from '../data/index.js';
import type { EncodedExample } from '../data/index.js';
import { UserError } from '../errors.js';
import { resolveModel } from '../io/hub.js';
import { loadModel } from '../io/model-folder.js';
import { loadAdapter } from '../io/peft-adapter.js';
import { trainableSummary } from '../nn/apply-lora.js';
import { baseWeightsNote } from '../nn/base-dtype.js';
import type { AppliedLora } from '../nn/apply-lora.js';
import { resolveTemplate } from '../text/chat-template.js';
import { Tokenizer } from '../text/tokenizer.js';
import { latestCheckpoint } from './checkpoint.js';
import type { TrainConfig } from './config.js';
import { causalLmLoss } from './loss.js';
import type { LabelledBatch } from './loss.js';
import { prepareData } from './prepare-data.js';
import { runAlignmentStage } from './stages/run-stage.js';
import { loadFullWeights, newLoraAdapter, resultLine, saveTrainedWeights } from './trained-model.js';
import { train } from './trainer.js';
import type { TrainResult } from './trainer.js';

export interface RunOptions {
  log?: (line: string) => void;
}

/**
 * One training run from a config: data, model, LoRA or full fine-tuning, the loop, and the
 * result in output_dir (adapter or model, tokenizer files, logs, loss curve).
 */
export async function runTraining(config: TrainConfig, opts: RunOptions = {}): Promise<TrainResult> {
  shortenBlasSpinForTraining();
  const log = opts.log ?? ((line: string) => console.error(line));
  // A hub id (org/name) becomes its folder in the Hugging Face cache, downloaded if missing.
  const c: TrainConfig = { ...config, model_name_or_path: await resolveModel(config.model_name_or_path) };
  const modelDir = c.model_name_or_path;
  const resumeDir = resumeFolder(c);
  if (!resumeDir && fs.existsSync(join(c.output_dir, 'trainer_log.jsonl')) && !c.overwrite_output_dir) {
    throw new UserError(`output_dir ${c.output_dir} already holds a training run; set overwrite_output_dir: true or resume_from_checkpoint: true`);
  }
  if (c.stage === 'rm' || c.stage === 'dpo' || c.stage === 'ppo') return await runAlignmentStage(c, { log, resumeDir });
  const tokenizer = Tokenizer.fromFolder(modelDir);
  const template = resolveTemplate(c.template, tokenizer);
  const data = prepareData(c, tokenizer, template);
  for (const note of data.notes) log(`note: ${note}`);
  log(`data: ${data.train.length} training example(s)${data.eval.length ? `, ${data.eval.length} for evaluation` : ''}`);

  const model = loadModel(modelDir, { baseDtype: c.base_dtype });
  let applied: AppliedLora | null = null;
  if (c.finetuning_type === 'lora') {
    const from = resumeDir ?? c.adapter_name_or_path;
    applied = from ? loadAdapter(model, from) : newLoraAdapter(model, c);
  } else if (resumeDir) {
    loadFullWeights(model, resumeDir);
  }
  log(trainableSummary(model));
  if (c.base_dtype === 'bf16') log(baseWeightsNote(model));

  const padId = padIdOf(tokenizer);
  const batchOpts = { batchSize: c.per_device_train_batch_size, packing: c.packing, cutoffLen: c.cutoff_len, padId };
  const batchesForEpoch = (epoch: number): LabelledBatch[] =>
    makeBatches(epochOrder(data.train.length, c.seed, epoch).map((i) => data.train[i]), batchOpts);
  const evalBatches = makeBatches(data.eval, { ...batchOpts, batchSize: c.per_device_eval_batch_size });
  const saveWeights = (dir: string): void => saveTrainedWeights(model, applied, modelDir, dir);
  const result = await train({ model, config: c, batchesForEpoch, evalBatches, loss: causalLmLoss, saveWeights, resumeFrom: resumeDir, log });
  log(resultLine(c, result));
  return result;
}

function resumeFolder(c: TrainConfig): string | null {
  const r = c.resume_from_checkpoint;
  if (r === null || r === false) return null;
  if (r === true) {
    const found = latestCheckpoint(c.output_dir);
    if (!found) throw new UserError(`resume_from_checkpoint: no checkpoint-N folder in ${c.output_dir}`);
    return found;
  }
  if (!fs.existsSync(join(r, 'trainer_state.json'))) throw new UserError(`resume_from_checkpoint: ${r} is not a checkpoint (no trainer_state.json)`);
  return r;
}
