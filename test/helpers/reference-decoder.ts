/**
 * An independent reference for the decoder family, written from the equations of Hugging Face
 * transformers' LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM:
 * plain loops, float64 throughout, one sequence at a time, no engine code.
 *
 * It is slow on purpose and shares nothing with `src/`: the config is read from the raw
 * config.json object with transformers' defaults, the weights by their checkpoint names. A test
 * compares the engine with it; when they disagree, this file is short enough to check by eye.
 */

/** A weight as the engine or a checkpoint holds it: row-major values and a shape. */
export interface ReferenceWeight {
  readonly data: ArrayLike<number>;
  readonly shape: readonly number[];
}

export type ReferenceWeights = ReadonlyMap<string, ReferenceWeight>;

/** What the equations need from config.json, with transformers' rules for each model_type. */
export interface ReferenceConfig {
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  eps: number;
  /** One inverse frequency per rotated pair, after any rope_scaling. */
  invFreq: Float64Array;
  tied: boolean;
  qkvBias: boolean;
  oBias: boolean;
  mlpBias: boolean;
  qkNorm: boolean;
}

function need(raw: Record<string, unknown>, key: string): number {
  const v = raw[key];
  if (typeof v !== 'number') throw new Error(`reference: config.json lacks numeric "${key}"`);
  return v;
}

/**
 * transformers' defaults: rms_norm_eps 1e-6, rope_theta 10000, num_key_value_heads = heads,
 * tie_word_embeddings false. head_dim: explicit, else hidden/heads (Qwen3Config says 128).
 * Biases: Llama q/k/v/o from attention_bias and MLP from mlp_bias; Mistral none; Qwen2 q/k/v
 * always, o never; Qwen3 q/k/v/o from attention_bias, plus per-head q_norm/k_norm.
 */
export function referenceConfig(raw: Record<string, unknown>): ReferenceConfig {
  const modelType = String(raw.model_type);
  const hiddenSize = need(raw, 'hidden_size');
  const numHeads = need(raw, 'num_attention_heads');
  const numKvHeads = typeof raw.num_key_value_heads === 'number' ? raw.num_key_value_heads : numHeads;
  let headDim: number;
  if (typeof raw.head_dim === 'number') headDim = raw.head_dim;
  else headDim = modelType === 'qwen3' ? 128 : hiddenSize / numHeads;
  const attentionBias = raw.attention_bias === true;
  let qkvBias: boolean;
  let oBias: boolean;
  let mlpBias = false;
  let qkNorm = false;
  switch (modelType) {
    case 'llama':
      qkvBias = attentionBias;
      oBias = attentionBias;
      mlpBias = raw.mlp_bias === true;
      break;
    case 'mistral':
      qkvBias = false;
      oBias = false;
      break;
    case 'qwen2':
      qkvBias = true;
      oBias = false;
      break;
    case 'qwen3':
      qkvBias = attentionBias;
      oBias = attentionBias;
      qkNorm = true;
      break;
    default:
      throw new Error(`reference: model_type ${modelType} not covered`);
  }
  const theta = typeof raw.rope_theta === 'number' ? raw.rope_theta : 10000;
  return {
    modelType,
    vocabSize: need(raw, 'vocab_size'),
    hiddenSize,
    intermediateSize: need(raw, 'intermediate_size'),
    numLayers: need(raw, 'num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    eps: typeof raw.rms_norm_eps === 'number' ? raw.rms_norm_eps : 1e-6,
    invFreq: inverseFrequencies(headDim, theta, raw.rope_scaling as Record<string, unknown> | null | undefined),
    tied: raw.tie_word_embeddings === true,
    qkvBias,
    oBias,
    mlpBias,
    qkNorm,
  };
}

/**
 * inv_freq[i] = 1 / theta^(2i/d). With rope_type "llama3" (Llama 3.1): wavelengths
 * 2π/inv_freq longer than original/low_freq_factor are divided by `factor`, those shorter than
 * original/high_freq_factor kept, and those between interpolated with
 * smooth = (original/wavelen − low) / (high − low): (1 − smooth)·f/factor + smooth·f.
 */
export function inverseFrequencies(headDim: number, theta: number, scaling: Record<string, unknown> | null | undefined): Float64Array {
  const half = headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(theta, (2 * i) / headDim);
  const type = scaling ? (scaling.rope_type ?? scaling.type) : undefined;
  if (!scaling || type === undefined || type === 'default') return inv;
  if (type !== 'llama3') throw new Error(`reference: rope_type ${String(type)} not covered`);
  const factor = Number(scaling.factor);
  const low = Number(scaling.low_freq_factor);
  const high = Number(scaling.high_freq_factor);
  const original = Number(scaling.original_max_position_embeddings);
  const lowFreqWavelen = original / low;
  const highFreqWavelen = original / high;
  for (let i = 0; i < half; i++) {
    const f = inv[i];
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highFreqWavelen) continue; // high frequency: unchanged
    if (wavelen > lowFreqWavelen) {
      inv[i] = f / factor; // low frequency: scaled
      continue;
    }
    const smooth = (original / wavelen - low) / (high - low);
    inv[i] = (1 - smooth) * (f / factor) + smooth * f;
  }
  return inv;
}

