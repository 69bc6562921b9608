/**
 * Where a backward kernel puts an input's gradient: `beta` 0 when `grad` is a new buffer the
 * kernel overwrites (every element; it may hold anything), 1 when it adds to what is there.
 */
export interface GradInto {
  grad: Float32Array;
  beta: 0 | 1;
}
