/**
 * The preference and RL stages (rm, dpo, ppo) from a config: the policy (base + LoRA, or the
 * whole model), its reference, a value head where the stage needs one, the data, and the shared
 * trainer — same checkpoints, logs and plots as pt/sft.
 *
 * With LoRA and `adapter_name_or_path` (an SFT adapter), that adapter is kept frozen inside the
 * adapted layers and a new adapter is trained over it: with the new adapter off, the model is the
 * SFT model, which is the DPO/PPO reference. The saved adapter is the new one; `base_adapter.json`
 * beside it names the SFT adapter it sits on.
 */
import fs from 'node:fs';
import { join } from 'node:path';
import { padIdOf, resolveDatasets } from '../../data/index.js';
import { UserError } from '../../errors.js';
import { loadModel, writeJsonAtomic, readJsonFile } from '../../io/model-folder.js';
import { loadAdapter } from '../../io/peft-adapter.js';
import type { CausalLM } from '../../models/decoder.js';
import { mergeAndUnload, trainableSummary } from '../../nn/apply-lora.js';
import { baseWeightsNote } from '../../nn/base-dtype.js';
import type { AppliedLora } from '../../nn/apply-lora.js';
import { resolveTemplate } from '../../text/chat-template.js';
import { readStopTokenIds } from '../../text/stop-tokens.js';
import { Tokenizer } from '../../text/tokenizer.js';
import type { TrainConfig } from '../config.js';
import { plotLoss } from '../plot.js';
import { encodePrompt, loadPrompts, makePairBatches, pairBatchesForEpoch, preparePreferenceData } from '../preference-data.js';
import { limitSamples } from '../prepare-data.js';
import { loadFullWeights, newLoraAdapter, resultLine, saveTrainedWeights } from '../trained-model.js';
import { train } from '../trainer.js';
import type { TrainResult } from '../trainer.js';
import { cachedReference, dpoLoss, needsReference } from './dpo.js';
import { KlController, RunningMoments } from './ppo-math.js';
import { ppoBatchSource, ppoLoss, ppoUnits } from './ppo.js';
import type { PpoSettings } from './ppo.js';
import { loadRewardModel, scoreConversations } from './reward-model.js';
import { scoreByRules } from './reward-function.js';
import { rewardModelLoss } from './rm.js';
import { stackFrozenAdapter, writeBaseAdapter } from './stacked-adapter.js';
import { VALUE_HEAD_FILE, ValueHead } from './value-head.js';

export interface StageRunOptions {
  log: (line: string) => void;
  /** A checkpoint folder to continue from, already checked. */
  resumeDir: string | null;
}

export const PPO_STATE_FILE = 'ppo_state.json';

/** Runs stage rm, dpo or ppo as the config says. */
export async function runAlignmentStage(c: TrainConfig, o: StageRunOptions): Promise<TrainResult> {
  const { log, resumeDir } = o;
  const modelDir = c.model_name_or_path;
  const tokenizer = Tokenizer.fromFolder(modelDir);
  const template = resolveTemplate(c.template, tokenizer);
  const padId = padIdOf(tokenizer);
  const { model, applied } = buildPolicy(c, resumeDir, log);

  const saveBase = (dir: string): void => {
    saveTrainedWeights(model, applied, modelDir, dir);
    if (applied && c.adapter_name_or_path) writeBaseAdapter(dir, c.adapter_name_or_path);
  };
  const done = (result: TrainResult): TrainResult => {
    log(resultLine(c, result));
    return result;
  };

  if (c.stage === 'dpo' || c.stage === 'rm') {
    const data = preparePreferenceData(c, tokenizer, template);
    for (const note of data.notes) log(`note: ${note}`);
    log(`data: ${data.train.length} preference pair(s)${data.eval.length ? `, ${data.eval.length} for evaluation` : ''}`);
    const batchesForEpoch = (epoch: number) => pairBatchesForEpoch(data.train, epoch, c.seed, c.per_device_train_batch_size, padId);
    const evalBatches = makePairBatches(data.eval, c.per_device_eval_batch_size, padId);
    const common = { model, config: c, batchesForEpoch, evalBatches, units: (b: { pairs: number }) => b.pairs, resumeFrom: resumeDir, log };
    if (c.stage === 'dpo') {
      let reference = null;
      if (needsReference(c.pref_loss)) {
        reference = applied ? cachedReference(model, true) : cachedReference(frozenReference(c, log), false);
        log(applied ? `reference: the same model with the new adapter off${c.adapter_name_or_path ? ` (the model with ${c.adapter_name_or_path})` : ''}` : 'reference: a frozen copy of the starting model');
      }
      const loss = dpoLoss({ beta: c.pref_beta, loss: c.pref_loss, ftx: c.pref_ftx, simpoGamma: c.simpo_gamma }, reference);
      log(trainableSummary(model));
      return done(await train({ ...common, loss, saveWeights: saveBase }));
    }
    const head = resumeDir ? ValueHead.load(resumeDir, model.config.hiddenSize) : ValueHead.create(model.config.hiddenSize, c.seed);
    log(`${trainableSummary(model)} (+ value head: ${model.config.hiddenSize + 1} params)`);
    const saveWeights = (dir: string) => {
      saveBase(dir);
      head.save(dir);
    };
    const parameters = [...model.trainableParameters(), ...head.parameters()];
    return done(await train({ ...common, loss: rewardModelLoss(head), parameters, saveWeights }));
  }
  return done(await runPpo(c, { model, applied, tokenizer, template, padId, saveBase, resumeDir, log }));
}

