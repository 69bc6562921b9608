/**
 * The decoder against an independent float64 reference of Hugging Face's equations
 * (test/helpers/reference-decoder.ts), and its inference paths against each other: padding,
 * the KV cache, and packed sequences.
 *
 * Weights are drawn with std 0.2, and norm weights and biases are random too, so that a missing
 * bias, a norm weight left out, a wrong rotary layout or a wrong head grouping moves the logits
 * far beyond the tolerance (the "can fail" checks below prove that for this init).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { parseDecoderConfig } from '../src/models/config.js';
import { CausalLM } from '../src/models/decoder.js';
import { initializeWeights } from '../src/models/init.js';
import { KVCache } from '../src/models/kv-cache.js';
import { PRESETS } from '../src/models/presets.js';
import { Rng, noGrad } from '../src/tensor/index.js';
import type { Tensor } from '../src/tensor/index.js';
import { referenceForward } from './helpers/reference-decoder.js';
import type { ReferenceWeight } from './helpers/reference-decoder.js';

const V = 97;
/** Engine (float32) vs reference (float64): max |a − r| / max |r|. */
const REF_TOL = 1e-4;
/** Engine path vs engine path (same float32 arithmetic, different grouping). */
const SELF_TOL = 1e-5;

interface Case {
  name: string;
  raw: Record<string, unknown>;
}

const CASES: Case[] = [
  { name: 'tiny (qwen2, tied, q/k/v bias)', raw: { ...PRESETS.tiny.config, vocab_size: V } },
  { name: 'tiny-llama (llama3 rope scaling, untied)', raw: { ...PRESETS['tiny-llama'].config, vocab_size: V } },
  { name: 'tiny-qwen3 (q/k norms, head_dim 32)', raw: { ...PRESETS['tiny-qwen3'].config, vocab_size: V } },
  {
    name: 'tiny-llama with attention_bias and mlp_bias',
    raw: { ...PRESETS['tiny-llama'].config, vocab_size: V, attention_bias: true, mlp_bias: true },
  },
];

interface Built {
  raw: Record<string, unknown>;
  model: CausalLM;
  weights: Map<string, Tensor>;
}

function build(raw: Record<string, unknown>, seed: number): Built {
  const model = new CausalLM(parseDecoderConfig(raw));
  initializeWeights(model, seed, 0.2);
  const rng = new Rng(seed + 1000);
  for (const [name, t] of model.namedParameters()) {
    if (name.endsWith('norm.weight')) rng.fillNormal(t.data, 0.3, 1);
    else if (name.endsWith('.bias')) rng.fillNormal(t.data, 0.3);
  }
  return { raw, model, weights: new Map(model.namedParameters()) };
}

function randomIds(rng: Rng, n: number): number[] {
  return Array.from({ length: n }, () => rng.int(V));
}

/** max |a − r| / max |r| over the given rows ([rows, V] each). */
function relErr(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  assert.equal(actual.length, expected.length, 'compared arrays differ in length');
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    // NaN must fail, so compare with !(<=).
    if (!(d <= diff)) diff = Number.isNaN(d) ? Infinity : d;
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return diff / scale;
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  const err = relErr(actual, expected);
  assert.ok(err <= tol, `${what}: relative error ${err.toExponential(3)} > ${tol}`);
}

/** Rows [t0, t1) of batch row b of logits [B, T, V]. */
function rows(logits: Tensor, b: number, t0: number, t1: number): Float32Array {
  const T = logits.shape[1];
  return logits.data.subarray((b * T + t0) * V, (b * T + t1) * V);
}

function forward(model: CausalLM, input: Parameters<CausalLM['forward']>[0]): Tensor {
  return noGrad(() => model.forward(input));
}

