import { FileFormatError } from '../errors.js';
import type { RopeConfig } from '../backend/kernels/rope.js';

/** The decoder family's settings, read from a Hugging Face `config.json`. */
export interface DecoderConfig {
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  rope: RopeConfig;
  maxPositions: number;
  tieWordEmbeddings: boolean;
  /** Bias on q/k/v (Qwen2 always; Llama/Mistral/Qwen3 when `attention_bias`). */
  qkvBias: boolean;
  /** Bias on o_proj (Llama's `attention_bias` covers it too). */
  oBias: boolean;
  mlpBias: boolean;
  /** Qwen3's per-head RMSNorm of queries and keys before the rotation. */
  qkNorm: boolean;
  bosTokenId: number | null;
  eosTokenId: number | number[] | null;
  /** The config.json object as read, written back on save with only what we changed. */
  raw: Record<string, unknown>;
}

/** What differs between the members of the family, by `model_type`. */
export interface ArchitectureTraits {
  /** Class name written to `architectures`. */
  architecture: string;
  qkvBias: (raw: Record<string, unknown>) => boolean;
  oBias: (raw: Record<string, unknown>) => boolean;
  mlpBias: (raw: Record<string, unknown>) => boolean;
  qkNorm: boolean;
  tieDefault: boolean;
  /** transformers' head_dim when config.json omits it (Qwen3Config says 128); else hidden/heads. */
  headDimDefault?: number;
}

const attentionBias = (raw: Record<string, unknown>): boolean => raw.attention_bias === true;
const no = (): boolean => false;

export const ARCHITECTURES: Record<string, ArchitectureTraits> = {
  llama: { architecture: 'LlamaForCausalLM', qkvBias: attentionBias, oBias: attentionBias, mlpBias: (raw) => raw.mlp_bias === true, qkNorm: false, tieDefault: false },
  mistral: { architecture: 'MistralForCausalLM', qkvBias: no, oBias: no, mlpBias: no, qkNorm: false, tieDefault: false },
  qwen2: { architecture: 'Qwen2ForCausalLM', qkvBias: () => true, oBias: no, mlpBias: no, qkNorm: false, tieDefault: false },
  qwen3: { architecture: 'Qwen3ForCausalLM', qkvBias: attentionBias, oBias: attentionBias, mlpBias: no, qkNorm: true, tieDefault: false, headDimDefault: 128 },
};

export const SUPPORTED_MODEL_TYPES = Object.keys(ARCHITECTURES);

/** Parses and checks config.json; `file` names it in errors. */
export function parseDecoderConfig(raw: Record<string, unknown>, file = 'config.json'): DecoderConfig {
  const modelType = raw.model_type;
  if (typeof modelType !== 'string') throw new FileFormatError(file, 'missing "model_type"');
  const traits = ARCHITECTURES[modelType];
  if (!traits) {
    throw new FileFormatError(file, `model_type "${modelType}" is not supported; supported: ${SUPPORTED_MODEL_TYPES.join(', ')}`);
  }
  const int = (key: string, fallback?: number): number => {
    const v = raw[key] ?? fallback;
    if (v === undefined) throw new FileFormatError(file, `missing "${key}" (a positive integer)`);
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new FileFormatError(file, `"${key}" must be a positive integer, got ${JSON.stringify(v)}`);
    return v;
  };
  const num = (key: string, fallback: number): number => {
    const v = raw[key] ?? fallback;
    if (typeof v !== 'number' || !(v > 0)) throw new FileFormatError(file, `"${key}" must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  };
  const hiddenSize = int('hidden_size');
  const numHeads = int('num_attention_heads');
  const numKvHeads = int('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new FileFormatError(file, `num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  }
  const headDim = raw.head_dim == null ? (traits.headDimDefault ?? hiddenSize / numHeads) : int('head_dim');
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) throw new FileFormatError(file, `head dimension ${headDim} must be an even integer`);
  const act = raw.hidden_act ?? 'silu';
  if (act !== 'silu') throw new FileFormatError(file, `hidden_act "${String(act)}" is not supported; expected "silu"`);
  return {
    modelType,
    vocabSize: int('vocab_size'),
    hiddenSize,
    intermediateSize: int('intermediate_size'),
    numLayers: int('num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: num('rms_norm_eps', 1e-6),
    rope: { headDim, theta: num('rope_theta', 10000), llama3: parseRopeScaling(raw.rope_scaling, file) },
    maxPositions: int('max_position_embeddings', 2048),
    tieWordEmbeddings: typeof raw.tie_word_embeddings === 'boolean' ? raw.tie_word_embeddings : traits.tieDefault,
    qkvBias: traits.qkvBias(raw),
    oBias: traits.oBias(raw),
    mlpBias: traits.mlpBias(raw),
    qkNorm: traits.qkNorm,
    bosTokenId: typeof raw.bos_token_id === 'number' ? raw.bos_token_id : null,
    eosTokenId: (raw.eos_token_id as number | number[] | undefined) ?? null,
    raw,
  };
}

function parseRopeScaling(scaling: unknown, file: string): RopeConfig['llama3'] {
  if (scaling == null) return undefined;
  if (typeof scaling !== 'object') throw new FileFormatError(file, '"rope_scaling" must be an object or null');
  const s = scaling as Record<string, unknown>;
  const type = s.rope_type ?? s.type;
  if (type === 'default') return undefined;
  if (type !== 'llama3') throw new FileFormatError(file, `rope_scaling type "${String(type)}" is not supported; supported: llama3`);
  const n = (key: string): number => {
    const v = s[key];
    if (typeof v !== 'number') throw new FileFormatError(file, `rope_scaling.${key} must be a number`);
    return v;
  };
  return {
    factor: n('factor'),
    lowFreqFactor: n('low_freq_factor'),
    highFreqFactor: n('high_freq_factor'),
    originalMaxPositions: n('original_max_position_embeddings'),
  };
}
