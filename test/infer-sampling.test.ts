/**
 * Token sampling: greedy, temperature, top-k, top-p, seeds and the repetition penalty, checked on
 * logits whose probabilities are known exactly.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { GREEDY, applyRepetitionPenalty, argmax, sampleToken } from '../src/infer/sampling.js';
import type { SamplingOptions } from '../src/infer/sampling.js';
import { Rng } from '../src/tensor/random.js';

/** Logits whose softmax is exactly `probs` (up to float32 rounding). */
function logitsOf(probs: readonly number[]): Float32Array {
  return Float32Array.from(probs, (p) => Math.log(p));
}

function softmax(logits: Float32Array, temperature = 1): number[] {
  const max = Math.max(...logits);
  const e = Array.from(logits, (l) => Math.exp((l - max) / temperature));
  const total = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / total);
}

function opts(o: Partial<SamplingOptions>): SamplingOptions {
  return { ...GREEDY, temperature: 1, ...o };
}

/** How often each token comes out of `draws` samples (fresh logits each time: sampling may change them). */
function histogram(logits: Float32Array, o: SamplingOptions, draws: number, seed: number): number[] {
  const rng = new Rng(seed);
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < draws; i++) counts[sampleToken(Float32Array.from(logits), o, rng)]++;
  return counts;
}

/** Pearson's χ² of observed counts against expected probabilities (cells with p = 0 must be empty). */
function chiSquare(counts: number[], probs: number[]): number {
  const n = counts.reduce((a, b) => a + b, 0);
  let chi = 0;
  for (let i = 0; i < counts.length; i++) {
    if (probs[i] === 0) {
      assert.equal(counts[i], 0, `token ${i} has probability 0 but came out ${counts[i]} times`);
      continue;
    }
    chi += (counts[i] - n * probs[i]) ** 2 / (n * probs[i]);
  }
  return chi;
}

/** χ² critical values at p = 0.001 by degrees of freedom. */
const CHI2_999: Record<number, number> = { 1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 7: 24.32 };

function randomLogits(rng: Rng, n: number, scale = 2): Float32Array {
  const x = new Float32Array(n);
  return rng.fillNormal(x, scale);
}

describe('argmax and greedy', () => {
  it('argmax returns the first index of the largest value', () => {
    assert.equal(argmax(Float32Array.of(1, 5, -2, 5, 3)), 1);
    assert.equal(argmax(Float32Array.of(-3, -1, -2)), 1);
    assert.equal(argmax(Float32Array.of(7)), 0);
  });

  it('temperature 0 is argmax, whatever top-k and top-p say and whatever the seed', () => {
    const gen = new Rng(11);
    for (let trial = 0; trial < 50; trial++) {
      const logits = randomLogits(gen, 40);
      const best = argmax(logits);
      for (const o of [GREEDY, opts({ temperature: 0, topK: 5, topP: 0.3 })]) {
        assert.equal(sampleToken(Float32Array.from(logits), o, new Rng(trial)), best);
      }
    }
  });

  it('top-k 1 is argmax at any temperature', () => {
    const gen = new Rng(12);
    for (let trial = 0; trial < 50; trial++) {
      const logits = randomLogits(gen, 64, 0.5);
      const best = argmax(logits);
      for (const temperature of [0.3, 1, 5, 100]) {
        assert.equal(sampleToken(Float32Array.from(logits), opts({ temperature, topK: 1 }), new Rng(trial)), best);
      }
    }
  });
});

describe('top-k', () => {
  it('never returns a token outside the k largest (many seeds, several k)', () => {
    const gen = new Rng(13);
    for (let trial = 0; trial < 40; trial++) {
      const logits = randomLogits(gen, 200, 1);
      const ranked = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
      for (const k of [2, 5, 17]) {
        const allowed = new Set(ranked.slice(0, k));
        const rng = new Rng(1000 + trial);
        const seen = new Set<number>();
        for (let i = 0; i < 200; i++) {
          const t = sampleToken(Float32Array.from(logits), opts({ temperature: 3, topK: k }), rng);
          assert.ok(allowed.has(t), `top-k ${k} returned token ${t}, outside the ${k} largest`);
          seen.add(t);
        }
        // At temperature 3 every one of the k survivors is likely: the filter must not keep fewer.
        if (k <= 5) assert.equal(seen.size, k, `top-k ${k} only ever returned ${seen.size} distinct tokens`);
      }
    }
  });

  it('samples the k survivors in proportion to their renormalised probabilities', () => {
    const logits = logitsOf([0.1, 0.4, 0.05, 0.25, 0.2]);
    const counts = histogram(logits, opts({ topK: 3 }), 20_000, 5);
    const kept = 0.4 + 0.25 + 0.2;
    const expected = [0, 0.4 / kept, 0, 0.25 / kept, 0.2 / kept];
    assert.ok(chiSquare(counts, expected) < CHI2_999[2], `counts ${counts}`);
  });
});

