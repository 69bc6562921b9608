/**
 * The chunked output-layer log-probabilities: the same values and gradients as the unfused
 * linear + tokenLogprobs, on both paths (input gradient precomputed in the forward pass, weight
 * gradient recomputed chunk by chunk), including chunks smaller than the batch.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor, linear, linearTokenLogprobs, mul, noGrad, tokenLogprobs } from '../src/tensor/index.js';
import { logitChunkRows } from '../src/backend/kernels/linear-logprobs.js';
import { Rng, assertGradcheck, randn } from './helpers/gradcheck.js';

const targets = Int32Array.from([3, -100, 0, 6, 6, 1, -100]);

describe('linearTokenLogprobs', () => {
  it('equals linear + tokenLogprobs, ignored rows giving 0', () => {
    const rng = new Rng(3);
    const h = randn(rng, [7, 5]);
    const w = randn(rng, [9, 5]);
    const fused = noGrad(() => linearTokenLogprobs(h, w, targets));
    const plain = noGrad(() => tokenLogprobs(linear(h, w), targets));
    for (let i = 0; i < 7; i++) assert.ok(Math.abs(fused.data[i] - plain.data[i]) < 1e-5, `row ${i}: ${fused.data[i]} vs ${plain.data[i]}`);
    assert.equal(fused.data[1], 0);
  });

  it('has the finite-difference gradient for the input and the weight', () => {
    const rng = new Rng(4);
    const upstream = randn(rng, [7]);
    assertGradcheck('linearTokenLogprobs', (h, w) => mul(linearTokenLogprobs(h, w, targets), upstream), [randn(rng, [7, 5], true), randn(rng, [9, 5], true)]);
  });

  it('has the finite-difference gradient when only the input trains (the LoRA case)', () => {
    const rng = new Rng(5);
    const upstream = randn(rng, [7]);
    const w = randn(rng, [9, 5]);
    assertGradcheck('linearTokenLogprobs (frozen W)', (h) => mul(linearTokenLogprobs(h, w, targets), upstream), [randn(rng, [7, 5], true)]);
  });

  it('splits a large vocabulary into chunks of rows', () => {
    // Qwen's and Llama 3's vocabularies: whole multiples of 64 rows, ~160 MB of logits at most.
    assert.equal(logitChunkRows(151936, 1024), 256);
    assert.equal(logitChunkRows(128256, 1024), 320);
    assert.equal(logitChunkRows(10, 7), 7);
    // A vocabulary so large that each chunk holds one row still gives the plain result.
    const rng = new Rng(6);
    const V = 40 * 1024 * 1024 + 1;
    assert.equal(logitChunkRows(V, 3), 1);
    const h = new Tensor(new Float32Array([0.5, -0.25, 1, 2, 0, -1]), [3, 2], true);
    const w = randn(rng, [40, 2]);
    const t = Int32Array.from([1, 39, 7]);
    const y = linearTokenLogprobs(h, w, t);
    const ref = tokenLogprobs(linear(new Tensor(h.data, [3, 2]), w), t);
    for (let i = 0; i < 3; i++) assert.ok(Math.abs(y.data[i] - ref.data[i]) < 1e-5);
  });
});
