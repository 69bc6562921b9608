import fs from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import type { CausalLM } from '../models/decoder.js';
import { loraLayers } from '../nn/apply-lora.js';
import { Rng } from '../tensor/random.js';
import { noGrad } from '../tensor/tensor.js';
import type { Tensor } from '../tensor/tensor.js';
import { AdamW, clipGradNorm } from './adamw.js';
import { latestCheckpoint, readOptimizerState, readTrainerState, writeCheckpoint } from './checkpoint.js';
import type { TrainerState } from './checkpoint.js';
import type { TrainConfig } from './config.js';
import type { LabelledBatch } from './loss.js';
import { countTargets } from './loss.js';
import { plotLoss } from './plot.js';
import { formatDuration, progressLine } from './progress.js';
import { learningRateAt } from './schedule.js';

/** A stage's loss on one micro-batch, divided by `normalizer` (trained tokens of the group). */
export type LossFn = (model: CausalLM, batch: LabelledBatch, normalizer: number) => { loss: Tensor; tokens: number };

export interface TrainerInput {
  model: CausalLM;
  config: TrainConfig;
  /** The micro-batches of one epoch, in that epoch's deterministic order. */
  batchesForEpoch: (epoch: number) => LabelledBatch[];
  evalBatches: LabelledBatch[];
  loss: LossFn;
  /** Writes the trained weights (an adapter, or the whole model) into a folder. */
  saveWeights: (dir: string) => void;
  /** A checkpoint folder to continue from (its weights are already in the model). */
  resumeFrom: string | null;
  log?: (line: string) => void;
}

export interface TrainResult {
  globalStep: number;
  trainLoss: number;
  evalLoss: number | null;
  seconds: number;
  tokensPerSecond: number;
  stoppedEarly: boolean;
  history: Array<Record<string, number>>;
}

/**
 * The training loop: gradient accumulation, clipping, AdamW under a schedule, periodic logging,
 * evaluation and atomic checkpoints; resumable to the same numbers; Ctrl-C saves first.
 */
