/**
 * Proximal policy optimisation with LoRA, as TRL's PPOTrainer (which LLaMA-Factory drives) does
 * it, on one base model: the policy is base + adapter; the reference is the same model with the
 * adapter switched off; the value head reads the policy's final hidden states.
 *
 * Each round:
 *   1. rollouts: per_device_train_batch_size × gradient_accumulation_steps × ppo_buffer_size
 *      prompts, each answered by sampling from the policy (the stop token, when sampled, is part
 *      of the answer);
 *   2. scores from the reward model or the rule-based reward_function (optionally normalised by
 *      running statistics, ppo_score_norm);
 *   3. old log-probabilities and values (policy), reference log-probabilities (adapter off);
 *      per-token rewards −β·(log π − log π_ref) plus the score on the last token, β the KL
 *      coefficient (fixed, or adapted toward ppo_target); optional whitening of those rewards;
 *   4. GAE advantages (γ ppo_gamma, λ ppo_lambda), whitened over the round, and returns;
 *   5. ppo_epochs passes over the rollouts in shuffled mini-batches, one optimizer step each:
 *      clipped policy loss max(−A·ρ, −A·clip(ρ, 1 ± ε)) with ρ = exp(log π − log π_old), plus
 *      ppo_vf_coef × clipped value loss ½·max((V − R)², (clip(V, V_old ± ε_v) − R)²), both
 *      averaged over response tokens.
 *
 * Logged with TRL's names: ppo/mean_scores, objective/kl (mean per-answer Σ log π − log π_ref),
 * objective/kl_coef, ppo/loss/policy, ppo/loss/value, ppo/policy/entropy, ppo/policy/clipfrac,
 * ppo/policy/approxkl, ppo/mean_response_length.
 */
import { rowEntropy } from '../../backend/kernels/pointwise.js';
import { epochOrder } from '../../data/index.js';
import { sampleToken } from '../../infer/sampling.js';
import type { SamplingOptions } from '../../infer/sampling.js';
import type { CausalLM } from '../../models/decoder.js';
import { KVCache } from '../../models/kv-cache.js';
import { setLoraEnabled } from '../../nn/apply-lora.js';
import { add, clamp, exp, maximum, mul, reshape, scale, selectRows, sub, sum, tokenLogprobs } from '../../tensor/index.js';
import { Rng } from '../../tensor/random.js';
import { Tensor, noGrad } from '../../tensor/tensor.js';
import type { Tokenizer } from '../../text/tokenizer.js';
import { yieldToEventLoop } from '../trainer.js';
import type { BatchSource, LossFn, TrainBatch } from '../trainer.js';
import { KlController, RunningMoments, gae, shapedRewards, whiten } from './ppo-math.js';
import type { ValueHead } from './value-head.js';

export interface PpoSettings {
  /** Prompts answered per round: batch size × accumulation × buffer size. */
  rolloutsPerRound: number;
  /** Rollouts per micro-batch (per_device_train_batch_size). */
  microBatch: number;
  ppoEpochs: number;
  gamma: number;
  lambda: number;
  cliprange: number;
  cliprangeValue: number;
  vfCoef: number;
  scoreNorm: boolean;
  whitenRewards: boolean;
  maxNewTokens: number;
  sampling: SamplingOptions;
  stopIds: readonly number[];
  padId: number;
  seed: number;
}

/** One micro-batch of rollouts: padded prompt + answer rows and, per answer token, the round's numbers. */
export interface PpoBatch extends TrainBatch {
  ids: Int32Array;
  keyMask: Uint8Array;
  positions: Int32Array;
  /** Flat positions (b·T + t) whose next token is an answer token, and those tokens. */
  rows: Int32Array;
  targets: Int32Array;
  oldLogprobs: Float32Array;
  oldValues: Float32Array;
  advantages: Float32Array;
  returns: Float32Array;
  /** Statistics of the round these rollouts belong to. */
  roundMetrics: Record<string, number>;
}

export interface Rollout {
  prompt: number;
  ids: number[];
  promptLength: number;
  answerLength: number;
  text: string;
  score: number;
  logprobs: Float32Array;
  refLogprobs: Float32Array;
  values: Float32Array;
  advantages: Float64Array;
  returns: Float64Array;
}

