/**
 * The LoRA SFT step (issue: LoRA training close to what the machine's arithmetic allows): tokens/s
 * against the GEMM-bound floor — the step's matrix-product FLOPs (forward, and input gradients:
 * frozen weights get none) divided by the sgemm rate measured in this run — and peak memory,
 * measured in a child process so earlier sections' buffers do not count.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseDecoderConfig } from '../src/models/config.js';
import { PRESETS } from '../src/models/presets.js';
import type { Figure, Section } from './measure.js';

/** Matrix-product FLOPs of one forward + input-gradient pass over `tokens` tokens of `batch` rows. */
export function loraStepFlops(tokens: number, batch: number): number {
  const c = parseDecoderConfig(PRESETS['qwen2.5-0.5b'].config);
  const { hiddenSize: C, intermediateSize: I, numHeads: H, numKvHeads: HKV, headDim: D, numLayers: L, vocabSize: V } = c;
  const perLayerParams = C * H * D * 2 + C * HKV * D * 2 + 3 * C * I;
  const T = tokens / batch;
  const attention = 2 * 2 * batch * H * T * T * D; // q·kᵀ and p·v, forward
  const forward = L * (2 * perLayerParams * tokens + attention) + 2 * C * V * tokens;
  // Backward: input gradients cost what the forward did; attention's backward is twice its forward.
  const backward = L * (2 * perLayerParams * tokens + 2 * attention) + 2 * C * V * tokens;
  return forward + backward;
}

export const trainSection: Section = {
  name: 'train',
  title: 'training: LoRA SFT step (r 8, q_proj and v_proj, batch 4 × 256, AdamW)',
  provides: ['train_tokens_per_s', 'train_floor_tokens_per_s', 'train_peak_rss_mb', 'train_seconds_per_step', 'train_bf16_tokens_per_s', 'train_bf16_peak_rss_mb'],
  async run(ctx) {
    const gflops = await ctx.figure('sgemm_gflops');
    ctx.progress('train: building the model and timing 3 steps in a child process (minutes)');
    const r = trainStep(['--steps', '3']);
    ctx.progress('train: the same with base_dtype bf16, 2 steps (minutes)');
    const bf16 = trainStep(['--steps', '2', '--base-dtype', 'bf16']);
    const flops = loraStepFlops(r.tokens, 4);
    const floor = r.tokens / (flops / (gflops * 1e9));
    const figures: Figure[] = [
      { key: 'train_tokens_per_s', label: 'LoRA SFT step', value: r.tokens_per_s, unit: 'tok/s', bound: 'train_floor_tokens_per_s', note: 'median of 3 steps after a warm-up' },
      { key: 'train_floor_tokens_per_s', label: 'floor: step FLOPs at sgemm rate', value: floor, unit: 'tok/s', note: `${(flops / 1e12).toFixed(2)} TFLOP per step` },
      { key: 'train_seconds_per_step', label: 'seconds per step', value: r.seconds_per_step, unit: 's' },
      { key: 'train_peak_rss_mb', label: 'peak memory of the training process', value: r.peak_rss_mb, unit: 'MB', digits: 0 },
      { key: 'train_bf16_tokens_per_s', label: 'the same step, base_dtype bf16', value: bf16.tokens_per_s, unit: 'tok/s', bound: 'train_floor_tokens_per_s', note: 'median of 2 steps after a warm-up' },
      { key: 'train_bf16_peak_rss_mb', label: 'peak memory with base_dtype bf16', value: bf16.peak_rss_mb, unit: 'MB', digits: 0, note: 'frozen decoder weights at half width' },
    ];
    return figures;
  },
};

interface StepResult {
  seconds_per_step: number;
  tokens_per_s: number;
  peak_rss_mb: number;
  tokens: number;
}

/** Runs bench/train-step.ts in a child process (its peak memory is its own) and parses its line. */
function trainStep(args: string[]): StepResult {
  const script = fileURLToPath(new URL('./train-step.ts', import.meta.url));
  const child = spawnSync(process.execPath, ['--import', 'tsx', script, ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 1 << 20,
  });
  if (child.status !== 0) throw new Error(`bench/train-step.ts ${args.join(' ')} failed with status ${child.status}`);
  return JSON.parse(child.stdout.trim().split('\n').pop() as string) as StepResult;
}
