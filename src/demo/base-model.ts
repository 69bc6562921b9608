import fs from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { loadModel, saveModel, writeJsonAtomic } from '../io/model-folder.js';
import { parseDecoderConfig } from '../models/config.js';
import { CausalLM } from '../models/decoder.js';
import { initializeWeights } from '../models/init.js';
import { assetPath } from '../paths.js';
import { buildByteLevelTokenizer } from '../text/tiny-tokenizer.js';
import { TRAIN_DEFAULTS } from '../train/config.js';
import type { TrainConfig } from '../train/config.js';
import { runTraining } from '../train/run.js';

/** Where the built-in base model lives: committed with the package. */
export const BUILTIN_MODEL_DIR = assetPath('base-model');
/** The text it learns from, also committed. */
export const BASE_CORPUS_DIR = assetPath('corpus', 'base');

/** A Qwen2-style decoder small enough to pre-train on two cores in minutes and to commit (~5 MB in bf16). */
export const BASE_MODEL_CONFIG = {
  architectures: ['Qwen2ForCausalLM'],
  model_type: 'qwen2',
  hidden_act: 'silu',
  hidden_size: 192,
  intermediate_size: 512,
  num_hidden_layers: 4,
  num_attention_heads: 6,
  num_key_value_heads: 2,
  max_position_embeddings: 1024,
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
};

export const BASE_VOCAB_SIZE = 3072;

export interface BuildBaseModelOptions {
  out?: string;
  epochs?: number;
  seed?: number;
  log?: (line: string) => void;
}

/**
 * Makes the built-in base model the way a user would make theirs: a byte-level BPE tokenizer
 * learned from the corpus, random weights, then tunekit's own `pt` stage (full fine-tuning) over
 * the corpus. The result is a plain Hugging Face folder saved in bf16.
 */
export async function buildBaseModel(opts: BuildBaseModelOptions = {}): Promise<string> {
  const out = opts.out ?? BUILTIN_MODEL_DIR;
  const log = opts.log ?? ((l: string) => console.error(l));
  const corpus = readCorpus(BASE_CORPUS_DIR);
  const work = fs.mkdtempSync(join(os.tmpdir(), 'tunekit-base-'));
  try {
    const init = join(work, 'init');
    fs.mkdirSync(init, { recursive: true });
    const tok = buildByteLevelTokenizer({ corpus, vocabSize: BASE_VOCAB_SIZE, modelMaxLength: 1024 });
    writeJsonAtomic(join(init, 'tokenizer.json'), tok.tokenizerJson);
    writeJsonAtomic(join(init, 'tokenizer_config.json'), tok.tokenizerConfig);
    const added = tok.tokenizerJson.added_tokens as Array<{ id: number; content: string }>;
    const idOf = (c: string) => added.find((a) => a.content === c)?.id ?? null;
    const vocab = Math.max(...added.map((a) => a.id)) + 1;
    const eos = [idOf('<|im_end|>'), idOf('<|endoftext|>')].filter((x): x is number => x !== null);
    const model = new CausalLM(parseDecoderConfig({ ...BASE_MODEL_CONFIG, vocab_size: vocab, bos_token_id: null, eos_token_id: eos[0] }));
    initializeWeights(model, opts.seed ?? 0);
    saveModel(model, init);
    writeJsonAtomic(join(init, 'generation_config.json'), { eos_token_id: eos, do_sample: false });
    log(`base model: vocabulary ${vocab}, ${(model.parameters().reduce((n, t) => n + t.size, 0) / 1e6).toFixed(2)}M parameters; pre-training on ${(corpus.length / 1024).toFixed(0)} KB of text`);
    const trained = join(work, 'trained');
    const config: TrainConfig = {
      ...TRAIN_DEFAULTS,
      model_name_or_path: init,
      stage: 'pt',
      finetuning_type: 'full',
      dataset: BASE_CORPUS_DIR,
      dataset_dir: '.',
      cutoff_len: 256,
      packing: true,
      per_device_train_batch_size: 8,
      learning_rate: 3e-3,
      num_train_epochs: opts.epochs ?? 12,
      lr_scheduler_type: 'cosine',
      warmup_ratio: 0.03,
      weight_decay: 0.01,
      logging_steps: 20,
      save_steps: 1_000_000,
      seed: opts.seed ?? 0,
      output_dir: trained,
    };
    await runTraining(config, { log });
    const final = loadModel(trained);
    const tmpOut = `${out}.tmp-${process.pid}`;
    fs.rmSync(tmpOut, { recursive: true, force: true });
    saveModel(final, tmpOut, { dtype: 'BF16', copyFrom: init });
    fs.copyFileSync(join(trained, 'training_loss.png'), join(tmpOut, 'pretraining_loss.png'));
    fs.rmSync(out, { recursive: true, force: true });
    fs.renameSync(tmpOut, out);
    return out;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** The built-in model's folder, built (minutes) and cached there if it is not present. */
export async function ensureBuiltinModel(log?: (line: string) => void): Promise<string> {
  if (fs.existsSync(join(BUILTIN_MODEL_DIR, 'config.json'))) return BUILTIN_MODEL_DIR;
  log?.('the built-in base model is not here yet; building it (a few minutes, once)');
  return await buildBaseModel({ log });
}

function readCorpus(dir: string): string {
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.txt'))
    .sort()
    .map((f) => fs.readFileSync(join(dir, f), 'utf8'))
    .join('\n\n');
}
