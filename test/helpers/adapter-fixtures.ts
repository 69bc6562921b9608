/**
 * Set-up shared by the tests: temporary folders, tiny random model folders, and PEFT adapter
 * folders over them whose B matrices are non-zero (a fresh adapter, B = 0, would equal the base
 * model and make every base-vs-adapter test pass trivially).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { initModel } from '../../src/io/init-model.js';
import { loadModel, saveModel } from '../../src/io/model-folder.js';
import { saveAdapter } from '../../src/io/peft-adapter.js';
import { applyLora, loraLayers } from '../../src/nn/apply-lora.js';
import { Rng } from '../../src/tensor/random.js';

/** A fresh folder under the OS temp dir; remove it with {@link removeDir}. */
export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `tunekit-${prefix}-`));
}

export function removeDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

/** The `tiny` preset (Qwen2-style, 2 layers, hidden 64, byte-level vocabulary) with random weights. */
export function tinyModelDir(root: string, name = 'tiny', seed = 1): string {
  const out = path.join(root, name);
  initModel({ preset: 'tiny', out, seed });
  return out;
}

/**
 * Writes `preset` to `dir` with weights large enough that every tensor matters: random norm
 * weights around 1, random biases, and embeddings and matrices of a larger spread than init's.
 */
export function writeRandomModel(dir: string, preset: string, seed = 1): void {
  initModel({ preset, out: dir, seed });
  const m = loadModel(dir);
  const rng = new Rng(seed + 100);
  for (const [name, t] of m.namedParameters()) {
    if (name.endsWith('norm.weight')) {
      rng.fillNormal(t.data, 0.1);
      for (let i = 0; i < t.data.length; i++) t.data[i] += 1;
    } else if (name.endsWith('.bias')) rng.fillNormal(t.data, 0.1);
    else rng.fillNormal(t.data, name.includes('embed') ? 0.05 : 0.2);
  }
  saveModel(m, dir);
}

export interface AdapterFixtureOptions {
  seed: number;
  r?: number;
  alpha?: number;
  targets?: string[] | 'all';
  /** Standard deviation of B's entries; large enough that greedy outputs change. */
  bStd?: number;
}

/** Saves a LoRA adapter for the model in `modelDir` with random A and non-zero random B. */
export function makeAdapter(modelDir: string, outDir: string, opts: AdapterFixtureOptions): string {
  const model = loadModel(modelDir);
  const applied = applyLora(model, { r: opts.r ?? 4, alpha: opts.alpha, targets: opts.targets ?? ['q_proj', 'v_proj'], seed: opts.seed });
  const rng = new Rng(opts.seed + 1000);
  for (const [, layer] of loraLayers(model)) rng.fillNormal(layer.lora_B.weight.data, opts.bStd ?? 0.5);
  saveAdapter(model, applied, outDir, { baseModelNameOrPath: modelDir });
  return outDir;
}