interface PpoSetup {
  model: CausalLM;
  applied: AppliedLora | null;
  tokenizer: Tokenizer;
  template: string;
  padId: number;
  saveBase: (dir: string) => void;
  resumeDir: string | null;
  log: (line: string) => void;
}

async function runPpo(c: TrainConfig, p: PpoSetup): Promise<TrainResult> {
  const { model, tokenizer, template, log, resumeDir } = p;
  const specs = resolveDatasets(c.dataset, c.dataset_dir, { layout: c.layout });
  const loaded = loadPrompts(specs, c.skip_invalid, c.seed);
  for (const note of loaded.notes) log(`note: ${note}`);
  let items = loaded.items;
  items = limitSamples(items, c.max_samples);
  const encoded = items.map((it) => encodePrompt(it, tokenizer, template));
  const keep = encoded.map((ids) => ids.length <= c.cutoff_len);
  if (keep.some((k) => !k)) log(`note: ${keep.filter((k) => !k).length} prompt(s) longer than cutoff_len ${c.cutoff_len} were left out`);
  const prompts = encoded.filter((_, i) => keep[i]);
  items = items.filter((_, i) => keep[i]);
  if (prompts.length === 0) throw new UserError('no prompt fits within cutoff_len');
  log(`data: ${prompts.length} prompt(s)`);

  let scorer: (answers: Array<{ prompt: number; text: string }>) => number[];
  if (c.reward_function) {
    const fn = c.reward_function;
    scorer = (answers) => answers.map((a) => scoreByRules(fn, a.text));
    log(`reward: ${fn.rules.length} rule(s) from reward_function`);
  } else {
    const rm = loadRewardModel(c.reward_model as string, {
      baseModel: c.model_name_or_path, type: c.reward_model_type, template: c.template, cutoffLen: c.cutoff_len,
      shareWith: p.applied ? model : null, baseDtype: c.base_dtype,
    });
    scorer = (answers) =>
      scoreConversations(
        rm,
        answers.map((a) => {
          const it = items[a.prompt];
          const messages = [...it.messages, { role: 'assistant' as const, content: a.text }];
          return it.system !== undefined ? { system: it.system, messages } : { messages };
        }),
        c.per_device_train_batch_size,
      );
    log(`reward: the reward model ${c.reward_model}${p.applied && rm.model !== model ? ' (sharing the base weights)' : ''}`);
  }

  const hidden = model.config.hiddenSize;
  const head = resumeDir && fs.existsSync(join(resumeDir, VALUE_HEAD_FILE)) ? ValueHead.load(resumeDir, hidden) : ValueHead.create(hidden, c.seed);
  const kl = new KlController(c.ppo_kl_coef, c.ppo_target, c.ppo_horizon);
  const running = new RunningMoments();
  if (resumeDir && fs.existsSync(join(resumeDir, PPO_STATE_FILE))) {
    const st = readJsonFile(join(resumeDir, PPO_STATE_FILE));
    if (typeof st.kl_coef === 'number') kl.value = st.kl_coef;
    if (typeof st.score_mean === 'number' && typeof st.score_std === 'number' && typeof st.score_count === 'number') {
      Object.assign(running, { mean: st.score_mean, std: st.score_std, var: st.score_var ?? st.score_std ** 2, count: st.score_count });
    }
  }
  const settings: PpoSettings = {
    rolloutsPerRound: c.per_device_train_batch_size * c.gradient_accumulation_steps * c.ppo_buffer_size,
    microBatch: c.per_device_train_batch_size,
    ppoEpochs: c.ppo_epochs,
    gamma: c.ppo_gamma,
    lambda: c.ppo_lambda,
    cliprange: c.ppo_cliprange,
    cliprangeValue: c.ppo_cliprange_value,
    vfCoef: c.ppo_vf_coef,
    scoreNorm: c.ppo_score_norm,
    whitenRewards: c.ppo_whiten_rewards,
    maxNewTokens: c.max_new_tokens,
    sampling: {
      temperature: c.do_sample ? c.temperature : 0, topK: c.top_k, topP: c.top_p, repetitionPenalty: c.repetition_penalty,
    },
    stopIds: readStopTokenIds(c.model_name_or_path, tokenizer),
    padId: p.padId,
    seed: c.seed,
  };
  const reference = p.applied ? null : frozenReference(c, log);
  const source = ppoBatchSource({ model, head, tokenizer, prompts, scorer, reference, settings, kl, running, log });
  log(
    `ppo: ${settings.rolloutsPerRound} rollout(s) per round, ${source.roundsPerEpoch} round(s) per epoch, ${source.microPerRound / c.gradient_accumulation_steps} optimizer step(s) per round; reference: ${p.applied ? 'the policy with its adapter off' : 'a frozen copy'}`,
  );
  log(`${trainableSummary(model)} (+ value head: ${hidden + 1} params)`);
  const saveWeights = (dir: string) => {
    p.saveBase(dir);
    head.save(dir);
    writeJsonAtomic(join(dir, PPO_STATE_FILE), { kl_coef: kl.value, score_mean: running.mean, score_std: running.std, score_var: running.var, score_count: running.count });
  };
  const result = await train({
    model, config: c, batchSource: source, evalBatches: [], loss: ppoLoss(head, settings), units: ppoUnits,
    parameters: [...model.trainableParameters(), ...head.parameters()], saveWeights, resumeFrom: resumeDir, log,
  });
  const rewards = result.history.filter((e) => e['ppo/mean_scores'] !== undefined).map((e): [number, number] => [e.current_steps, e['ppo/mean_scores']]);
  plotLoss({ train: rewards, eval: [] }, join(c.output_dir, 'training_reward.png'));
  return result;
}

