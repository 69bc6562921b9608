import { simd } from '../wasm/simd.js';
import { broadcastStrides, forEachBroadcast } from './broadcast.js';

/** out = a + b with broadcasting. */
export function addForward(a: Float32Array, aShape: readonly number[], b: Float32Array, bShape: readonly number[], out: Float32Array, outShape: readonly number[]): void {
  if (a.length === out.length && b.length === out.length) {
    const vector = simd();
    if (vector) return vector.add(a, b, out);
    for (let i = 0; i < out.length; i++) out[i] = a[i] + b[i];
    return;
  }
  forEachBroadcast(outShape, broadcastStrides(aShape, outShape), broadcastStrides(bShape, outShape), (o, ia, ib, n, sa, sb) => {
    for (let j = 0; j < n; j++) out[o + j] = a[ia + j * sa] + b[ib + j * sb];
  });
}

/** out = a * b with broadcasting. */
export function mulForward(a: Float32Array, aShape: readonly number[], b: Float32Array, bShape: readonly number[], out: Float32Array, outShape: readonly number[]): void {
  if (a.length === out.length && b.length === out.length) {
    for (let i = 0; i < out.length; i++) out[i] = a[i] * b[i];
    return;
  }
  forEachBroadcast(outShape, broadcastStrides(aShape, outShape), broadcastStrides(bShape, outShape), (o, ia, ib, n, sa, sb) => {
    for (let j = 0; j < n; j++) out[o + j] = a[ia + j * sa] * b[ib + j * sb];
  });
}

/** Sums `grad` (shaped like the output) down into `into` (shaped like a broadcast input). */
export function reduceToShape(grad: Float32Array, outShape: readonly number[], into: Float32Array, shape: readonly number[]): void {
  if (into.length === grad.length) return axpy(1, grad, into);
  const zero = new Array<number>(outShape.length).fill(0);
  forEachBroadcast(outShape, broadcastStrides(shape, outShape), zero, (o, ia, _ib, n, sa) => {
    if (sa === 0) {
      let s = 0;
      for (let j = 0; j < n; j++) s += grad[o + j];
      into[ia] += s;
    } else {
      for (let j = 0; j < n; j++) into[ia + j * sa] += grad[o + j];
    }
  });
}

/** into += grad * other, where `other` is broadcast to the output and the sum reduces to `into`'s shape. */
export function mulBackward(
  grad: Float32Array,
  outShape: readonly number[],
  other: Float32Array,
  otherShape: readonly number[],
  into: Float32Array,
  shape: readonly number[],
): void {
  if (into.length === grad.length && other.length === grad.length) {
    for (let i = 0; i < grad.length; i++) into[i] += grad[i] * other[i];
    return;
  }
  forEachBroadcast(outShape, broadcastStrides(shape, outShape), broadcastStrides(otherShape, outShape), (o, ia, ib, n, sa, sb) => {
    for (let j = 0; j < n; j++) into[ia + j * sa] += grad[o + j] * other[ib + j * sb];
  });
}

export function scaleInto(x: Float32Array, s: number, out: Float32Array): void {
  for (let i = 0; i < x.length; i++) out[i] = x[i] * s;
}

export function axpy(alpha: number, x: Float32Array, y: Float32Array): void {
  const vector = simd();
  if (vector) return vector.axpy(alpha, x, y);
  for (let i = 0; i < x.length; i++) y[i] += alpha * x[i];
}
