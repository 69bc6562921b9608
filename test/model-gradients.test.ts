/**
 * The gradient of the model's mean cross-entropy with respect to every parameter tensor, against
 * central finite differences of the same loss.
 *
 * The model is tiny (hidden 8, 2 heads, 1 key/value head, head_dim 4, intermediate 12, 2 layers,
 * vocabulary 11) with random norm weights and biases, so every tensor has a gradient well above
 * float32 noise. The engine computes in float32, hence a step of 1e-2 (taken exactly: x ± h is
 * rounded first and the divisor is the rounded difference); the tolerance is a few percent of
 * the tensor's largest gradient, which still catches a wrong factor, sign or missing term.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { parseDecoderConfig } from '../src/models/config.js';
import { CausalLM } from '../src/models/decoder.js';
import type { DecoderInput } from '../src/models/decoder.js';
import { initializeWeights } from '../src/models/init.js';
import { Rng, crossEntropy, noGrad, reshape } from '../src/tensor/index.js';

const V = 11;
const EPS = 1e-2;
/** Elements checked per tensor; smaller tensors are checked whole. */
const SAMPLES = 40;
/** |analytic − numeric| ≤ RTOL·|numeric| + ATOL_FRAC·max|numeric over the tensor| + ATOL. */
const RTOL = 2e-2;
const ATOL_FRAC = 1e-2;
const ATOL = 1e-4;

const small = {
  hidden_size: 8, intermediate_size: 12, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 4,
  vocab_size: V, rms_norm_eps: 1e-6, max_position_embeddings: 64, hidden_act: 'silu',
};

interface Case {
  name: string;
  raw: Record<string, unknown>;
  /** Names the case must have, so it cannot silently lose what it is meant to cover. */
  expect: string[];
  input: (B: number, T: number) => Partial<DecoderInput>;
}

const CASES: Case[] = [
  {
    name: 'qwen2: q/k/v biases, tied head, left padding',
    raw: { ...small, model_type: 'qwen2', rope_theta: 10000, tie_word_embeddings: true },
    expect: ['model.layers.1.self_attn.q_proj.bias', 'model.layers.0.self_attn.v_proj.bias'],
    input: (B, T) => {
      // Row 0 has 2 padding tokens on the left.
      const keyMask = new Uint8Array(B * T).fill(1);
      const positions = new Int32Array(B * T);
      for (let b = 0; b < B; b++) {
        const pad = b === 0 ? 2 : 0;
        for (let t = 0; t < T; t++) {
          keyMask[b * T + t] = t < pad ? 0 : 1;
          positions[b * T + t] = t < pad ? 1 : t - pad;
        }
      }
      return { keyMask, positions };
    },
  },
  {
    name: 'qwen3: q/k norms, untied head, attention biases, packed segments',
    raw: { ...small, model_type: 'qwen3', rope_theta: 1000000, tie_word_embeddings: false, attention_bias: true },
    expect: ['model.layers.0.self_attn.q_norm.weight', 'model.layers.1.self_attn.k_norm.weight', 'lm_head.weight', 'model.layers.0.self_attn.o_proj.bias'],
    input: (B, T) => {
      // Each row holds two sequences, split at 3; positions restart at the split.
      const segments = new Int32Array(B * T);
      const positions = new Int32Array(B * T);
      for (let b = 0; b < B; b++) {
        for (let t = 0; t < T; t++) {
          segments[b * T + t] = t < 3 ? 0 : 1;
          positions[b * T + t] = t < 3 ? t : t - 3;
        }
      }
      return { segments, positions };
    },
  },
  {
    name: 'llama: llama3 rope scaling, attention and MLP biases, untied head',
    raw: {
      ...small, model_type: 'llama', rope_theta: 500000, tie_word_embeddings: false, attention_bias: true, mlp_bias: true,
      rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
    },
    expect: ['model.layers.0.mlp.down_proj.bias', 'model.layers.1.self_attn.o_proj.bias', 'lm_head.weight'],
    input: () => ({}),
  },
];