export interface PpoContext {
  model: CausalLM;
  head: ValueHead;
  tokenizer: Tokenizer;
  /** Encoded prompts. */
  prompts: number[][];
  /** Scores answers, by prompt index and text. */
  scorer: (items: Array<{ prompt: number; text: string }>) => number[];
  /** A separate frozen reference model (full fine-tuning); null: the policy with its adapter off. */
  reference: CausalLM | null;
  settings: PpoSettings;
  kl: KlController;
  running: RunningMoments;
  log: (line: string) => void;
}

/**
 * Micro-batches made round by round, each round's rollouts sampled from the current policy. Making
 * a round yields to the event loop before each rollout and gives up (throwing `signal.reason`)
 * once the trainer's signal is aborted, so Ctrl-C does not wait for a whole round of sampling.
 */
export function ppoBatchSource(ctx: PpoContext): BatchSource<PpoBatch> & { roundsPerEpoch: number; microPerRound: number } {
  const s = ctx.settings;
  const microPerPass = Math.ceil(s.rolloutsPerRound / s.microBatch);
  const microPerRound = s.ppoEpochs * microPerPass;
  const roundsPerEpoch = Math.max(1, Math.ceil(ctx.prompts.length / s.rolloutsPerRound));
  let cached: { round: number; batches: PpoBatch[] } | null = null;
  return {
    perEpoch: roundsPerEpoch * microPerRound,
    roundsPerEpoch,
    microPerRound,
    async at(micro: number, signal?: AbortSignal): Promise<PpoBatch> {
      const round = Math.floor(micro / microPerRound);
      if (!cached || cached.round !== round) cached = { round, batches: await runRound(ctx, round, roundsPerEpoch, signal) };
      return cached.batches[micro % microPerRound];
    },
  };
}

/** The prompts of a round: consecutive slices of each epoch's shuffled order, wrapping around. */
export function roundPrompts(promptCount: number, perRound: number, round: number, roundsPerEpoch: number, seed: number): number[] {
  const epoch = Math.floor(round / roundsPerEpoch);
  const order = epochOrder(promptCount, seed, epoch);
  const start = (round % roundsPerEpoch) * perRound;
  return Array.from({ length: perRound }, (_, k) => order[(start + k) % promptCount]);
}

async function runRound(ctx: PpoContext, round: number, roundsPerEpoch: number, signal?: AbortSignal): Promise<PpoBatch[]> {
  const s = ctx.settings;
  const { model } = ctx;
  const started = performance.now();
  const wasTraining = model.training;
  model.eval();
  let rollouts: Rollout[];
  try {
    const picked = roundPrompts(ctx.prompts.length, s.rolloutsPerRound, round, roundsPerEpoch, s.seed);
    rollouts = [];
    for (const [k, p] of picked.entries()) {
      // Sampling a round takes long: let signals through between rollouts, and stop on Ctrl-C
      // before anything of the round (running score statistics, KL coefficient) is updated.
      await yieldToEventLoop();
      signal?.throwIfAborted();
      rollouts.push(sampleAnswer(ctx, p, new Rng((s.seed * 1_000_003 + round * 7919 + k) >>> 0)));
    }
    const scores = ctx.scorer(rollouts.map((r) => ({ prompt: r.prompt, text: r.text })));
    rollouts.forEach((r, i) => (r.score = scores[i]));
    scoreSequences(ctx, rollouts);
  } finally {
    model.train(wasTraining);
  }

  // Scores, KL-shaped rewards, advantages.
  let scores = rollouts.map((r) => r.score);
  const meanScore = mean(scores);
  if (s.scoreNorm) {
    ctx.running.update(scores);
    const factor = ctx.running.std + 1.1920929e-7;
    scores = scores.map((x) => (x - ctx.running.mean) / factor);
  }
  const klCoef = ctx.kl.value;
  const rewards = rollouts.map((r, i) => shapedRewards(scores[i], r.logprobs, r.refLogprobs, klCoef));
  if (s.whitenRewards) whiten(rewards, false);
  for (const [i, r] of rollouts.entries()) {
    const g = gae(rewards[i], r.values, s.gamma, s.lambda);
    r.advantages = g.advantages;
    r.returns = g.returns;
  }
  whiten(rollouts.map((r) => r.advantages));
  const kls = rollouts.map((r) => r.logprobs.reduce((acc, lp, t) => acc + lp - r.refLogprobs[t], 0));
  const meanKl = mean(kls);
  ctx.kl.update(meanKl, rollouts.length);

  const roundMetrics = {
    'ppo/mean_scores': meanScore,
    'objective/kl': meanKl,
    'objective/kl_coef': klCoef,
    'ppo/mean_response_length': mean(rollouts.map((r) => r.answerLength)),
  };
  ctx.log(
    `round ${round + 1}: ${rollouts.length} rollouts in ${((performance.now() - started) / 1000).toFixed(1)} s | mean score ${meanScore.toFixed(4)} | kl ${meanKl.toFixed(4)} | kl_coef ${klCoef.toFixed(4)} | e.g. ${JSON.stringify(rollouts[0].text.slice(0, 60))}`,
  );

  // ppo_epochs shuffled passes, cut into micro-batches.
  const batches: PpoBatch[] = [];
  for (let e = 0; e < s.ppoEpochs; e++) {
    const order = new Rng((s.seed ^ Math.imul(round + 1, 0x9e3779b1) ^ Math.imul(e + 1, 0x85ebca6b)) >>> 0).shuffle(rollouts.map((_, i) => i));
    for (let i = 0; i < order.length; i += s.microBatch) {
      batches.push(makePpoBatch(order.slice(i, i + s.microBatch).map((k) => rollouts[k]), s.padId, roundMetrics));
    }
  }
  return batches;
}

