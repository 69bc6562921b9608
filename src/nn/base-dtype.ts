/**
 * `base_dtype`: how the frozen base weights of LoRA training are stored. `bf16` keeps every
 * frozen linear weight of the decoder blocks (q/k/v/o/gate/up/down_proj) as bfloat16, half the
 * memory of float32; the products still run in float32 on a widened copy (see
 * `tensor/ops/matmul.ts`), so results match a float32 model whose weights were rounded to bf16.
 *
 * Trainable weights (LoRA A/B, full fine-tuning) stay float32, and so do the embedding matrix
 * (also the tied output head), an untied `lm_head`, the norms and the biases: the loss kernels
 * read the head's float32 values directly, and the rest is small.
 */
import type { Module } from './module.js';
import type { Tensor } from '../tensor/tensor.js';

export type BaseDtype = 'fp32' | 'bf16';

/** Accepted spellings of `base_dtype`, each with the dtype it means. */
export const BASE_DTYPE_SPELLINGS: Readonly<Record<string, BaseDtype>> = {
  fp32: 'fp32',
  float32: 'fp32',
  bf16: 'bf16',
  bfloat16: 'bf16',
};

/** The dtype a `base_dtype` value names, or null when it names none. */
export function parseBaseDtype(value: unknown): BaseDtype | null {
  return typeof value === 'string' && Object.hasOwn(BASE_DTYPE_SPELLINGS, value) ? BASE_DTYPE_SPELLINGS[value] : null;
}

/**
 * Whether a parameter is one `base_dtype: bf16` stores at half width (when frozen): a 2-D weight
 * inside a decoder block (`model.layers.N.…`), not a LoRA matrix. Norm weights are 1-D.
 */
export function isBaseLinearWeight(name: string, shape: readonly number[]): boolean {
  return shape.length === 2 && /(^|\.)layers\.\d+\./.test(name) && !/\.lora_[AB]\./.test(name) && name.endsWith('.weight');
}

/**
 * Stores every frozen decoder-block linear weight of `model` as bf16 (round to nearest even);
 * returns how many it converted. Weights that train are left alone.
 */
export function storeFrozenBaseAsBf16(model: Module): number {
  let n = 0;
  for (const [name, t] of model.namedParameters()) {
    if (t.bf16 || t.requiresGrad || !isBaseLinearWeight(name, t.shape)) continue;
    t.toBf16();
    n++;
  }
  return n;
}

export interface BaseWeightsReport {
  /** Distinct tensors stored as bf16, and their bytes. */
  bf16Tensors: number;
  bf16Bytes: number;
  /** Frozen float32 tensors (embeddings, head, norms, biases), and their bytes. */
  frozenF32Bytes: number;
}

export function baseWeightsReport(model: Module): BaseWeightsReport {
  const seen = new Set<Tensor>();
  const r: BaseWeightsReport = { bf16Tensors: 0, bf16Bytes: 0, frozenF32Bytes: 0 };
  for (const [, t] of model.namedParameters()) {
    if (seen.has(t)) continue;
    seen.add(t);
    if (t.bf16) {
      r.bf16Tensors++;
      r.bf16Bytes += t.byteLength;
    } else if (!t.requiresGrad) r.frozenF32Bytes += t.byteLength;
  }
  return r;
}

/** The line `tunekit train` prints under base_dtype bf16. */
export function baseWeightsNote(model: Module): string {
  const r = baseWeightsReport(model);
  return (
    `note: base_dtype bf16: ${r.bf16Tensors} frozen linear weights stored as bf16, ${mib(r.bf16Bytes)} (float32 would take ${mib(2 * r.bf16Bytes)}); ` +
    `embeddings, head, norms and biases stay float32 (${mib(r.frozenF32Bytes)} frozen)`
  );
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}
