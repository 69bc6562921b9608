/**
 * One LoRA SFT configuration timed in a process of its own, so its peak memory is its own:
 * qwen2.5-0.5b shape, random fp32 weights, LoRA r 8 / alpha 16 on q_proj and v_proj, batch
 * 4 × 256 tokens, loss on every position, AdamW. Prints one JSON line on stdout.
 *
 *   node --import tsx bench/train-step.ts [--steps N] [--base-dtype bf16]
 *
 * `--base-dtype bf16` stores the frozen decoder weights as bf16, as `base_dtype: bf16` does.
 */
import { parseArgs } from 'node:util';
import { shortenBlasSpinForTraining } from '../src/backend/blas-spin.js';
import { parseDecoderConfig } from '../src/models/config.js';
import { CausalLM } from '../src/models/decoder.js';
import { initializeWeights } from '../src/models/init.js';
import { PRESETS } from '../src/models/presets.js';
import { applyLora } from '../src/nn/apply-lora.js';
import { parseBaseDtype, storeFrozenBaseAsBf16 } from '../src/nn/base-dtype.js';
import { AdamW } from '../src/train/adamw.js';
import { causalLmLoss } from '../src/train/loss.js';
import { Rng } from '../src/tensor/random.js';

const { values } = parseArgs({ options: { steps: { type: 'string' }, 'base-dtype': { type: 'string' } } });
const steps = Number(values.steps ?? 3);
const B = 4;
const T = 256;

// As `tunekit train` does before the BLAS library loads.
shortenBlasSpinForTraining();
const config = parseDecoderConfig(PRESETS['qwen2.5-0.5b'].config);
const model = new CausalLM(config);
initializeWeights(model, 0);
applyLora(model, { r: 8, alpha: 16, targets: ['q_proj', 'v_proj'], seed: 0 });
const baseDtype = parseBaseDtype(values['base-dtype'] ?? 'fp32');
if (!baseDtype) throw new Error(`--base-dtype ${values['base-dtype']}: expected fp32 or bf16`);
if (baseDtype === 'bf16') storeFrozenBaseAsBf16(model);
const params = model.trainableParameters();
const optimizer = new AdamW(params, { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
const rng = new Rng(1);
const ids = Int32Array.from({ length: B * T }, () => rng.int(config.vocabSize));
const batch = { ids, labels: ids, batch: B, length: T };

const times: number[] = [];
for (let s = 0; s <= steps; s++) {
  const start = performance.now();
  const { loss } = causalLmLoss(model, batch, B * T);
  loss.backward();
  optimizer.step(1e-4);
  optimizer.zeroGrad();
  const t = (performance.now() - start) / 1000;
  // The first step allocates and warms up; the figures are over the rest.
  if (s > 0) times.push(t);
  process.stderr.write(`[train-step] step ${s}${s === 0 ? ' (warm-up)' : ''}: ${t.toFixed(2)} s, loss ${loss.item().toFixed(4)}\n`);
}
times.sort((a, b) => a - b);
const secondsPerStep = times[times.length >> 1];
process.stdout.write(
  `${JSON.stringify({ seconds_per_step: secondsPerStep, tokens_per_s: (B * T) / secondsPerStep, peak_rss_mb: process.resourceUsage().maxRSS / 1024, tokens: B * T })}\n`,
);
