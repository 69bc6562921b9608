import type { AttentionShape } from '../../backend/kernels/attention.js';
import { attentionBackward, attentionForward } from '../../backend/kernels/attention.js';
import { backend } from '../../backend/select.js';
import { Tensor, needsGrad, record, saved } from '../tensor.js';

export interface AttentionOptions {
  /** Each query sees only keys at or before its own position. Default true. */
  causal?: boolean;
  /** [batch, keys], 1 for a real token, 0 for padding. */
  keyMask?: Uint8Array | null;
  /** [batch, keys] sequence ids of packed examples; attention stays within one id. */
  segments?: Int32Array | null;
}

/**
 * Causal grouped-query attention. q: [B, T, H, D]; k, v: [B, T, Hkv, D] with H a multiple of Hkv.
 * Returns [B, T, H, D].
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  if (q.ndim !== 4 || k.ndim !== 4 || v.ndim !== 4) throw new Error(`attention: expected 4-D q, k, v, got ${q}, ${k}, ${v}`);
  const [B, T, H, D] = q.shape;
  const [, S, HKV] = k.shape;
  if (H % HKV !== 0) throw new Error(`attention: ${H} query heads are not a multiple of ${HKV} key/value heads`);
  if (k.shape[0] !== B || k.shape[3] !== D || v.size !== k.size) throw new Error(`attention: q ${q}, k ${k}, v ${v} disagree`);
  const shape: AttentionShape = {
    batch: B, queries: T, keys: S, kvCapacity: S, heads: H, kvHeads: HKV, headDim: D,
    queryOffset: S - T, causal: opts.causal ?? true, keyMask: opts.keyMask ?? null, segments: opts.segments ?? null,
  };
  // The kernel writes every output and probability.
  const out = Tensor.uninitialized(q.shape);
  // Backward keeps q, k, v and the probabilities [B, H, T, S].
  const keep = needsGrad(q, k, v);
  const probs = keep ? Tensor.uninitialized([B, H, T, S]).data : null;
  const be = backend();
  attentionForward(be, shape, q.data, k.data, v.data, out.data, probs);
  const [qData, kData, vData, qg, kg, vg] = [q.data, k.data, v.data, q.autograd, k.autograd, v.autograd];
  return record(out, 'attention', [q, k, v], (g, sink) => {
    attentionBackward(be, shape, qData, kData, vData, saved(probs, 'attention probabilities'), g, sink.into(qg), sink.into(kg), sink.into(vg));
  });
}
