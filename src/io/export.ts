import { resolve } from 'node:path';
import { UserError } from '../errors.js';
import { mergeAndUnload } from '../nn/apply-lora.js';
import { loadModel, saveModel } from './model-folder.js';
import { loadAdapter } from './peft-adapter.js';
import type { WritableDtype } from './safetensors.js';

export interface ExportOptions {
  model: string;
  adapter: string | null;
  out: string;
  dtype?: WritableDtype;
}

/** Loads a base model, folds an adapter into it and saves a plain Hugging Face folder. */
export function exportMerged(opts: ExportOptions): void {
  if (resolve(opts.out) === resolve(opts.model)) throw new UserError('export: --out must differ from --model; the base folder is never overwritten');
  const model = loadModel(opts.model);
  if (opts.adapter) {
    loadAdapter(model, opts.adapter);
    mergeAndUnload(model);
  }
  saveModel(model, opts.out, { dtype: opts.dtype, copyFrom: opts.model });
}