/** Samples one answer from the policy with the KV cache; a sampled stop token ends it and is kept. */
function sampleAnswer(ctx: PpoContext, prompt: number, rng: Rng): Rollout {
  const { model, settings: s } = ctx;
  const promptIds = ctx.prompts[prompt];
  const stop = new Set(s.stopIds);
  const answer: number[] = [];
  noGrad(() => {
    const cache = new KVCache(model.config, 1, promptIds.length + s.maxNewTokens);
    const seen = [...promptIds];
    let logits = lastLogits(model, Int32Array.from(promptIds), cache);
    while (answer.length < s.maxNewTokens) {
      const next = sampleToken(logits, s.sampling, rng, seen);
      answer.push(next);
      seen.push(next);
      if (stop.has(next) || answer.length === s.maxNewTokens) break;
      logits = lastLogits(model, Int32Array.of(next), cache);
    }
  });
  const textIds = answer.filter((id) => !stop.has(id));
  return {
    prompt,
    ids: [...promptIds, ...answer],
    promptLength: promptIds.length,
    answerLength: answer.length,
    text: ctx.tokenizer.decode(textIds, { skipSpecialTokens: true }),
    score: 0,
    logprobs: new Float32Array(0),
    refLogprobs: new Float32Array(0),
    values: new Float32Array(0),
    advantages: new Float64Array(0),
    returns: new Float64Array(0),
  };
}

function lastLogits(model: CausalLM, ids: Int32Array, cache: KVCache): Float32Array {
  const h = model.hidden({ ids, batch: 1, length: ids.length, cache });
  const c = model.config.hiddenSize;
  return model.logits(new Tensor(h.data.subarray((ids.length - 1) * c, ids.length * c), [1, c])).data;
}

/** Old log-probabilities and values (policy) and reference log-probabilities of each answer token. */
function scoreSequences(ctx: PpoContext, rollouts: Rollout[]): void {
  const { model, head, settings: s } = ctx;
  noGrad(() => {
    for (let i = 0; i < rollouts.length; i += s.microBatch) {
      const group = rollouts.slice(i, i + s.microBatch);
      const batch = makePpoBatch(group, s.padId, {});
      const { logprobs, values } = policyForward(model, head, batch);
      let ref: Tensor;
      if (ctx.reference) ref = answerLogprobs(ctx.reference, batch).logprobs;
      else {
        setLoraEnabled(model, false);
        try {
          ref = answerLogprobs(model, batch).logprobs;
        } finally {
          setLoraEnabled(model, true);
        }
      }
      let at = 0;
      for (const r of group) {
        r.logprobs = logprobs.data.slice(at, at + r.answerLength);
        r.values = values.data.slice(at, at + r.answerLength);
        r.refLogprobs = ref.data.slice(at, at + r.answerLength);
        at += r.answerLength;
      }
    }
  });
}

