/** Rotary embedding settings as config.json states them. */
export interface RopeConfig {
  headDim: number;
  theta: number;
  /** `rope_scaling` with `rope_type` (or `type`) `llama3`; other types are rejected at load time. */
  llama3?: { factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number };
}

/**
 * Inverse frequencies, one per rotated pair, in float32 as transformers computes them, with
 * Llama 3.1's piecewise rescaling of the long wavelengths when configured.
 */
export function ropeInverseFrequencies(cfg: RopeConfig): Float32Array {
  const half = cfg.headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(cfg.theta, Math.fround((2 * i) / cfg.headDim));
  const s = cfg.llama3;
  if (!s) return inv;
  const lowWavelen = s.originalMaxPositions / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositions / s.highFreqFactor;
  for (let i = 0; i < half; i++) {
    const wavelen = (2 * Math.PI) / inv[i];
    if (wavelen > lowWavelen) inv[i] = inv[i] / s.factor;
    else if (wavelen >= highWavelen) {
      const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      inv[i] = (1 - smooth) * (inv[i] / s.factor) + smooth * inv[i];
    }
  }
  return inv;
}

/** cos and sin tables, [positions, headDim/2], grown on demand. */
export class RopeTables {
  cos = new Float32Array(0);
  sin = new Float32Array(0);
  private rows = 0;
  readonly half: number;
  private readonly inv: Float32Array;

  constructor(cfg: RopeConfig) {
    this.half = cfg.headDim / 2;
    this.inv = ropeInverseFrequencies(cfg);
  }

  ensure(positions: number): void {
    if (positions <= this.rows) return;
    const rows = Math.max(positions, this.rows * 2, 64);
    const h = this.half;
    const cos = new Float32Array(rows * h);
    const sin = new Float32Array(rows * h);
    for (let p = 0; p < rows; p++) {
      for (let i = 0; i < h; i++) {
        const angle = Math.fround(p * this.inv[i]);
        cos[p * h + i] = Math.cos(angle);
        sin[p * h + i] = Math.sin(angle);
      }
    }
    this.cos = cos;
    this.sin = sin;
    this.rows = rows;
  }
}

/**
 * Rotates x ([tokens, heads, headDim], Hugging Face rotate-half layout: pair i is (i, i + D/2))
 * by each token's position. `sign` −1 applies the inverse rotation, which is the backward pass.
 */
export function ropeApply(
  x: Float32Array,
  heads: number,
  headDim: number,
  positions: Int32Array,
  tables: RopeTables,
  out: Float32Array,
  sign: 1 | -1,
  accumulate = false,
): void {
  const h = headDim / 2;
  const tokens = positions.length;
  const { cos, sin } = tables;
  for (let t = 0; t < tokens; t++) {
    const tab = positions[t] * h;
    for (let hd = 0; hd < heads; hd++) {
      const o = (t * heads + hd) * headDim;
      for (let i = 0; i < h; i++) {
        const c = cos[tab + i];
        const s = sign * sin[tab + i];
        const x1 = x[o + i];
        const x2 = x[o + i + h];
        const y1 = x1 * c - x2 * s;
        const y2 = x2 * c + x1 * s;
        if (accumulate) {
          out[o + i] += y1;
          out[o + i + h] += y2;
        } else {
          out[o + i] = y1;
          out[o + i + h] = y2;
        }
      }
    }
  }
}
