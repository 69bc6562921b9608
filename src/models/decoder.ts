import { attentionForward } from '../backend/kernels/attention.js';
import { backend } from '../backend/select.js';
import { Embedding, Linear, ModuleList, RMSNorm } from '../nn/layers.js';
import type { LinearLike } from '../nn/layers.js';
import { LoraLinear } from '../nn/lora.js';
import { Module } from '../nn/module.js';
import { add, attention, checkpoint, linear, reshape, rope, swiglu, RopeTables } from '../tensor/index.js';
import { Tensor, isGradEnabled } from '../tensor/tensor.js';
import type { DecoderConfig } from './config.js';
import type { KVCache } from './kv-cache.js';

/** One forward call's tokens: `batch` rows of `length` ids each. */
export interface DecoderInput {
  ids: Int32Array;
  batch: number;
  length: number;
  /** Rotary position of each token; default 0, 1, 2 … continuing after the cache. */
  positions?: Int32Array;
  /** [batch, keys] 1 = real token, 0 = padding; keys include cached positions. */
  keyMask?: Uint8Array | null;
  /** [batch, length] ids of packed sequences; attention never crosses them. */
  segments?: Int32Array | null;
  /** Inference only: keys and values of earlier positions, extended by this call. */
  cache?: KVCache;
}

/** Holds the projections under Hugging Face's names so LoRA can swap any of them. */
abstract class Projections extends Module {
  protected readonly proj: Record<string, LinearLike> = {};

  protected addProjection(name: string, m: LinearLike): void {
    this.proj[name] = this.registerModule(name, m);
  }

  protected override onModuleReplaced(name: string, m: Module): void {
    if (name in this.proj) this.proj[name] = m as LinearLike;
  }
}

export class DecoderAttention extends Projections {
  readonly qNorm: RMSNorm | null;
  readonly kNorm: RMSNorm | null;

  constructor(
    private readonly cfg: DecoderConfig,
    readonly layerIndex: number,
  ) {
    super();
    const { hiddenSize: C, numHeads: H, numKvHeads: HKV, headDim: D } = cfg;
    this.addProjection('q_proj', new Linear(C, H * D, cfg.qkvBias));
    this.addProjection('k_proj', new Linear(C, HKV * D, cfg.qkvBias));
    this.addProjection('v_proj', new Linear(C, HKV * D, cfg.qkvBias));
    this.addProjection('o_proj', new Linear(H * D, C, cfg.oBias));
    this.qNorm = cfg.qkNorm ? this.registerModule('q_norm', new RMSNorm(D, cfg.rmsNormEps)) : null;
    this.kNorm = cfg.qkNorm ? this.registerModule('k_norm', new RMSNorm(D, cfg.rmsNormEps)) : null;
  }

  forward(x: Tensor, input: DecoderInput, positions: Int32Array, tables: RopeTables): Tensor {
    const { numHeads: H, numKvHeads: HKV, headDim: D } = this.cfg;
    const { batch: B, length: T } = input;
    let q = reshape(this.proj.q_proj.forward(x), [B, T, H, D]);
    let k = reshape(this.proj.k_proj.forward(x), [B, T, HKV, D]);
    const v = reshape(this.proj.v_proj.forward(x), [B, T, HKV, D]);
    if (this.qNorm && this.kNorm) {
      q = this.qNorm.forward(q);
      k = this.kNorm.forward(k);
    }
    q = rope(q, positions, tables);
    k = rope(k, positions, tables);
    const o = input.cache
      ? this.cachedAttention(q, k, v, input, input.cache)
      : attention(q, k, v, { keyMask: input.keyMask ?? null, segments: input.segments ?? null });
    return this.proj.o_proj.forward(reshape(o, [B, T, H * D]));
  }

  /** Attention over the cache plus the new positions; inference only, so no graph is kept. */
  private cachedAttention(q: Tensor, k: Tensor, v: Tensor, input: DecoderInput, cache: KVCache): Tensor {
    if (isGradEnabled() && (q.requiresGrad || k.requiresGrad || v.requiresGrad)) {
      throw new Error('a KV cache is for inference; run it under noGrad()');
    }
    const { numHeads: H, numKvHeads: HKV, headDim: D } = this.cfg;
    const T = input.length;
    cache.write(this.layerIndex, k.data, v.data, T);
    const out = Tensor.zeros(q.shape);
    attentionForward(
      backend(),
      {
        batch: input.batch, queries: T, keys: cache.length + T, kvCapacity: cache.capacity, heads: H, kvHeads: HKV, headDim: D,
        queryOffset: cache.length, causal: true, keyMask: input.keyMask ?? null, segments: null,
      },
      q.data, cache.keys[this.layerIndex], cache.values[this.layerIndex], out.data, null,
    );
    return out;
  }
}

export class DecoderMlp extends Projections {
  constructor(cfg: DecoderConfig) {
    super();
    const { hiddenSize: C, intermediateSize: I } = cfg;
    this.addProjection('gate_proj', new Linear(C, I, cfg.mlpBias));
    this.addProjection('up_proj', new Linear(C, I, cfg.mlpBias));
    this.addProjection('down_proj', new Linear(I, C, cfg.mlpBias));
  }

  forward(x: Tensor): Tensor {
    return this.proj.down_proj.forward(swiglu(this.proj.gate_proj.forward(x), this.proj.up_proj.forward(x)));
  }
}

