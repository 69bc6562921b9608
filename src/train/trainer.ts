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
import { gradientCheckpointingOn } from './config.js';
import type { TrainConfig } from './config.js';
import type { LabelledBatch } from './loss.js';
import { countTargets } from './loss.js';
import { plotLoss } from './plot.js';
import { formatDuration, progressLine } from './progress.js';
import { learningRateAt } from './schedule.js';

/** What the trainer needs of any micro-batch: `batch` rows of `length` tokens. */
export interface TrainBatch {
  batch: number;
  length: number;
}

/**
 * A stage's loss on one micro-batch, divided by `normalizer` (the units of the whole accumulation
 * group: trained tokens for pt/sft). `tokens` is this micro-batch's share of those units.
 * `metrics` are this micro-batch's means of extra quantities (DPO's `rewards/chosen`, PPO's
 * `ppo/loss/value`…); the trainer averages them, weighted by `tokens`, and logs them.
 */
export interface LossResult {
  loss: Tensor;
  tokens: number;
  metrics?: Record<string, number>;
}

export type LossFn<B = LabelledBatch> = (model: CausalLM, batch: B, normalizer: number) => LossResult;

/** Micro-batches made while training (PPO's rollouts): fetched one by one, in order. */
export interface BatchSource<B> {
  /** Micro-batches in one epoch. */
  perEpoch: number;
  /**
   * The micro-batch with this index, counting from the start of training. A source that takes
   * long to make one (PPO's rollouts) may return a promise, yield to the event loop while it
   * works, and give up by throwing `signal.reason` once `signal` is aborted (Ctrl-C).
   */
  at(micro: number, signal: AbortSignal): B | Promise<B>;
}

/** Lets the event loop run (signal handlers, I/O) before continuing a long synchronous computation. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise<void>((r) => setImmediate(r));
}

export interface TrainerInput<B extends TrainBatch = LabelledBatch> {
  model: CausalLM;
  config: TrainConfig;
  /** The micro-batches of one epoch, in that epoch's deterministic order (or give `batchSource`). */
  batchesForEpoch?: (epoch: number) => B[];
  /** Instead of `batchesForEpoch`: micro-batches produced on demand. */
  batchSource?: BatchSource<B>;
  evalBatches: B[];
  loss: LossFn<B>;
  /** Units a micro-batch adds to the normalizer; default: its trained tokens (a LabelledBatch). */
  units?: (batch: B) => number;
  /** Parameters to optimise, by name; default: the model's trainable parameters. */
  parameters?: Array<[string, Tensor]>;
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
 * evaluation and atomic checkpoints; resumable to the same numbers; Ctrl-C (SIGINT) or SIGTERM
 * saves a checkpoint and returns with `stoppedEarly`. The loop yields to the event loop once per
 * optimizer step so that those signals are delivered while it runs.
 */