describe('top-p', () => {
  // Probabilities 0.5, 0.3, 0.15, 0.05: cumulative 0.5, 0.8, 0.95, 1. Thresholds sit away from
  // those sums, where float rounding could tip either way (0.8 is exactly 0.5 + 0.3).
  const probs = [0.5, 0.3, 0.15, 0.05];
  // Shuffled so the order of the vocabulary is not the order of probability.
  const order = [2, 0, 3, 1];
  const logits = new Float32Array(4);
  order.forEach((token, rank) => (logits[token] = Math.log(probs[rank])));
  const cases: Array<[number, number[]]> = [
    [0.3, [2]],
    [0.49, [2]],
    [0.7, [2, 0]],
    [0.79, [2, 0]],
    [0.81, [2, 0, 3]],
    [0.94, [2, 0, 3]],
    [0.96, [2, 0, 3, 1]],
    [1, [2, 0, 3, 1]],
  ];
  for (const [topP, kept] of cases) {
    it(`top-p ${topP} keeps exactly the ${kept.length} most likely token(s)`, () => {
      const counts = histogram(logits, opts({ topP }), 20_000, 21);
      const mass = kept.reduce((s, t) => s + probs[order.indexOf(t)], 0);
      const expected = [0, 1, 2, 3].map((t) => (kept.includes(t) ? probs[order.indexOf(t)] / mass : 0));
      for (let t = 0; t < 4; t++) {
        if (kept.includes(t)) assert.ok(counts[t] > 0, `top-p ${topP} never returned token ${t}: ${counts}`);
        else assert.equal(counts[t], 0, `top-p ${topP} returned token ${t}: ${counts}`);
      }
      if (kept.length > 1) assert.ok(chiSquare(counts, expected) < CHI2_999[kept.length - 1], `counts ${counts}`);
    });
  }

  it('applies after the temperature (p of the tempered distribution), as transformers does', () => {
    // At temperature 2 the probabilities become ∝ sqrt(p): 0.379, 0.294, 0.208, 0.120. Top-p 0.7
    // then needs three tokens (0.379 + 0.294 = 0.673 < 0.7) where at temperature 1 two sufficed.
    const tempered = softmax(logits, 2);
    const byRank = order.map((t) => tempered[t]);
    assert.ok(byRank[0] + byRank[1] < 0.7 && byRank[0] + byRank[1] + byRank[2] > 0.7);
    const counts = histogram(logits, opts({ temperature: 2, topP: 0.7 }), 5_000, 8);
    assert.deepEqual(counts.map((c) => c > 0), [true, false, true, true]);
  });

  it('top-k and top-p together: top-k first, then top-p over the renormalised survivors', () => {
    // top-k 3 leaves 0.5, 0.3, 0.15 → renormalised 0.526, 0.316, 0.158. Top-p 0.82 then keeps
    // two (0.842 ≥ 0.82), where top-p 0.82 over all four keeps three (0.8 < 0.82); top-p 0.85
    // keeps all three survivors (0.842 < 0.85).
    const alone = histogram(logits, opts({ topP: 0.82 }), 5_000, 9);
    assert.deepEqual(alone.map((c) => c > 0), [true, false, true, true]);
    const two = histogram(logits, opts({ topK: 3, topP: 0.82 }), 5_000, 9);
    assert.deepEqual(two.map((c) => c > 0), [true, false, true, false]);
    const three = histogram(logits, opts({ topK: 3, topP: 0.85 }), 5_000, 9);
    assert.deepEqual(three.map((c) => c > 0), [true, false, true, true]);
  });
});