function build(raw: Record<string, unknown>, seed: number): CausalLM {
  const model = new CausalLM(parseDecoderConfig(raw));
  initializeWeights(model, seed, 0.3);
  const rng = new Rng(seed + 1000);
  for (const [name, t] of model.namedParameters()) {
    if (name.endsWith('norm.weight')) rng.fillNormal(t.data, 0.3, 1);
    else if (name.endsWith('.bias')) rng.fillNormal(t.data, 0.3);
  }
  return model;
}

/** Which elements of a tensor of `n` to check: all when small, else a spread-out random subset. */
function sampleIndices(rng: Rng, n: number): number[] {
  if (n <= SAMPLES) return Array.from({ length: n }, (_, i) => i);
  return rng.shuffle(Array.from({ length: n }, (_, i) => i)).slice(0, SAMPLES).sort((a, b) => a - b);
}

describe('model gradients vs finite differences', () => {
  CASES.forEach(({ name, raw, expect, input }, ci) => {
    it(name, () => {
      const model = build(raw, 21 + ci);
      const names = [...model.namedParameters()].map(([n]) => n);
      for (const n of expect) assert.ok(names.includes(n), `${name}: the model lacks ${n}, so the case does not cover it`);

      const B = 2;
      const T = 6;
      const rng = new Rng(50 + ci);
      const ids = Int32Array.from({ length: B * T }, () => rng.int(V));
      const labels = Int32Array.from({ length: B * T }, () => rng.int(V));
      // Ignored labels: the last token of each row, one in the middle, and any padding.
      for (let b = 0; b < B; b++) labels[b * T + T - 1] = -100;
      labels[T + 2] = -100;
      const extra = input(B, T);
      if (extra.keyMask) extra.keyMask.forEach((m, i) => { if (m === 0) labels[i] = -100; });
      const batch: DecoderInput = { ids, batch: B, length: T, ...extra };
      const loss = () => crossEntropy(reshape(model.forward(batch), [B * T, V]), labels);

      model.zeroGrad();
      const l = loss();
      assert.ok(Number.isFinite(l.item()), 'loss is not finite');
      l.backward();

      const failures: string[] = [];
      for (const [pname, p] of model.namedParameters()) {
        if (!p.grad) {
          failures.push(`${pname}: backward() left no gradient`);
          continue;
        }
        const analytic = p.grad.data;
        const idx = sampleIndices(rng, p.size);
        const numeric = idx.map((i) => {
          const x0 = p.data[i];
          const plus = Math.fround(x0 + EPS);
          const minus = Math.fround(x0 - EPS);
          p.data[i] = plus;
          const fPlus = noGrad(loss).item();
          p.data[i] = minus;
          const fMinus = noGrad(loss).item();
          p.data[i] = x0;
          return (fPlus - fMinus) / (plus - minus);
        });
        const scale = Math.max(...numeric.map(Math.abs));
        if (!(scale > 1e-3)) {
          failures.push(`${pname}: largest finite-difference gradient ${scale.toExponential(2)} is too small for the check to mean anything`);
          continue;
        }
        let worst = '';
        let worstRatio = 0;
        idx.forEach((i, j) => {
          const bound = RTOL * Math.abs(numeric[j]) + ATOL_FRAC * scale + ATOL;
          const ratio = Math.abs(analytic[i] - numeric[j]) / bound;
          if (!(ratio <= worstRatio)) {
            worstRatio = Number.isNaN(ratio) ? Infinity : ratio;
            worst = `element ${i}: analytic ${analytic[i].toPrecision(5)} vs numeric ${numeric[j].toPrecision(5)}`;
          }
        });
        if (worstRatio > 1) failures.push(`${pname} [${p.shape.join(', ')}]: ${worst} (${worstRatio.toFixed(1)}× the tolerance)`);
      }
      assert.equal(failures.length, 0, `${name}: gradient check failed\n  ${failures.join('\n  ')}`);
    });
  });
});