export async function train<B extends TrainBatch = LabelledBatch>(input: TrainerInput<B>): Promise<TrainResult> {
  const { model, config: c } = input;
  const log = input.log ?? ((line: string) => console.error(line));
  const params = input.parameters ?? model.trainableParameters();
  const units = input.units ?? ((b: B) => countTargets(b as unknown as LabelledBatch));
  const source = batchSourceOf(input);
  if (params.length === 0) throw new UserError('nothing to train: every parameter is frozen');
  const optimizer = new AdamW(params, { lr: c.learning_rate, beta1: c.adam_beta1, beta2: c.adam_beta2, eps: c.adam_epsilon, weightDecay: c.weight_decay });

  const microPerEpoch = source.perEpoch;
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
  // Aborted on a signal, so that a source making a long batch (PPO's rollouts) can stop early.
  const abort = new AbortController();
  const onSignal = () => {
    interrupted = true;
    abort.abort();
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
  let windowMetrics = new MetricMeans();
  const stopInterrupted = (): TrainResult => {
    const dir = checkpoint();
    log(`interrupted: saved ${dir}; continue with resume_from_checkpoint: ${dir}`);
    return finish(true);
  };
  const checkpointingBefore = model.gradientCheckpointing;
  // Installed inside the try, so that the finally removes them on every way out.
  try {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    // Every stage's forward with grad goes through model.hidden, which honours this flag.
    model.gradientCheckpointing = gradientCheckpointingOn(c);
    if (model.gradientCheckpointing) log('gradient checkpointing: on (each layer keeps its input and is recomputed in backward)');
    const lora = loraLayers(model);
    model.train();
    while (state.global_step < totalSteps) {
      // Signals are delivered only while the event loop runs: let it, once per optimizer step.
      await yieldToEventLoop();
      if (interrupted) return stopInterrupted();
      const group: B[] = [];
      try {
        for (let i = 0; i < accum; i++) group.push(await source.at(state.micro_step + i, abort.signal));
      } catch (e) {
        // Interrupted while the batches were being made: nothing of this step has run yet.
        if (interrupted && abort.signal.aborted && e === abort.signal.reason) return stopInterrupted();
        throw e;
      }
      const normalizer = group.reduce((n, b) => n + units(b), 0);
      let stepLoss = 0;
      let stepTokens = 0;
      group.forEach((batch, i) => {
        // Dropout masks depend only on the seed and the micro-step, so a resumed run repeats them.
        const rng = new Rng(c.seed * 1_000_003 + state.micro_step + i);
        for (const [, l] of lora) l.dropoutRng = rng;
        const { loss, tokens, metrics } = input.loss(model, batch, normalizer);
        if (metrics) windowMetrics.add(metrics, tokens);
        stepLoss += loss.item();
        stepTokens += batch.batch * batch.length;
        if (tokens > 0) loss.backward();
      });
      const gradNorm = clipGradNorm(params, c.max_grad_norm);
      if (!Number.isFinite(stepLoss) || !Number.isFinite(gradNorm)) {
        const last = latestCheckpoint(c.output_dir);
        const what = Number.isFinite(stepLoss) ? `the gradient norm became ${gradNorm}` : `the loss became ${stepLoss}`;
        throw new UserError(
          `${what} at step ${state.global_step + 1}; training stopped before updating the weights${last ? `; last checkpoint: ${last}` : ''}. Try a lower learning_rate.`,
        );
      }
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
          ...windowMetrics.means(),
        };
        state.log_history.push(entry);
        appendLog(logPath, { ...entry, elapsed_time: formatDuration(elapsed), remaining_time: formatDuration((elapsed / state.global_step) * (totalSteps - state.global_step)) });
        log(progressLine({ step: state.global_step, totalSteps, loss: entry.loss, lr, epoch: state.epoch, tokensPerSecond: entry.tokens_per_second, elapsedSeconds: elapsed, gradNorm }) + windowMetrics.describe());
        windowMetrics = new MetricMeans();
        windowLoss = 0;
        windowSteps = 0;
        windowTokens = 0;
        windowStart = performance.now();
      }
      const evalEvery = c.eval_steps ?? c.logging_steps;
      if (input.evalBatches.length && (state.global_step % evalEvery === 0 || state.global_step === totalSteps)) {
        const evaluated = evaluateWithMetrics(model, input.evalBatches, input.loss);
        lastEval = evaluated.loss;
        model.train();
        const evalMetrics: Record<string, number> = {};
        for (const [k, v] of Object.entries(evaluated.metrics)) evalMetrics[`eval_${k}`] = round(v);
        state.log_history.push({ current_steps: state.global_step, eval_loss: round(lastEval), ...evalMetrics });
        appendLog(logPath, { current_steps: state.global_step, total_steps: totalSteps, eval_loss: round(lastEval), ...evalMetrics });
        const extra = Object.entries(evalMetrics).map(([k, v]) => ` | ${k} ${v.toFixed(4)}`).join('');
        log(`step ${state.global_step}/${totalSteps} | eval_loss ${lastEval.toFixed(4)}${extra}`);
      }
      if (state.global_step % c.save_steps === 0 && state.global_step < totalSteps) log(`saved ${checkpoint()}`);
    }
    return finish(false);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    model.gradientCheckpointing = checkpointingBefore;
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
export function evaluate<B = LabelledBatch>(model: CausalLM, batches: B[], loss: LossFn<B>): number {
  return evaluateWithMetrics(model, batches, loss).loss;
}

/** Mean loss per unit over the evaluation batches, and the means of the loss's metrics. */
export function evaluateWithMetrics<B = LabelledBatch>(model: CausalLM, batches: B[], loss: LossFn<B>): { loss: number; metrics: Record<string, number> } {
  model.eval();
  return noGrad(() => {
    let total = 0;
    let tokens = 0;
    const metrics = new MetricMeans();
    for (const b of batches) {
      const r = loss(model, b, 1);
      total += r.loss.item();
      tokens += r.tokens;
      if (r.metrics) metrics.add(r.metrics, r.tokens);
    }
    return { loss: tokens ? total / tokens : NaN, metrics: metrics.means(4) };
  });
}

/** Weighted means of named metrics over micro-batches. */
class MetricMeans {
  private readonly sums = new Map<string, { sum: number; weight: number }>();

  add(metrics: Record<string, number>, weight: number): void {
    if (!(weight > 0)) return;
    for (const [k, v] of Object.entries(metrics)) {
      const e = this.sums.get(k) ?? { sum: 0, weight: 0 };
      e.sum += v * weight;
      e.weight += weight;
      this.sums.set(k, e);
    }
  }

  means(digits = 4): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, { sum, weight }] of this.sums) out[k] = round(sum / weight, digits);
    return out;
  }

  /** ` | name value` for each metric, for the progress line. */
  describe(): string {
    return Object.entries(this.means()).map(([k, v]) => ` | ${k} ${v.toFixed(4)}`).join('');
  }
}

/** `batchSource`, or one made from `batchesForEpoch` that builds each epoch's batches once. */
function batchSourceOf<B extends TrainBatch>(input: TrainerInput<B>): BatchSource<B> {
  if (input.batchSource) return input.batchSource;
  const forEpoch = input.batchesForEpoch;
  if (!forEpoch) throw new Error('train: give batchesForEpoch or batchSource');
  const first = forEpoch(0);
  const perEpoch = first.length;
  let cached: { epoch: number; batches: B[] } = { epoch: 0, batches: first };
  return {
    perEpoch,
    at(micro: number): B {
      const epoch = Math.floor(micro / perEpoch);
      if (cached.epoch !== epoch) cached = { epoch, batches: forEpoch(epoch) };
      return cached.batches[micro % perEpoch];
    },
  };
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