export class DecoderLayer extends Module {
  readonly self_attn: DecoderAttention;
  readonly mlp: DecoderMlp;
  readonly input_layernorm: RMSNorm;
  readonly post_attention_layernorm: RMSNorm;

  constructor(cfg: DecoderConfig, index: number) {
    super();
    this.self_attn = this.registerModule('self_attn', new DecoderAttention(cfg, index));
    this.mlp = this.registerModule('mlp', new DecoderMlp(cfg));
    this.input_layernorm = this.registerModule('input_layernorm', new RMSNorm(cfg.hiddenSize, cfg.rmsNormEps));
    this.post_attention_layernorm = this.registerModule('post_attention_layernorm', new RMSNorm(cfg.hiddenSize, cfg.rmsNormEps));
  }

  forward(x: Tensor, input: DecoderInput, positions: Int32Array, tables: RopeTables): Tensor {
    const h = add(x, this.self_attn.forward(this.input_layernorm.forward(x), input, positions, tables));
    return add(h, this.mlp.forward(this.post_attention_layernorm.forward(h)));
  }
}

/** The transformer body (`model.` in checkpoints): embeddings, layers, final norm. */
export class DecoderModel extends Module {
  readonly embed_tokens: Embedding;
  readonly layers: ModuleList<DecoderLayer>;
  readonly norm: RMSNorm;

  constructor(cfg: DecoderConfig) {
    super();
    this.embed_tokens = this.registerModule('embed_tokens', new Embedding(cfg.vocabSize, cfg.hiddenSize));
    this.layers = this.registerModule('layers', new ModuleList(Array.from({ length: cfg.numLayers }, (_, i) => new DecoderLayer(cfg, i))));
    this.norm = this.registerModule('norm', new RMSNorm(cfg.hiddenSize, cfg.rmsNormEps));
  }
}

/**
 * Llama, Mistral, Qwen2/2.5 and Qwen3 as one causal language model: the members differ only in
 * the traits `DecoderConfig` records (biases, q/k norms, tied head, rotary settings).
 */
export class CausalLM extends Module {
  readonly model: DecoderModel;
  readonly lm_head: Linear | null;
  readonly ropeTables: RopeTables;
  /**
   * Activation checkpointing (`gradient_checkpointing`): while a graph is recorded, each layer
   * keeps only its input and is run again in backward. Same gradients, less memory, one more
   * forward per step. The trainer sets it from the config.
   */
  gradientCheckpointing = false;

  constructor(readonly config: DecoderConfig) {
    super();
    this.model = this.registerModule('model', new DecoderModel(config));
    this.lm_head = config.tieWordEmbeddings ? null : this.registerModule('lm_head', new Linear(config.hiddenSize, config.vocabSize));
    this.ropeTables = new RopeTables(config.rope);
  }

  /** Final-normed hidden states, [batch, length, hidden]. */
  hidden(input: DecoderInput): Tensor {
    const { batch: B, length: T } = input;
    if (input.ids.length !== B * T) throw new Error(`forward: ${input.ids.length} ids for ${B}×${T} tokens`);
    const positions = input.positions ?? defaultPositions(B, T, input.cache?.length ?? 0);
    let x = this.model.embed_tokens.forward(input.ids, [B, T]);
    for (const layer of this.model.layers.items) x = this.layerForward(layer, x, input, positions);
    if (input.cache) input.cache.advance(T);
    return this.model.norm.forward(x);
  }

  /**
   * One layer, through `checkpoint` when `gradientCheckpointing` is on. The recomputation draws
   * the same LoRA dropout masks: each adapter is pinned to the generator it used in the forward,
   * which `checkpoint` restarts from the same state. A layer with no trainable parameter whose
   * input needs no gradient (below the lowest trainable one) is neither kept nor recomputed.
   */
  private layerForward(layer: DecoderLayer, x: Tensor, input: DecoderInput, positions: Int32Array): Tensor {
    const tables = this.ropeTables;
    // A KV cache is for inference, where no graph is recorded; running it twice would write twice.
    if (!this.gradientCheckpointing || input.cache) return layer.forward(x, input, positions, tables);
    const adapters = [...layer.namedModules()].map(([, m]) => m).filter((m): m is LoraLinear => m instanceof LoraLinear);
    const rngs = adapters.map((a) => a.dropoutRng);
    const run = (h: Tensor): Tensor => {
      const before = adapters.map((a) => a.dropoutRng);
      adapters.forEach((a, i) => (a.dropoutRng = rngs[i]));
      try {
        return layer.forward(h, input, positions, tables);
      } finally {
        adapters.forEach((a, i) => (a.dropoutRng = before[i]));
      }
    };
    return checkpoint(run, [x], { params: layer.parameters(), rngs });
  }

  /** The output head's weight: lm_head, or the embedding matrix when tied. */
  outputWeight(): Tensor {
    return this.lm_head ? this.lm_head.weight : this.model.embed_tokens.weight;
  }

  /** Logits over the vocabulary for hidden states [..., hidden]. */
  logits(hidden: Tensor): Tensor {
    return linear(hidden, this.outputWeight());
  }

  forward(input: DecoderInput): Tensor {
    return this.logits(this.hidden(input));
  }
}

export function defaultPositions(batch: number, length: number, offset: number): Int32Array {
  const p = new Int32Array(batch * length);
  for (let b = 0; b < batch; b++) for (let t = 0; t < length; t++) p[b * length + t] = offset + t;
  return p;
}