export function train(input: TrainerInput): TrainResult {
  const { model, config: c } = input;
  const log = input.log ?? ((line: string) => console.error(line));
  const params = model.trainableParameters();
  if (params.length === 0) throw new UserError('nothing to train: every parameter is frozen');
  const optimizer = new AdamW(params, { lr: c.learning_rate, beta1: c.adam_beta1, beta2: c.adam_beta2, eps: c.adam_epsilon, weightDecay: c.weight_decay });

  const microPerEpoch = input.batchesForEpoch(0).length;
  if (microPerEpoch === 0) throw new UserError('the training set is empty after preprocessing');
  const accum = c.gradient_accumulation_steps;
  const stepsPerEpoch = Math.max(1, Math.ceil(microPerEpoch / accum));
  const totalSteps = c.max_steps > 0 ? c.max_steps : Math.max(1, Math.ceil(c.num_train_epochs * stepsPerEpoch));
  const warmup = c.warmup_steps > 0 ? c.warmup_steps : Math.ceil(c.warmup_ratio * totalSteps);

  let state: TrainerState = { global_step: 0, micro_step: 0, epoch: 0, max_steps: totalSteps, log_history: [] };
  const resumeFrom = input.resumeFrom;
  if (resumeFrom) {
    state = readTrainerState(resumeFrom);
    optimizer.state = readOptimizerState(resumeFrom);
    log(`resuming from ${resumeFrom} at step ${state.global_step}`);
  }
  fs.mkdirSync(c.output_dir, { recursive: true });
  const logPath = join(c.output_dir, 'trainer_log.jsonl');
  if (!resumeFrom) fs.writeFileSync(logPath, '');
  else rewriteLog(logPath, state.global_step);

  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const epochCache = new Map<number, LabelledBatch[]>();
  const microBatch = (micro: number): LabelledBatch => {
    const epoch = Math.floor(micro / microPerEpoch);
    let batches = epochCache.get(epoch);
    if (!batches) {
      epochCache.clear();
      batches = input.batchesForEpoch(epoch);
      epochCache.set(epoch, batches);
    }
    return batches[micro % microPerEpoch];
  };
  const checkpoint = () => {
    const dir = join(c.output_dir, `checkpoint-${state.global_step}`);
    writeCheckpoint(dir, input.saveWeights, optimizer.state, state);
    return dir;
  };

  const started = performance.now();
  let windowLoss = 0;
  let windowSteps = 0;
  let windowTokens = 0;
  let windowStart = performance.now();
  let totalLoss = 0;
  let totalLossSteps = 0;
  let totalTokens = 0;
  let lastEval: number | null = null;
  const lora = loraLayers(model);
  model.train();
  try {
    while (state.global_step < totalSteps) {
      if (interrupted) {
        const dir = checkpoint();
        log(`interrupted: saved ${dir}; continue with resume_from_checkpoint: ${dir}`);
        return finish(true);
      }
      const group: LabelledBatch[] = [];
      for (let i = 0; i < accum; i++) group.push(microBatch(state.micro_step + i));
      const normalizer = group.reduce((n, b) => n + countTargets(b), 0);
      let stepLoss = 0;
      let stepTokens = 0;
      group.forEach((batch, i) => {
        // Dropout masks depend only on the seed and the micro-step, so a resumed run repeats them.
        const rng = new Rng(c.seed * 1_000_003 + state.micro_step + i);
        for (const [, l] of lora) l.dropoutRng = rng;
        const { loss, tokens } = input.loss(model, batch, normalizer);
        stepLoss += loss.item();
        stepTokens += batch.batch * batch.length;
        if (tokens > 0) loss.backward();
      });
      if (!Number.isFinite(stepLoss)) {
        const last = latestCheckpoint(c.output_dir);
        throw new UserError(
          `the loss became ${stepLoss} at step ${state.global_step + 1}; training stopped${last ? `, last good checkpoint: ${last}` : ''}. Try a lower learning_rate.`,
        );
      }
      const gradNorm = clipGradNorm(params, c.max_grad_norm);
      const lr = learningRateAt(c.lr_scheduler_type, c.learning_rate, state.global_step, totalSteps, warmup);
      optimizer.step(lr);
      optimizer.zeroGrad();
      state.global_step++;
      state.micro_step += accum;
      state.epoch = state.micro_step / microPerEpoch;
      windowLoss += stepLoss;
      windowSteps++;
      windowTokens += stepTokens;
      totalLoss += stepLoss;
      totalLossSteps++;
      totalTokens += stepTokens;

      const elapsed = (performance.now() - started) / 1000;
      if (state.global_step % c.logging_steps === 0 || state.global_step === totalSteps) {
        const seconds = (performance.now() - windowStart) / 1000;
        const entry = {
          current_steps: state.global_step,
          total_steps: totalSteps,
          loss: round(windowLoss / windowSteps),
          lr,
          grad_norm: round(gradNorm),
          epoch: round(state.epoch),
          percentage: round((100 * state.global_step) / totalSteps, 2),
          tokens_per_second: round(windowTokens / Math.max(seconds, 1e-9), 1),
        };
        state.log_history.push(entry);
        appendLog(logPath, { ...entry, elapsed_time: formatDuration(elapsed), remaining_time: formatDuration((elapsed / state.global_step) * (totalSteps - state.global_step)) });
        log(progressLine({ step: state.global_step, totalSteps, loss: entry.loss, lr, epoch: state.epoch, tokensPerSecond: entry.tokens_per_second, elapsedSeconds: elapsed, gradNorm }));
        windowLoss = 0;
        windowSteps = 0;
        windowTokens = 0;
        windowStart = performance.now();
      }
      const evalEvery = c.eval_steps ?? c.logging_steps;
      if (input.evalBatches.length && (state.global_step % evalEvery === 0 || state.global_step === totalSteps)) {
        lastEval = evaluate(model, input.evalBatches, input.loss);
        model.train();
        state.log_history.push({ current_steps: state.global_step, eval_loss: round(lastEval) });
        appendLog(logPath, { current_steps: state.global_step, total_steps: totalSteps, eval_loss: round(lastEval) });
        log(`step ${state.global_step}/${totalSteps} | eval_loss ${lastEval.toFixed(4)}`);
      }
      if (state.global_step % c.save_steps === 0 && state.global_step < totalSteps) log(`saved ${checkpoint()}`);
    }
    return finish(false);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    model.eval();
  }

  function finish(stoppedEarly: boolean): TrainResult {
    const seconds = (performance.now() - started) / 1000;
    if (!stoppedEarly) input.saveWeights(c.output_dir);
    plotLoss(
      {
        train: state.log_history.filter((e) => e.loss !== undefined).map((e) => [e.current_steps, e.loss]),
        eval: state.log_history.filter((e) => e.eval_loss !== undefined).map((e) => [e.current_steps, e.eval_loss]),
      },
      join(c.output_dir, 'training_loss.png'),
    );
    const result: TrainResult = {
      globalStep: state.global_step,
      trainLoss: totalLossSteps ? totalLoss / totalLossSteps : NaN,
      evalLoss: lastEval,
      seconds,
      tokensPerSecond: totalTokens / Math.max(seconds, 1e-9),
      stoppedEarly,
      history: state.log_history,
    };
    fs.writeFileSync(
      join(c.output_dir, 'train_results.json'),
      `${JSON.stringify({ epoch: state.epoch, global_step: state.global_step, train_loss: result.trainLoss, eval_loss: lastEval, train_runtime: seconds, train_tokens_per_second: result.tokensPerSecond }, null, 2)}\n`,
    );
    return result;
  }
}

/** Mean loss per trained token over the evaluation batches. */
export function evaluate(model: CausalLM, batches: LabelledBatch[], loss: LossFn): number {
  model.eval();
  return noGrad(() => {
    let total = 0;
    let tokens = 0;
    for (const b of batches) {
      const r = loss(model, b, 1);
      total += r.loss.item();
      tokens += r.tokens;
    }
    return tokens ? total / tokens : NaN;
  });
}

function appendLog(path: string, entry: Record<string, unknown>): void {
  fs.appendFileSync(path, `${JSON.stringify(entry)}\n`);
}

/** Drops log lines past the step a resumed run restarts from, so the log reads as one run. */
function rewriteLog(path: string, step: number): void {
  if (!fs.existsSync(path)) return;
  const kept = fs
    .readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.trim() && (JSON.parse(l) as { current_steps: number }).current_steps <= step);
  fs.writeFileSync(path, kept.map((l) => `${l}\n`).join(''));
}

function round(x: number, digits = 4): number {
  const k = 10 ** digits;
  return Math.round(x * k) / k;
}
