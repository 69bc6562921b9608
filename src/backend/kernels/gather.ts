/** out[i, :] = table[ids[i], :] for a table with rows of length `c`. */
export function gatherRows(table: Float32Array, c: number, ids: Int32Array, out: Float32Array): void {
  const rows = table.length / c;
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (id < 0 || id >= rows) throw new RangeError(`token id ${id} is outside the vocabulary (0..${rows - 1})`);
    out.set(table.subarray(id * c, id * c + c), i * c);
  }
}

/** The gather's backward: into[ids[i], :] += grad[i, :]. */
export function scatterAddRows(grad: Float32Array, c: number, ids: Int32Array, into: Float32Array): void {
  for (let i = 0; i < ids.length; i++) {
    const o = ids[i] * c;
    const g = i * c;
    for (let j = 0; j < c; j++) into[o + j] += grad[g + j];
  }
}