/** Right-padded rows of rollouts and the positions that predict each answer token, in rollout order. */
export function makePpoBatch(rollouts: Rollout[], padId: number, roundMetrics: Record<string, number>): PpoBatch {
  const B = rollouts.length;
  const T = Math.max(...rollouts.map((r) => r.ids.length));
  const ids = new Int32Array(B * T).fill(padId);
  const keyMask = new Uint8Array(B * T);
  const positions = new Int32Array(B * T);
  const n = rollouts.reduce((k, r) => k + r.answerLength, 0);
  const rows = new Int32Array(n);
  const targets = new Int32Array(n);
  const oldLogprobs = new Float32Array(n);
  const oldValues = new Float32Array(n);
  const advantages = new Float32Array(n);
  const returns = new Float32Array(n);
  let k = 0;
  rollouts.forEach((r, b) => {
    ids.set(r.ids, b * T);
    keyMask.fill(1, b * T, b * T + r.ids.length);
    for (let t = 0; t < r.ids.length; t++) positions[b * T + t] = t;
    for (let t = 0; t < r.answerLength; t++, k++) {
      rows[k] = b * T + r.promptLength - 1 + t;
      targets[k] = r.ids[r.promptLength + t];
      if (r.logprobs.length) {
        oldLogprobs[k] = r.logprobs[t];
        oldValues[k] = r.values[t];
        advantages[k] = r.advantages[t];
        returns[k] = r.returns[t];
      }
    }
  });
  return { ids, keyMask, positions, batch: B, length: T, rows, targets, oldLogprobs, oldValues, advantages, returns, roundMetrics };
}

/** Log-probabilities of the answer tokens, with the logits and hidden rows they came from. */
function answerLogprobs(model: CausalLM, batch: PpoBatch): { logprobs: Tensor; logits: Tensor; hidden: Tensor } {
  const h = model.hidden(batch);
  const flat = reshape(h, [batch.batch * batch.length, model.config.hiddenSize]);
  const hidden = selectRows(flat, batch.rows); // [N, C]
  const logits = model.logits(hidden); // [N, V]
  return { logprobs: tokenLogprobs(logits, batch.targets), logits, hidden };
}

function policyForward(model: CausalLM, head: ValueHead, batch: PpoBatch): { logprobs: Tensor; values: Tensor; logits: Tensor } {
  const { logprobs, logits, hidden } = answerLogprobs(model, batch);
  return { logprobs, logits, values: reshape(head.forward(hidden), [batch.rows.length]) };
}

/** The trainer's loss for stage ppo: per answer token, divided by the group's answer tokens. */
export function ppoLoss(head: ValueHead, s: Pick<PpoSettings, 'cliprange' | 'cliprangeValue' | 'vfCoef'>): LossFn<PpoBatch> {
  return (model, batch, normalizer) => {
    const n = batch.rows.length;
    const { logprobs, values, logits } = policyForward(model, head, batch);
    const old = Tensor.from(batch.oldLogprobs);
    const negAdv = Tensor.from(batch.advantages.map((a) => -a));
    const ratio = exp(sub(logprobs, old));
    const pg1 = mul(ratio, negAdv);
    const pg2 = mul(clamp(ratio, 1 - s.cliprange, 1 + s.cliprange), negAdv);
    const policyLoss = sum(maximum(pg1, pg2));

    const oldV = Tensor.from(batch.oldValues);
    const ret = Tensor.from(batch.returns);
    const vClipped = add(clamp(sub(values, oldV), -s.cliprangeValue, s.cliprangeValue), oldV);
    const d1 = sub(values, ret);
    const d2 = sub(vClipped, ret);
    const valueLoss = scale(sum(maximum(mul(d1, d1), mul(d2, d2))), 0.5);
    const loss = scale(add(policyLoss, scale(valueLoss, s.vfCoef)), 1 / Math.max(1, normalizer));

    const entropy = new Float32Array(n);
    rowEntropy(logits.data, logits.lastDim, entropy);
    let clipped = 0;
    let approxKl = 0;
    for (let i = 0; i < n; i++) {
      if (pg2.data[i] > pg1.data[i]) clipped++;
      approxKl += 0.5 * (logprobs.data[i] - batch.oldLogprobs[i]) ** 2;
    }
    const per = (x: number) => x / Math.max(1, n);
    return {
      loss,
      tokens: n,
      metrics: {
        ...batch.roundMetrics,
        'ppo/loss/policy': per(policyLoss.item()),
        'ppo/loss/value': per(valueLoss.item()),
        'ppo/policy/entropy': per(entropy.reduce((a, b) => a + b, 0)),
        'ppo/policy/clipfrac': per(clipped),
        'ppo/policy/approxkl': per(approxKl),
      },
    };
  };
}

/** Units of a PPO micro-batch: its answer tokens. */
export function ppoUnits(batch: PpoBatch): number {
  return batch.rows.length;
}

function mean(xs: readonly number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}
