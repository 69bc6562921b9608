/**
 * Numpy-style broadcasting for binary element-wise kernels: shapes align on the right, a
 * dimension of 1 (or a missing one) repeats.
 */
export function broadcastShape(a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new Error(`cannot broadcast shapes [${a.join(', ')}] and [${b.join(', ')}]`);
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Strides of `shape` seen through `outShape`, 0 where the dimension repeats. */
export function broadcastStrides(shape: readonly number[], outShape: readonly number[]): number[] {
  const n = outShape.length;
  const strides = new Array<number>(n).fill(0);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    const o = n - shape.length + i;
    strides[o] = shape[i] === 1 && outShape[o] !== 1 ? 0 : s;
    s *= shape[i];
  }
  return strides;
}

/**
 * Visits every output index with the matching flat offsets into a and b.
 * The last dimension is walked in a tight loop, the rest by an odometer.
 */
export function forEachBroadcast(
  outShape: readonly number[],
  aStrides: readonly number[],
  bStrides: readonly number[],
  visit: (o: number, ia: number, ib: number, n: number, sa: number, sb: number) => void,
): void {
  const nd = outShape.length;
  if (nd === 0) {
    visit(0, 0, 0, 1, 0, 0);
    return;
  }
  const inner = outShape[nd - 1];
  const sa = aStrides[nd - 1];
  const sb = bStrides[nd - 1];
  let outer = 1;
  for (let i = 0; i < nd - 1; i++) outer *= outShape[i];
  const idx = new Array<number>(nd - 1).fill(0);
  let ia = 0;
  let ib = 0;
  for (let r = 0; r < outer; r++) {
    visit(r * inner, ia, ib, inner, sa, sb);
    for (let d = nd - 2; d >= 0; d--) {
      idx[d]++;
      ia += aStrides[d];
      ib += bStrides[d];
      if (idx[d] < outShape[d]) break;
      ia -= aStrides[d] * outShape[d];
      ib -= bStrides[d] * outShape[d];
      idx[d] = 0;
    }
  }
}