/** The model trained: base (+ a frozen SFT adapter) + a new LoRA adapter, or the whole model. */
function buildPolicy(c: TrainConfig, resumeDir: string | null, log: (line: string) => void): { model: CausalLM; applied: AppliedLora | null } {
  const model = loadModel(c.model_name_or_path, { baseDtype: c.base_dtype });
  const from = c.adapter_name_or_path;
  if (from) {
    if (c.finetuning_type === 'lora') {
      const layers = stackFrozenAdapter(model, from);
      log(`continuing from the adapter ${from}: kept frozen in ${layers} layer(s); a new adapter is trained over it`);
    } else {
      loadAdapter(model, from);
      mergeAndUnload(model);
      model.unfreeze();
      log(`continuing from the adapter ${from}: merged into the weights, which are all trained`);
    }
  }
  if (c.finetuning_type === 'lora') {
    const applied = resumeDir ? loadAdapter(model, resumeDir) : newLoraAdapter(model, c);
    if (c.base_dtype === 'bf16') log(baseWeightsNote(model));
    return { model, applied };
  }
  if (resumeDir) loadFullWeights(model, resumeDir);
  return { model, applied: null };
}

/** Full fine-tuning's reference: the starting model loaded a second time, frozen. */
function frozenReference(c: TrainConfig, log: (line: string) => void): CausalLM {
  log('note: full fine-tuning keeps a second, frozen copy of the model as the reference (LoRA needs none)');
  const ref = loadModel(c.model_name_or_path);
  if (c.adapter_name_or_path) {
    loadAdapter(ref, c.adapter_name_or_path);
    mergeAndUnload(ref);
  }
  ref.freeze();
  ref.eval();
  return ref;
}