/** Reads weights by name, checks their shapes, and records which ones were read. */
class WeightReader {
  readonly used = new Set<string>();
  constructor(private readonly weights: ReferenceWeights) {}

  get(name: string, shape: number[]): ArrayLike<number> {
    const w = this.weights.get(name);
    if (!w) throw new Error(`reference: weight ${name} is missing`);
    if (w.shape.length !== shape.length || w.shape.some((d, i) => d !== shape[i])) {
      throw new Error(`reference: weight ${name} has shape [${w.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
    this.used.add(name);
    return w.data;
  }
}

type Matrix = Float64Array[]; // one row per token

/** y[t] = W·x[t] (+ b), W stored [out, in] as PyTorch stores nn.Linear. */
function linear(x: Matrix, w: ArrayLike<number>, b: ArrayLike<number> | null, outDim: number): Matrix {
  return x.map((row) => {
    const inDim = row.length;
    const y = new Float64Array(outDim);
    for (let o = 0; o < outDim; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < inDim; i++) s += w[o * inDim + i] * row[i];
      y[o] = s;
    }
    return y;
  });
}

/** weight · x / sqrt(mean(x²) + eps) over `x[offset .. offset+n)`, in place. */
function rmsNormInPlace(x: Float64Array, offset: number, n: number, w: ArrayLike<number>, eps: number): void {
  let ss = 0;
  for (let i = 0; i < n; i++) ss += x[offset + i] * x[offset + i];
  const r = 1 / Math.sqrt(ss / n + eps);
  for (let i = 0; i < n; i++) x[offset + i] = w[i] * (x[offset + i] * r);
}

function rmsNorm(x: Matrix, w: ArrayLike<number>, eps: number): Matrix {
  return x.map((row) => {
    const y = Float64Array.from(row);
    rmsNormInPlace(y, 0, y.length, w, eps);
    return y;
  });
}

/** Rotate-half rotary embedding of each head of `x[t]` ([heads·D]) by angle position·inv_freq. */
function rotate(x: Matrix, heads: number, headDim: number, positions: readonly number[], invFreq: Float64Array): void {
  const half = headDim / 2;
  x.forEach((row, t) => {
    for (let h = 0; h < heads; h++) {
      const o = h * headDim;
      for (let i = 0; i < half; i++) {
        const angle = positions[t] * invFreq[i];
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        const x1 = row[o + i];
        const x2 = row[o + i + half];
        // q·cos + rotate_half(q)·sin with rotate_half(q) = (−q2, q1)
        row[o + i] = x1 * c - x2 * s;
        row[o + i + half] = x2 * c + x1 * s;
      }
    }
  });
}

function silu(z: number): number {
  return z / (1 + Math.exp(-z));
}

export interface ReferenceResult {
  /** [T, vocab] row-major. */
  logits: Float64Array;
  /** Names of the weights read; equal to the engine's parameter names when it has no extras. */
  used: Set<string>;
}

/**
 * Logits of one sequence. `positions` are the rotary positions (default 0..T−1); attention is
 * causal over the order of `ids` and sees every earlier token of this sequence, nothing else.
 */
export function referenceForward(
  raw: Record<string, unknown>,
  weights: ReferenceWeights,
  ids: readonly number[],
  positions?: readonly number[],
): ReferenceResult {
  const cfg = referenceConfig(raw);
  const W = new WeightReader(weights);
  const { hiddenSize: C, intermediateSize: I, numHeads: H, numKvHeads: HKV, headDim: D, vocabSize: V, eps } = cfg;
  const T = ids.length;
  const pos = positions ?? ids.map((_, t) => t);
  if (pos.length !== T) throw new Error(`reference: ${pos.length} positions for ${T} ids`);
  const groups = H / HKV;
  const scaling = 1 / Math.sqrt(D);

  const embed = W.get('model.embed_tokens.weight', [V, C]);
  let x: Matrix = ids.map((id) => {
    if (!(id >= 0 && id < V)) throw new Error(`reference: id ${id} outside the vocabulary of ${V}`);
    const row = new Float64Array(C);
    for (let c = 0; c < C; c++) row[c] = embed[id * C + c];
    return row;
  });

  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const bias = (name: string, has: boolean, n: number): ArrayLike<number> | null => (has ? W.get(`${p}${name}.bias`, [n]) : null);

    // Self-attention block.
    const hIn = rmsNorm(x, W.get(`${p}input_layernorm.weight`, [C]), eps);
    const q = linear(hIn, W.get(`${p}self_attn.q_proj.weight`, [H * D, C]), bias('self_attn.q_proj', cfg.qkvBias, H * D), H * D);
    const k = linear(hIn, W.get(`${p}self_attn.k_proj.weight`, [HKV * D, C]), bias('self_attn.k_proj', cfg.qkvBias, HKV * D), HKV * D);
    const v = linear(hIn, W.get(`${p}self_attn.v_proj.weight`, [HKV * D, C]), bias('self_attn.v_proj', cfg.qkvBias, HKV * D), HKV * D);
    if (cfg.qkNorm) {
      const qn = W.get(`${p}self_attn.q_norm.weight`, [D]);
      const kn = W.get(`${p}self_attn.k_norm.weight`, [D]);
      for (const row of q) for (let h = 0; h < H; h++) rmsNormInPlace(row, h * D, D, qn, eps);
      for (const row of k) for (let h = 0; h < HKV; h++) rmsNormInPlace(row, h * D, D, kn, eps);
    }
    rotate(q, H, D, pos, cfg.invFreq);
    rotate(k, HKV, D, pos, cfg.invFreq);

    const attn: Matrix = ids.map(() => new Float64Array(H * D));
    const scores = new Float64Array(T);
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / groups);
      for (let t = 0; t < T; t++) {
        let max = -Infinity;
        for (let s = 0; s <= t; s++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[t][h * D + d] * k[s][kvh * D + d];
          scores[s] = dot * scaling;
          if (scores[s] > max) max = scores[s];
        }
        let sum = 0;
        for (let s = 0; s <= t; s++) {
          scores[s] = Math.exp(scores[s] - max);
          sum += scores[s];
        }
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let s = 0; s <= t; s++) acc += scores[s] * v[s][kvh * D + d];
          attn[t][h * D + d] = acc / sum;
        }
      }
    }
    const o = linear(attn, W.get(`${p}self_attn.o_proj.weight`, [C, H * D]), bias('self_attn.o_proj', cfg.oBias, C), C);
    x = x.map((row, t) => row.map((val, c) => val + o[t][c]));

    // MLP block: down(silu(gate(h)) · up(h)).
    const hPost = rmsNorm(x, W.get(`${p}post_attention_layernorm.weight`, [C]), eps);
    const gate = linear(hPost, W.get(`${p}mlp.gate_proj.weight`, [I, C]), bias('mlp.gate_proj', cfg.mlpBias, I), I);
    const up = linear(hPost, W.get(`${p}mlp.up_proj.weight`, [I, C]), bias('mlp.up_proj', cfg.mlpBias, I), I);
    const act = gate.map((row, t) => row.map((g, i) => silu(g) * up[t][i]));
    const down = linear(act, W.get(`${p}mlp.down_proj.weight`, [C, I]), bias('mlp.down_proj', cfg.mlpBias, C), C);
    x = x.map((row, t) => row.map((val, c) => val + down[t][c]));
  }

  const final = rmsNorm(x, W.get('model.norm.weight', [C]), eps);
  const head = cfg.tied ? embed : W.get('lm_head.weight', [V, C]);
  const logits = new Float64Array(T * V);
  linear(final, head, null, V).forEach((row, t) => logits.set(row, t * V));
  return { logits, used: W.used };
}