describe('decoder vs the float64 reference', () => {
  CASES.forEach(({ name, raw }, ci) => {
    describe(name, () => {
      const built = build(raw, 11 + ci);
      const { model, weights } = built;
      const rng = new Rng(100 + ci);
      const B = 2;
      const T = 7;
      const seqs = [randomIds(rng, T), randomIds(rng, T)];

      it('has exactly the parameters the reference reads, under Hugging Face names', () => {
        const { used } = referenceForward(raw, weights, seqs[0]);
        assert.deepEqual([...weights.keys()].sort(), [...used].sort());
      });

      it('gives the reference logits on a batch of 2×7', () => {
        const logits = forward(model, { ids: Int32Array.from(seqs.flat()), batch: B, length: T });
        assert.deepEqual(logits.shape, [B, T, V]);
        for (let b = 0; b < B; b++) {
          const ref = referenceForward(raw, weights, seqs[b]).logits;
          let scale = 0;
          for (const x of ref) scale = Math.max(scale, Math.abs(x));
          assert.ok(scale > 1, `logits too small (${scale}) for the check to mean anything`);
          assertClose(rows(logits, b, 0, T), ref, REF_TOL, `row ${b}`);
        }
      });

      it('gives the reference logits at explicit, large positions', () => {
        // Positions past the llama3 scaling's wavelengths make its low-frequency branch count.
        const positions = [
          [200, 201, 202, 203, 204, 205, 206],
          [37, 41, 90, 150, 151, 300, 511],
        ];
        const logits = forward(model, { ids: Int32Array.from(seqs.flat()), batch: B, length: T, positions: Int32Array.from(positions.flat()) });
        for (let b = 0; b < B; b++) {
          assertClose(rows(logits, b, 0, T), referenceForward(raw, weights, seqs[b], positions[b]).logits, REF_TOL, `row ${b}`);
        }
      });

      it('left padding: real positions equal the reference on the unpadded sequence', () => {
        const pad = [3, 0];
        const ids = new Int32Array(B * T);
        const keyMask = new Uint8Array(B * T);
        const positions = new Int32Array(B * T);
        for (let b = 0; b < B; b++) {
          for (let t = 0; t < T; t++) {
            const real = t >= pad[b];
            // Padding ids are arbitrary tokens, so a leak through the mask would show.
            ids[b * T + t] = real ? seqs[b][t] : (5 + 13 * t) % V;
            keyMask[b * T + t] = real ? 1 : 0;
            // transformers: position_ids = cumsum(mask) − 1, padding set to 1.
            positions[b * T + t] = real ? t - pad[b] : 1;
          }
        }
        const logits = forward(model, { ids, batch: B, length: T, keyMask, positions });
        for (const x of logits.data) assert.ok(Number.isFinite(x), 'padding produced a non-finite logit');
        for (let b = 0; b < B; b++) {
          const ref = referenceForward(raw, weights, seqs[b].slice(pad[b])).logits;
          assertClose(rows(logits, b, pad[b], T), ref, REF_TOL, `row ${b} (padding ${pad[b]})`);
        }
      });

      it('packed segments equal separate runs', () => {
        // Row 0: [3 | 4] tokens; row 1: [5 | 2].
        const cuts = [3, 5];
        const segments = new Int32Array(B * T);
        const positions = new Int32Array(B * T);
        for (let b = 0; b < B; b++) {
          for (let t = 0; t < T; t++) {
            const second = t >= cuts[b];
            segments[b * T + t] = second ? 7 + b : 2 + b;
            positions[b * T + t] = second ? t - cuts[b] : t;
          }
        }
        const ids = Int32Array.from(seqs.flat());
        const packed = forward(model, { ids, batch: B, length: T, positions, segments });
        for (let b = 0; b < B; b++) {
          for (const [t0, t1] of [[0, cuts[b]], [cuts[b], T]]) {
            const part = seqs[b].slice(t0, t1);
            assertClose(rows(packed, b, t0, t1), referenceForward(raw, weights, part).logits, REF_TOL, `row ${b} tokens ${t0}..${t1}`);
            const alone = forward(model, { ids: Int32Array.from(part), batch: 1, length: part.length });
            assertClose(rows(packed, b, t0, t1), alone.data, SELF_TOL, `row ${b} tokens ${t0}..${t1} vs a separate engine run`);
          }
        }
      });

      it('KV cache: prefill 4 then one token at a time equals the full forward', () => {
        const ids = Int32Array.from(seqs.flat());
        const full = forward(model, { ids, batch: B, length: T });
        const cache = new KVCache(model.config, B, 16);
        const step = (t0: number, t1: number): Tensor => {
          const n = t1 - t0;
          const part = new Int32Array(B * n);
          for (let b = 0; b < B; b++) part.set(seqs[b].slice(t0, t1), b * n);
          return forward(model, { ids: part, batch: B, length: n, cache });
        };
        const pre = step(0, 4);
        assert.equal(cache.length, 4);
        for (let b = 0; b < B; b++) assertClose(rows(pre, b, 0, 4), rows(full, b, 0, 4), SELF_TOL, `prefill row ${b}`);
        for (let t = 4; t < T; t++) {
          const one = step(t, t + 1);
          assert.equal(cache.length, t + 1);
          for (let b = 0; b < B; b++) assertClose(rows(one, b, 0, 1), rows(full, b, t, t + 1), SELF_TOL, `step ${t} row ${b}`);
        }
      });

      it('KV cache with left padding equals the padded full forward', () => {
        const pad = [2, 0];
        const ids = new Int32Array(B * T);
        const mask = new Uint8Array(B * T);
        const positions = new Int32Array(B * T);
        for (let b = 0; b < B; b++) {
          for (let t = 0; t < T; t++) {
            const real = t >= pad[b];
            ids[b * T + t] = real ? seqs[b][t] : 3;
            mask[b * T + t] = real ? 1 : 0;
            positions[b * T + t] = real ? t - pad[b] : 1;
          }
        }
        const full = forward(model, { ids, batch: B, length: T, keyMask: mask, positions });
        const cache = new KVCache(model.config, B, 8);
        /** Columns [from, to) of every batch row of a [B, T] array. */
        const cols = <A extends Int32Array | Uint8Array>(a: A, from: number, to: number): A => {
          const w = to - from;
          const out = a.slice(0, B * w) as A;
          for (let b = 0; b < B; b++) out.set(a.subarray(b * T + from, b * T + to), b * w);
          return out;
        };
        // Each call's mask covers every key so far, [B, cached + new]; ids and positions only the new ones.
        const run = (t0: number, t1: number): Tensor =>
          forward(model, {
            ids: cols(ids, t0, t1), batch: B, length: t1 - t0, positions: cols(positions, t0, t1), keyMask: cols(mask, 0, t1), cache,
          });
        const pre = run(0, 4);
        for (let b = 0; b < B; b++) assertClose(rows(pre, b, pad[b], 4), rows(full, b, pad[b], 4), SELF_TOL, `prefill row ${b}`);
        for (let t = 4; t < T; t++) {
          const one = run(t, t + 1);
          for (let b = 0; b < B; b++) assertClose(rows(one, b, 0, 1), rows(full, b, t, t + 1), SELF_TOL, `step ${t} row ${b}`);
        }
      });
    });
  });

  it('can fail: biases, norm weights, q/k norms and rope scaling each move the logits far beyond the tolerance', () => {
    const rng = new Rng(7);
    const ids = randomIds(rng, 7);
    // Spread-out positions: rotary attention sees only differences between positions.
    const positions = [0, 37, 90, 150, 300, 511, 900];
    const changed = (raw: Record<string, unknown>, weights: Map<string, ReferenceWeight>, edit: (name: string) => number | null): number => {
      const base = referenceForward(raw, weights, ids, positions).logits;
      const edited = new Map<string, ReferenceWeight>();
      for (const [name, w] of weights) {
        const v = edit(name);
        edited.set(name, v === null ? w : { shape: w.shape, data: new Float64Array(w.data.length).fill(v) });
      }
      return relErr(referenceForward(raw, edited, ids, positions).logits, base);
    };
    const qwen2 = build(CASES[0].raw, 1);
    const llama = build(CASES[3].raw, 2);
    const qwen3 = build(CASES[2].raw, 3);
    const big = 100 * REF_TOL;
    const checks: Array<[string, number]> = [
      ['qwen2 q/k/v biases', changed(qwen2.raw, qwen2.weights, (n) => (n.endsWith('.bias') ? 0 : null))],
      ['llama o_proj bias', changed(llama.raw, llama.weights, (n) => (n.endsWith('o_proj.bias') ? 0 : null))],
      ['llama mlp biases', changed(llama.raw, llama.weights, (n) => (n.includes('mlp') && n.endsWith('.bias') ? 0 : null))],
      ['input_layernorm weights', changed(qwen2.raw, qwen2.weights, (n) => (n.endsWith('input_layernorm.weight') ? 1 : null))],
      ['final norm weight', changed(qwen2.raw, qwen2.weights, (n) => (n === 'model.norm.weight' ? 1 : null))],
      ['qwen3 q/k norm weights', changed(qwen3.raw, qwen3.weights, (n) => (n.endsWith('q_norm.weight') || n.endsWith('k_norm.weight') ? 1 : null))],
    ];
    const noScaling = { ...llama.raw, rope_scaling: null };
    const withScaling = referenceForward(llama.raw, llama.weights, ids, positions).logits;
    checks.push(['llama3 rope scaling', relErr(referenceForward(noScaling, llama.weights, ids, positions).logits, withScaling)]);
    for (const [what, err] of checks) assert.ok(err > big, `${what} changes the logits by only ${err.toExponential(3)}`);
  });
});