describe('temperature', () => {
  it('at temperature 1 the empirical distribution matches the softmax (χ², 40 000 draws)', () => {
    const logits = Float32Array.of(1.2, -0.3, 0.4, 2.0, -1.5, 0.0);
    const counts = histogram(logits, opts({}), 40_000, 3);
    const chi = chiSquare(counts, softmax(logits));
    assert.ok(chi < CHI2_999[5], `χ² ${chi.toFixed(2)} over 5 degrees of freedom; counts ${counts}`);
  });

  it('at temperature 0.5 and 2 it matches softmax(logits / T), and not softmax(logits)', () => {
    const logits = Float32Array.of(1.2, -0.3, 0.4, 2.0, -1.5, 0.0);
    for (const temperature of [0.5, 2]) {
      const counts = histogram(logits, opts({ temperature }), 40_000, 4);
      const chi = chiSquare(counts, softmax(logits, temperature));
      assert.ok(chi < CHI2_999[5], `T=${temperature}: χ² ${chi.toFixed(2)}; counts ${counts}`);
      // The test can fail: the untempered distribution is far outside the tolerance.
      assert.ok(chiSquare(counts, softmax(logits)) > 100 * CHI2_999[5]);
    }
  });

  it('handles huge logits without overflow', () => {
    const logits = Float32Array.of(1000, 999, -1000);
    const counts = histogram(logits, opts({}), 10_000, 6);
    assert.equal(counts[2], 0);
    assert.ok(chiSquare(counts, softmax(logits)) < CHI2_999[1], `counts ${counts}`);
  });
});

describe('seeds', () => {
  const logits = randomLogits(new Rng(99), 500, 1);
  const draw = (seed: number): number[] => {
    const rng = new Rng(seed);
    return Array.from({ length: 64 }, () => sampleToken(Float32Array.from(logits), opts({ temperature: 1.5, topP: 0.95 }), rng));
  };

  it('the same seed repeats the sequence exactly', () => {
    assert.deepEqual(draw(42), draw(42));
  });

  it('another seed gives another sequence', () => {
    const a = draw(42);
    const b = draw(43);
    assert.notDeepEqual(a, b);
    // Not merely one token apart: the streams are independent.
    assert.ok(a.filter((t, i) => t !== b[i]).length > 32);
  });
});

describe('repetition penalty', () => {
  it('divides positive logits, multiplies negative ones, each seen token once', () => {
    const logits = Float32Array.of(2, -2, 1, 0.5, -1, 0);
    applyRepetitionPenalty(logits, [0, 1, 0, 0, 1, 5], 2);
    // 0 and 1 were seen three and two times: penalised once. 5 is 0: stays 0.
    assert.deepEqual([...logits], [1, -4, 1, 0.5, -1, 0]);
  });

  it('penalty 1 changes nothing; a penalty below 1 favours seen tokens, as in transformers', () => {
    const logits = Float32Array.of(2, -2, 1);
    applyRepetitionPenalty(logits, [0, 1], 1);
    assert.deepEqual([...logits], [2, -2, 1]);
    applyRepetitionPenalty(logits, [0, 1], 0.5);
    assert.deepEqual([...logits], [4, -1, 1]);
  });

  it('is applied before choosing: greedy picks another token once the best was seen', () => {
    const logits = Float32Array.of(3, 2.5, -1);
    assert.equal(sampleToken(Float32Array.from(logits), GREEDY, new Rng(0), [0]), 0);
    assert.equal(sampleToken(Float32Array.from(logits), { ...GREEDY, repetitionPenalty: 1.3 }, new Rng(0), [0]), 1);
    // Penalty 4 with 0 and 2 seen: [0.75, 2.5, -4].
    assert.equal(sampleToken(Float32Array.from(logits), { ...GREEDY, repetitionPenalty: 4 }, new Rng(0), [0, 2]), 1);
  });

  it('with a temperature, samples softmax(penalised logits / T)', () => {
    // [2, 1.5] with token 0 seen, penalty 2 → [1, 1.5]; / 0.5 → [2, 3]: p(1) = e / (1 + e) = 0.731
    // (without the penalty it would be 1 / (1 + e) = 0.269).
    const logits = Float32Array.of(2, 1.5);
    const rng = new Rng(17);
    const counts = [0, 0];
    for (let i = 0; i < 20_000; i++) counts[sampleToken(Float32Array.from(logits), opts({ temperature: 0.5, repetitionPenalty: 2 }), rng, [0])]++;
    const p1 = Math.exp(1) / (1 + Math.exp(1));
    assert.ok(chiSquare(counts, [1 - p1, p1]) < CHI2_999[1], `counts ${counts}`);
  });
});
