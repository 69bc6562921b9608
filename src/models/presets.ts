/**
 * Shapes `tunekit init-model` can write with random weights: tiny ones for tests and the demo,
 * up to the real Qwen2.5-0.5B shape for benchmarks. Vocabulary `null` means "the tokenizer's".
 */
export interface ModelPreset {
  description: string;
  /** Which tokenizer files go with it. */
  tokenizer: 'qwen' | 'tiny';
  config: Record<string, unknown>;
}

const qwen2Base = {
  architectures: ['Qwen2ForCausalLM'],
  model_type: 'qwen2',
  hidden_act: 'silu',
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  tie_word_embeddings: true,
  torch_dtype: 'float32',
  bos_token_id: 151643,
  eos_token_id: 151645,
  use_cache: true,
};

export const PRESETS: Record<string, ModelPreset> = {
  tiny: {
    description: 'Qwen2-style, 2 layers, hidden 64, small byte-level vocabulary (tests)',
    tokenizer: 'tiny',
    config: {
      ...qwen2Base,
      hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
      max_position_embeddings: 2048, rope_theta: 10000,
    },
  },
  'tiny-llama': {
    description: 'Llama-3-style, 2 layers, hidden 64, untied head, llama3 rope scaling (tests)',
    tokenizer: 'tiny',
    config: {
      architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_act: 'silu', rms_norm_eps: 1e-5,
      hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
      max_position_embeddings: 2048, rope_theta: 500000, tie_word_embeddings: false, attention_bias: false, mlp_bias: false,
      rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 1024 },
      torch_dtype: 'float32',
    },
  },
  'tiny-qwen3': {
    description: 'Qwen3-style (q/k norms, head_dim 32), 2 layers, hidden 64 (tests)',
    tokenizer: 'tiny',
    config: {
      architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3', hidden_act: 'silu', rms_norm_eps: 1e-6,
      hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 32,
      max_position_embeddings: 2048, rope_theta: 1000000, tie_word_embeddings: true, attention_bias: false, torch_dtype: 'float32',
    },
  },
  small: {
    description: 'Qwen2-style, 4 layers, hidden 256, real Qwen tokenizer (quick experiments)',
    tokenizer: 'qwen',
    config: {
      ...qwen2Base,
      hidden_size: 256, intermediate_size: 704, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2,
      vocab_size: 151936, max_position_embeddings: 32768,
    },
  },
  'qwen2.5-0.5b': {
    description: 'The Qwen2.5-0.5B shape: hidden 896, 24 layers, 14 heads, 2 KV heads, vocab 151936',
    tokenizer: 'qwen',
    config: {
      ...qwen2Base,
      hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2,
      vocab_size: 151936, max_position_embeddings: 32768, sliding_window: 32768, max_window_layers: 21, use_sliding_window: false,
    },
  },
};

export const PRESET_NAMES = Object.keys(PRESETS);
