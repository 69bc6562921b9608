/**
 * eˣ for the element-wise kernels: about twice as fast as `Math.exp` in V8 (≈10 ns against ≈17
 * ns) and accurate to a few parts in 10⁹, where float32 needs 6 in 10⁸. It is 2ᵏ from a table
 * times a degree-7 polynomial for e^f, |f| ≤ ln2/2. Softmax, SwiGLU and the vocabulary
 * log-sum-exp spend most of their time on exponentials.
 */
const LOG2E = 1.4426950408889634;
const LN2 = 0.6931471805599453;
const POW2 = new Float64Array(2047);
for (let i = 0; i < POW2.length; i++) POW2[i] = 2 ** (i - 1022);

/** Outside the table: overflow, underflow (−∞ from masked scores) and NaN. */
function outOfRange(x: number): number {
  return x === x ? (x > 0 ? Infinity : 0) : x;
}

export function fastExp(x: number): number {
  const t = x * LOG2E;
  if (!(t > -1021 && t < 1023)) return outOfRange(x);
  const k = Math.floor(t + 0.5);
  const f = (t - k) * LN2;
  const p =
    1 + f * (1 + f * (0.5 + f * (0.16666666666666666 + f * (0.041666666666666664 + f * (0.008333333333333333 + f * (0.001388888888888889 + f * 0.0001984126984126984))))));
  return p * POW2[(k + 1022) | 0];
}
