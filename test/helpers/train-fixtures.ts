/**
 * Shared set-up for the trainer tests: a tiny random model folder, short training configs over
 * the example data, quiet runs, and readers for what a run leaves in output_dir.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { readSafetensors } from '../../src/io/safetensors.js';
import { loadTrainConfig } from '../../src/train/config.js';
import type { TrainConfig } from '../../src/train/config.js';
import { runTraining } from '../../src/train/run.js';
import type { TrainResult } from '../../src/train/trainer.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const EXAMPLES_DATA = path.join(REPO_ROOT, 'examples', 'data');

export { removeDir, tempDir, tinyModelDir } from './adapter-fixtures.js';

/**
 * Settings that keep a run to about a second on the tiny model: 8 short task-layout examples
 * (every one keeps answer tokens within cutoff_len 64), batch 2, a log line per step.
 */
export function shortRunSettings(model: string, outputDir: string): Record<string, unknown> {
  return {
    model_name_or_path: model,
    dataset: 'restaurant_task',
    dataset_dir: EXAMPLES_DATA,
    output_dir: outputDir,
    cutoff_len: 64,
    max_samples: 8,
    per_device_train_batch_size: 2,
    lora_target: 'all',
    learning_rate: 1e-2,
    num_train_epochs: 1,
    logging_steps: 1,
    save_steps: 1000,
    seed: 42,
  };
}

export function configOf(settings: Record<string, unknown>): TrainConfig {
  return loadTrainConfig(null, settings).config;
}

export interface QuietRun {
  result: TrainResult;
  lines: string[];
}

/** Runs training with its log lines collected instead of printed. */
export async function runQuiet(settings: Record<string, unknown>, onLine?: (line: string) => void): Promise<QuietRun> {
  const lines: string[] = [];
  const result = await runTraining(configOf(settings), {
    log: (line) => {
      lines.push(line);
      onLine?.(line);
    },
  });
  return { result, lines };
}

/** The training-loss entries of a run's history (not the eval ones), in step order. */
export function losses(result: TrainResult): number[] {
  return result.history.filter((e) => e.loss !== undefined).map((e) => e.loss);
}

/** trainer_log.jsonl, one parsed object per line. */
export function readTrainerLog(outputDir: string): Array<Record<string, unknown>> {
  const text = fs.readFileSync(path.join(outputDir, 'trainer_log.jsonl'), 'utf8');
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** A log entry without the fields that depend on the clock. */
export function withoutTimes<T extends Record<string, unknown>>(entry: T): Partial<T> {
  const { tokens_per_second: _t, elapsed_time: _e, remaining_time: _r, ...rest } = entry;
  return rest as Partial<T>;
}

/** Every tensor of a safetensors file as float32. */
export function readTensors(file: string): Map<string, Float32Array> {
  const f = readSafetensors(file);
  try {
    return new Map(f.names().map((n) => [n, f.get(n)]));
  } finally {
    f.close();
  }
}

/** Largest |a − b| over tensors with the same names; throws when the names differ. */
export function maxAbsDiff(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  if ([...a.keys()].sort().join() !== [...b.keys()].sort().join()) throw new Error('maxAbsDiff: different tensor names');
  let d = 0;
  for (const [name, x] of a) {
    const y = b.get(name) as Float32Array;
    if (x.length !== y.length) throw new Error(`maxAbsDiff: ${name} has different sizes`);
    for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i] - y[i]));
  }
  return d;
}

/** The width and height a PNG declares, after checking its signature and that IHDR comes first. */
export function pngSize(file: string): { width: number; height: number } {
  const bytes = fs.readFileSync(file);
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  if (bytes.length < 33 || !bytes.subarray(0, 8).equals(signature)) throw new Error(`${file}: not a PNG (bad signature)`);
  if (bytes.readUInt32BE(8) !== 13 || bytes.toString('latin1', 12, 16) !== 'IHDR') throw new Error(`${file}: first chunk is not IHDR`);
  return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) };
}

export interface Captured<T> {
  value: T;
  stdout: string;
  stderr: string;
}

/**
 * Runs `fn` with console.log and console.error captured (the CLI prints results and messages
 * through them). process.stdout itself is left alone: the test runner reports through it.
 */
export async function captureConsole<T>(fn: () => Promise<T> | T): Promise<Captured<T>> {
  const out: string[] = [];
  const err: string[] = [];
  const { log, error } = console;
  console.log = (...args: unknown[]) => void out.push(`${args.map(String).join(' ')}\n`);
  console.error = (...args: unknown[]) => void err.push(`${args.map(String).join(' ')}\n`);
  try {
    const value = await fn();
    return { value, stdout: out.join(''), stderr: err.join('') };
  } finally {
    console.log = log;
    console.error = error;
  }
}
