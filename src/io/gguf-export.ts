/**
 * A model (optionally with a LoRA adapter merged in) or a LoRA adapter as GGUF, following the rules
 * of llama.cpp's `convert_hf_to_gguf.py` and `convert_lora_to_gguf.py`, so llama.cpp, Ollama and
 * node-llama-cpp run the result exactly as the Hugging Face weights run here.
 *
 * Architectures: `llama` (Llama, Mistral), `qwen2`, `qwen3`. Metadata keys `<arch>.*`: block_count,
 * context_length (max_position_embeddings), embedding_length, feed_forward_length,
 * attention.head_count / head_count_kv, attention.layer_norm_rms_epsilon, rope.freq_base,
 * attention.key_length / value_length (when config.json sets head_dim), and for llama also
 * vocab_size and rope.dimension_count. Llama 3.1's rope scaling becomes a `rope_freqs.weight`
 * tensor of per-frequency divisors.
 *
 * Tensor names: token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, attn_q_norm,
 * attn_k_norm, ffn_norm, ffn_gate, ffn_up, ffn_down}, output_norm, output (only when untied).
 * llama.cpp rotates Llama's q and k in interleaved pairs (x[2i], x[2i+1]) where transformers
 * rotates halves (x[i], x[i+D/2]); the converter permutes the rows of q_proj and k_proj (and their
 * biases) per head to match. Qwen2/Qwen3 use the half layout in llama.cpp too: no permutation.
 *
 * Types: 1-D tensors, norms and biases stay f32 as the converter keeps them; the other weights
 * take the requested type, and q8_0 falls back to f16 for rows that are not whole blocks of 32.
 */
import fs from 'node:fs';
import { basename, dirname, resolve } from 'node:path';

import { UserError } from '../errors.js';
import type { DecoderConfig } from '../models/config.js';
import { CausalLM } from '../models/decoder.js';
import { loraLayers, mergeAndUnload } from '../nn/apply-lora.js';
import { builtinTemplate } from '../text/chat-template.js';
import { ropeInverseFrequencies } from '../backend/kernels/rope.js';
import { GGML_QUANT_VERSION, GgmlType, GgufWriter, LLAMA_FILE_TYPE } from './gguf-writer.js';
import { addVocabToGguf, readGgufVocab } from './gguf-tokenizer.js';
import { writeOllamaModelfile } from './gguf-ollama.js';
import { loadModel, readModelConfig } from './model-folder.js';
import { loadAdapter } from './peft-adapter.js';

export type GgufDtype = 'f32' | 'f16' | 'bf16' | 'q8_0';
export const GGUF_DTYPES: readonly GgufDtype[] = ['f32', 'f16', 'bf16', 'q8_0'];

const GGML_TYPE_OF: Record<GgufDtype, GgmlType> = {
  f32: GgmlType.F32,
  f16: GgmlType.F16,
  bf16: GgmlType.BF16,
  q8_0: GgmlType.Q8_0,
};

/** llama.cpp's architecture for each supported `model_type`. */
export const GGUF_ARCHITECTURES: Record<string, 'llama' | 'qwen2' | 'qwen3'> = {
  llama: 'llama',
  mistral: 'llama',
  qwen2: 'qwen2',
  qwen3: 'qwen3',
};

export interface ExportGgufOptions {
  /** A Hugging Face model folder. */
  model: string;
  /** A PEFT LoRA adapter folder merged into the weights first. */
  adapter?: string | null;
  /** The .gguf file to write. */
  out: string;
  dtype?: GgufDtype;
  /** A built-in chat template name (the one training used) instead of the model's own. */
  template?: string | null;
  /** Also write an Ollama Modelfile beside the GGUF file. */
  ollama?: boolean;
  /** `general.name`; default config.json's `_name_or_path`, else the folder's name. */
  name?: string | null;
}

export interface ExportLoraGgufOptions {
  adapter: string;
  /** The base model folder the adapter was trained on (its config.json is what is read). */
  model: string;
  out: string;
  /** f32 by default, as convert_lora_to_gguf.py. */
  dtype?: GgufDtype;
  name?: string | null;
}

export interface GgufExportResult {
  out: string;
  bytes: number;
  tensors: number;
  /** The Modelfile written with `ollama`, else null. */
  modelfile: string | null;
}

