import type { DecoderConfig } from './config.js';

/**
 * Keys and values of every layer for the tokens seen so far, preallocated for `capacity`
 * positions: [batch, capacity, kvHeads, headDim] per layer. Decoding appends one position a step.
 */
export class KVCache {
  readonly keys: Float32Array[];
  readonly values: Float32Array[];
  /** Positions filled so far (the same for every row of the batch). */
  length = 0;

  constructor(
    readonly config: DecoderConfig,
    readonly batch: number,
    readonly capacity: number,
  ) {
    const size = batch * capacity * config.numKvHeads * config.headDim;
    this.keys = Array.from({ length: config.numLayers }, () => new Float32Array(size));
    this.values = Array.from({ length: config.numLayers }, () => new Float32Array(size));
  }

  /** Copies `tokens` new positions of one layer's k and v ([batch, tokens, kvHeads, headDim]) in. */
  write(layer: number, k: Float32Array, v: Float32Array, tokens: number): void {
    if (this.length + tokens > this.capacity) {
      throw new Error(`KV cache full: ${this.length} + ${tokens} positions exceed its capacity of ${this.capacity}`);
    }
    const row = this.config.numKvHeads * this.config.headDim;
    for (let b = 0; b < this.batch; b++) {
      const src = b * tokens * row;
      const dst = (b * this.capacity + this.length) * row;
      this.keys[layer].set(k.subarray(src, src + tokens * row), dst);
      this.values[layer].set(v.subarray(src, src + tokens * row), dst);
    }
  }

  /** Marks `tokens` more positions as filled, after every layer has written them. */
  advance(tokens: number): void {
    this.length += tokens;
  }
}
