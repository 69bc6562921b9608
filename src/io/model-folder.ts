import fs from 'node:fs';
import { join } from 'node:path';
import { FileFormatError, UserError } from '../errors.js';
import { readJsonFile } from '../json-file.js';
import { parseDecoderConfig } from '../models/config.js';
import type { DecoderConfig } from '../models/config.js';
import { CausalLM } from '../models/decoder.js';
import { isBaseLinearWeight } from '../nn/base-dtype.js';
import type { BaseDtype } from '../nn/base-dtype.js';
import type { WritableDtype } from './safetensors.js';
import { openWeights, saveWeights } from './weights.js';

export { readJsonFile };

/** Files beside the weights that a saved or merged model folder carries over unchanged. */
export const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'vocab.json',
  'merges.txt',
  'generation_config.json',
  'chat_template.jinja',
];

export function readModelConfig(dir: string): DecoderConfig {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new UserError(`model folder ${dir} does not exist`);
  const path = join(dir, 'config.json');
  if (!fs.existsSync(path)) throw new UserError(`${dir} has no config.json; expected a Hugging Face model folder`);
  return parseDecoderConfig(readJsonFile(path), path);
}

export interface LoadModelOptions {
  /**
   * `bf16`: the decoder blocks' linear weights are stored as bf16 and frozen (see
   * `nn/base-dtype.ts`); a BF16 checkpoint's bits are kept as they are, others are rounded.
   */
  baseDtype?: BaseDtype;
}

/**
 * Builds the model a Hugging Face folder describes and loads its weights, checking every
 * tensor's presence and shape against config.json.
 */
export function loadModel(dir: string, opts: LoadModelOptions = {}): CausalLM {
  const bf16 = opts.baseDtype === 'bf16';
  const config = readModelConfig(dir);
  const model = new CausalLM(config);
  const weights = openWeights(dir);
  try {
    for (const [name, param] of model.namedParameters()) {
      if (!weights.has(name)) throw new FileFormatError(dir, `weights have no tensor "${name}", which config.json (${config.modelType}) requires`);
      const info = weights.info(name);
      if (!sameShape(info.shape, param.shape)) {
        throw new FileFormatError(
          dir,
          `tensor "${name}" has shape [${info.shape.join(', ')}] but config.json implies [${param.shape.join(', ')}]`,
        );
      }
      if (bf16 && isBaseLinearWeight(name, param.shape)) {
        param.requiresGrad = false;
        param.setBf16(weights.getBf16(name));
      } else {
        param.data = weights.get(name);
      }
    }
  } finally {
    weights.close();
  }
  return model;
}

export interface SaveModelOptions {
  dtype?: WritableDtype;
  /** Folder whose tokenizer and generation files are copied beside the weights. */
  copyFrom?: string;
  maxShardBytes?: number;
}

/** Writes config.json, the weights (sharded when large) and the tokenizer files. */
export function saveModel(model: CausalLM, dir: string, opts: SaveModelOptions = {}): void {
  fs.mkdirSync(dir, { recursive: true });
  const dtype = opts.dtype ?? 'F32';
  const torchDtype = { F32: 'float32', BF16: 'bfloat16', F16: 'float16' }[dtype];
  const config = { ...model.config.raw, torch_dtype: torchDtype };
  writeJsonAtomic(join(dir, 'config.json'), config);
  // A weight kept as bf16 is handed over as its bits: written as they are, or widened per chunk.
  const tensors = [...model.namedParameters()].map(([name, t]) => ({ name, shape: t.shape, data: t.bf16 ?? t.data }));
  saveWeights(dir, tensors, { dtype, maxShardBytes: opts.maxShardBytes });
  if (opts.copyFrom) copyTokenizerFiles(opts.copyFrom, dir);
}

export function copyTokenizerFiles(from: string, to: string): void {
  for (const f of TOKENIZER_FILES) {
    const src = join(from, f);
    if (fs.existsSync(src) && join(from) !== join(to)) fs.copyFileSync(src, join(to, f));
  }
}

/** Writes JSON through a temporary file and a rename, so a crash never leaves half a file. */
export function writeJsonAtomic(path: string, value: unknown): void {
  const tmp = `${path}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`);
  fs.renameSync(tmp, path);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
