import fs from 'node:fs';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { AdamWState } from './adamw.js';

/** Where training stands, enough to continue exactly where it stopped. */
export interface TrainerState {
  global_step: number;
  /** Micro-batches consumed, counting from the start of training. */
  micro_step: number;
  epoch: number;
  max_steps: number;
  log_history: Array<Record<string, number>>;
}

export const TRAINER_STATE = 'trainer_state.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';

/**
 * Writes a checkpoint folder whole or not at all: everything goes into a temporary folder that is
 * renamed into place, so an interrupted run keeps its previous checkpoint intact.
 */
export function writeCheckpoint(dir: string, writeWeights: (tmp: string) => void, optimizer: AdamWState, state: TrainerState): void {
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  writeWeights(tmp);
  const tensors: Array<{ name: string; shape: number[]; data: Float32Array }> = [];
  for (const [name, m] of optimizer.m) tensors.push({ name: `exp_avg.${name}`, shape: [m.length], data: m });
  for (const [name, v] of optimizer.v) tensors.push({ name: `exp_avg_sq.${name}`, shape: [v.length], data: v });
  writeSafetensors(join(tmp, OPTIMIZER_FILE), tensors, { step: String(optimizer.step) });
  fs.writeFileSync(join(tmp, TRAINER_STATE), `${JSON.stringify(state, null, 2)}\n`);
  const old = `${dir}.old-${process.pid}`;
  if (fs.existsSync(dir)) fs.renameSync(dir, old);
  fs.renameSync(tmp, dir);
  fs.rmSync(old, { recursive: true, force: true });
}

export function readOptimizerState(dir: string): AdamWState {
  const file = readSafetensors(join(dir, OPTIMIZER_FILE));
  try {
    const state: AdamWState = { step: Number(file.metadata.step ?? 0), m: new Map(), v: new Map() };
    for (const name of file.names()) {
      if (name.startsWith('exp_avg_sq.')) state.v.set(name.slice('exp_avg_sq.'.length), file.get(name));
      else if (name.startsWith('exp_avg.')) state.m.set(name.slice('exp_avg.'.length), file.get(name));
    }
    return state;
  } finally {
    file.close();
  }
}

export function readTrainerState(dir: string): TrainerState {
  return JSON.parse(fs.readFileSync(join(dir, TRAINER_STATE), 'utf8')) as TrainerState;
}

/** The newest `checkpoint-N` folder in `outputDir`, or null. */
export function latestCheckpoint(outputDir: string): string | null {
  if (!fs.existsSync(outputDir)) return null;
  const steps = fs
    .readdirSync(outputDir)
    .map((n) => /^checkpoint-(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null && fs.existsSync(join(outputDir, m[0], TRAINER_STATE)))
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
  return steps.length ? join(outputDir, `checkpoint-${steps[steps.length - 1]}`) : null;
}