/** Writes a model, with an adapter merged in when given, as a GGUF file. */
export function exportGguf(opts: ExportGgufOptions): GgufExportResult {
  const dtype = checkDtype(opts.dtype ?? 'f16');
  checkOut(opts.out);
  const model = loadModel(opts.model);
  if (opts.adapter) {
    loadAdapter(model, opts.adapter);
    mergeAndUnload(model);
  }
  const config = model.config;
  const arch = archOf(config, opts.model);
  const vocab = readGgufVocab(opts.model, config.vocabSize, opts.template ? builtinTemplate(opts.template) : null);

  const w = new GgufWriter();
  w.str('general.architecture', arch);
  w.str('general.type', 'model');
  w.str('general.name', opts.name ?? defaultName(config, opts.model));
  addHyperparameters(w, config, arch);
  w.u32('general.file_type', LLAMA_FILE_TYPE[GGML_TYPE_OF[dtype]]);
  w.u32('general.quantization_version', GGML_QUANT_VERSION);
  addVocabToGguf(w, vocab);

  const ropeFactors = llama3RopeFactors(config);
  if (ropeFactors) w.addTensor({ name: 'rope_freqs.weight', shape: [ropeFactors.length], type: GgmlType.F32, data: () => ropeFactors });
  for (const [name, param] of model.namedParameters()) {
    const ggufName = ggufTensorName(name);
    if (ggufName === null) throw new Error(`GGUF export: no llama.cpp name for parameter ${name}`);
    const permuted = permutation(name, config, arch);
    const shape = param.shape;
    w.addTensor({
      name: ggufName,
      shape,
      type: tensorType(ggufName, shape, dtype),
      data: () => (permuted ? permuteRows(param.data, shape, permuted) : param.data),
    });
  }
  const bytes = w.write(opts.out);
  const modelfile = opts.ollama
    ? writeOllamaModelfile({ gguf: opts.out, chatTemplate: vocab.chatTemplate, templateName: opts.template ?? null, vocab })
    : null;
  return { out: opts.out, bytes, tensors: w.tensorCount, modelfile };
}

/**
 * Writes a LoRA adapter as llama.cpp's adapter GGUF: `general.type` "adapter", `adapter.type`
 * "lora", `adapter.lora.alpha`, and for each adapted weight W its `<gguf name>.lora_a` (A, [r, in],
 * ne = [in, r]) and `.lora_b` (B, [out, r], ne = [r, out]). llama.cpp adds
 * scale · (alpha / r) · B·A·x, r read from lora_a's shape, so PEFT's alpha/r scaling carries over as
 * is; for rank-stabilised LoRA (alpha/√r) the alpha written is alpha·√r, which gives the same
 * scaling. Llama's q/k permutation applies to the rows of B.
 */
export function exportLoraGguf(opts: ExportLoraGgufOptions): GgufExportResult {
  const dtype = checkDtype(opts.dtype ?? 'f32');
  checkOut(opts.out);
  const config = readModelConfig(opts.model);
  const arch = archOf(config, opts.model);
  // Only the adapter's tensors are read; the base model's (zero) weights give the layer shapes.
  const model = new CausalLM(config);
  const loaded = loadAdapter(model, opts.adapter);
  const { settings } = loaded;

  const w = new GgufWriter();
  w.str('general.architecture', arch);
  w.str('general.type', 'adapter');
  w.str('general.name', opts.name ?? basename(resolve(opts.adapter)));
  w.str('adapter.type', 'lora');
  w.f32('adapter.lora.alpha', settings.useRslora ? settings.alpha * Math.sqrt(settings.r) : settings.alpha);
  w.u32('general.quantization_version', GGML_QUANT_VERSION);

  for (const [path, layer] of loraLayers(model)) {
    const ggufName = ggufTensorName(`${path}.weight`);
    if (ggufName === null) throw new Error(`GGUF export: no llama.cpp name for ${path}`);
    const a = layer.lora_A.weight;
    const b = layer.lora_B.weight;
    const permuted = permutation(`${path}.weight`, config, arch);
    w.addTensor({ name: `${ggufName}.lora_a`, shape: a.shape, type: tensorType(`${ggufName}.lora_a`, a.shape, dtype), data: () => a.data });
    w.addTensor({
      name: `${ggufName}.lora_b`,
      shape: b.shape,
      type: tensorType(`${ggufName}.lora_b`, b.shape, dtype),
      data: () => (permuted ? permuteRows(b.data, b.shape, permuted) : b.data),
    });
  }
  const bytes = w.write(opts.out);
  return { out: opts.out, bytes, tensors: w.tensorCount, modelfile: null };
}

function checkDtype(dtype: string): GgufDtype {
  if (!(GGUF_DTYPES as readonly string[]).includes(dtype)) throw new UserError(`GGUF dtype must be one of ${GGUF_DTYPES.join(', ')}, got "${dtype}"`);
  return dtype as GgufDtype;
}

function checkOut(out: string): void {
  if (fs.existsSync(out) && fs.statSync(out).isDirectory()) throw new UserError(`--out ${out} is a folder; GGUF export writes one file (e.g. ${out}/model.gguf)`);
  fs.mkdirSync(dirname(resolve(out)), { recursive: true });
}

function archOf(config: DecoderConfig, dir: string): 'llama' | 'qwen2' | 'qwen3' {
  const arch = GGUF_ARCHITECTURES[config.modelType];
  if (!arch) throw new UserError(`${dir}: model_type "${config.modelType}" has no GGUF export; supported: ${Object.keys(GGUF_ARCHITECTURES).join(', ')}`);
  return arch;
}

function defaultName(config: DecoderConfig, dir: string): string {
  const n = config.raw._name_or_path;
  return typeof n === 'string' && n !== '' ? n : basename(resolve(dir));
}

/** The `<arch>.*` keys the converter writes (TextModel.set_gguf_parameters, LlamaModel's extras). */
function addHyperparameters(w: GgufWriter, c: DecoderConfig, arch: string): void {
  w.u32(`${arch}.block_count`, c.numLayers);
  w.u32(`${arch}.context_length`, c.maxPositions);
  w.u32(`${arch}.embedding_length`, c.hiddenSize);
  w.u32(`${arch}.feed_forward_length`, c.intermediateSize);
  w.u32(`${arch}.attention.head_count`, c.numHeads);
  w.u32(`${arch}.attention.head_count_kv`, c.numKvHeads);
  w.f32(`${arch}.rope.freq_base`, c.rope.theta);
  w.f32(`${arch}.attention.layer_norm_rms_epsilon`, c.rmsNormEps);
  // The converter writes these when config.json has head_dim; tunekit also when the default
  // (Qwen3's 128) differs from hidden/heads, which llama.cpp would otherwise assume.
  if (c.raw.head_dim != null || c.headDim !== c.hiddenSize / c.numHeads) {
    w.u32(`${arch}.attention.key_length`, c.headDim);
    w.u32(`${arch}.attention.value_length`, c.headDim);
  }
  if (arch === 'llama') {
    w.u32('llama.vocab_size', c.vocabSize);
    w.u32('llama.rope.dimension_count', c.headDim);
  }
}

/**
 * Llama 3.1's rope scaling as llama.cpp takes it: a divisor per frequency (1 for high, `factor` for
 * low, a smooth blend between), so that base frequency / divisor = transformers' scaled frequency.
 * The converter reads `original_max_position_embeddings` from the top level of config.json
 * (default 8192), while transformers reads it from rope_scaling; rope_scaling's is used here so the
 * GGUF computes what the model computes.
 */
export function llama3RopeFactors(c: DecoderConfig): Float32Array | null {
  if (!c.rope.llama3) return null;
  const base = ropeInverseFrequencies({ headDim: c.headDim, theta: c.rope.theta });
  const scaled = ropeInverseFrequencies(c.rope);
  return Float32Array.from(base, (f, i) => f / scaled[i]);
}

/** The converter's TensorNameMap for the decoder family. */
export function ggufTensorName(hf: string): string | null {
  const top: Record<string, string> = {
    'model.embed_tokens.weight': 'token_embd.weight',
    'model.norm.weight': 'output_norm.weight',
    'lm_head.weight': 'output.weight',
  };
  if (hf in top) return top[hf];
  const m = /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(hf);
  if (!m) return null;
  const [, block, module, kind] = m;
  const names: Record<string, string> = {
    input_layernorm: 'attn_norm',
    post_attention_layernorm: 'ffn_norm',
    'self_attn.q_proj': 'attn_q',
    'self_attn.k_proj': 'attn_k',
    'self_attn.v_proj': 'attn_v',
    'self_attn.o_proj': 'attn_output',
    'self_attn.q_norm': 'attn_q_norm',
    'self_attn.k_norm': 'attn_k_norm',
    'mlp.gate_proj': 'ffn_gate',
    'mlp.up_proj': 'ffn_up',
    'mlp.down_proj': 'ffn_down',
  };
  const name = names[module];
  return name ? `blk.${block}.${name}.${kind}` : null;
}

/** The type a tensor is stored in, by the converter's rules. */
export function tensorType(ggufName: string, shape: readonly number[], dtype: GgufDtype): GgmlType {
  if (shape.length <= 1 || ggufName.endsWith('_norm.weight')) return GgmlType.F32;
  if (!/\.(weight|lora_a|lora_b)$/.test(ggufName)) return GgmlType.F32;
  const type = GGML_TYPE_OF[dtype];
  if (type === GgmlType.Q8_0 && shape[shape.length - 1] % 32 !== 0) return GgmlType.F16;
  return type;
}

/** Heads whose rows the Llama permutation regroups, for q/k weights and biases of a llama model. */
function permutation(hfName: string, c: DecoderConfig, arch: string): number | null {
  if (arch !== 'llama') return null;
  if (/\.self_attn\.q_proj\.(weight|bias)$/.test(hfName)) return c.numHeads;
  if (/\.self_attn\.k_proj\.(weight|bias)$/.test(hfName)) return c.numKvHeads;
  return null;
}

/**
 * The converter's `permute`: rows viewed as [heads, 2, D/2] become [heads, D/2, 2], so row
 * h·D + 2j + k of the result is row h·D + k·D/2 + j of the input (each row `cols` long).
 */
export function permuteRows(data: Float32Array, shape: readonly number[], heads: number): Float32Array {
  const rows = shape[0];
  const cols = shape.length > 1 ? shape[1] : 1;
  const d = rows / heads;
  if (!Number.isInteger(d) || d % 2 !== 0) throw new Error(`permuteRows: ${rows} rows do not split into ${heads} heads of even size`);
  const half = d / 2;
  const out = new Float32Array(data.length);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < half; j++) {
      for (let k = 0; k < 2; k++) {
        const src = (h * d + k * half + j) * cols;
        const dst = (h * d + 2 * j + k) * cols;
        out.set(data.subarray(src, src + cols), dst);
      }
    }
  }
  return out;
}
