import type { CausalLM } from '../models/decoder.js';
import { KVCache } from '../models/kv-cache.js';
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import type { StreamDecoder, Tokenizer } from '../text/tokenizer.js';
import { sampleToken } from './sampling.js';
import type { SamplingOptions } from './sampling.js';
import { StopStringWatcher } from './stop-strings.js';

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens: number;
  seed: number;
  /** Token ids that end generation (not included in the text). */
  stopTokenIds: readonly number[];
  /** Strings that end generation; the text is cut before them. */
  stopStrings: readonly string[];
  /** Streaming: called with each new piece of text as soon as it is certain. */
  onText?: (piece: string) => void;
  /** Stops early when it turns true (a client went away, Ctrl-C). */
  signal?: AbortSignal;
}

export interface GenerateResult {
  text: string;
  ids: number[];
  promptTokens: number;
  finishReason: 'stop' | 'length' | 'aborted';
  prefillMs: number;
  decodeMs: number;
}

/**
 * One generation as a state machine, so the synchronous `generate` and the event-loop-friendly
 * `generateAsync` share every line of the decoding: the constructor runs the prompt through the
 * model (prefill, filling the KV cache); each `step()` samples one token, streams its text and
 * runs it through the model; `result()` flushes what the stop-string watcher held back.
 *
 * Runs the model, so every call must be made under `noGrad()`.
 */
export class Decoding {
  readonly ids: number[] = [];
  private readonly rng: Rng;
  private readonly cache: KVCache;
  private readonly decoder: StreamDecoder;
  private readonly watcher: StopStringWatcher;
  private readonly stopIds: Set<number>;
  private readonly seen: number[];
  private logits: Float32Array;
  private finish: GenerateResult['finishReason'] | null = null;
  private readonly prefillMs: number;
  private readonly decodeStart: number;

  constructor(
    private readonly model: CausalLM,
    tokenizer: Tokenizer,
    private readonly promptIds: readonly number[],
    private readonly opts: GenerateOptions,
  ) {
    if (promptIds.length === 0) throw new Error('generate: the prompt is empty');
    this.rng = new Rng(opts.seed);
    this.cache = new KVCache(model.config, 1, promptIds.length + opts.maxNewTokens);
    this.decoder = tokenizer.createStreamDecoder({ skipSpecialTokens: true });
    this.watcher = new StopStringWatcher(opts.stopStrings);
    this.stopIds = new Set(opts.stopTokenIds);
    this.seen = [...promptIds];
    const t0 = performance.now();
    this.logits = lastLogits(model, Int32Array.from(promptIds), this.cache);
    this.decodeStart = performance.now();
    this.prefillMs = this.decodeStart - t0;
    if (opts.maxNewTokens <= 0) this.finish = 'length';
  }

  /** True once a stop token, a stop string, the token limit or the abort signal ended it. */
  get done(): boolean {
    return this.finish !== null;
  }

  /** Samples the next token, streams its text and, unless that ends it, feeds it to the model. */
  step(): void {
    if (this.finish !== null) return;
    const { opts } = this;
    if (opts.signal?.aborted) {
      this.finish = 'aborted';
      return;
    }
    const next = sampleToken(this.logits, opts, this.rng, this.seen);
    if (this.stopIds.has(next)) {
      this.finish = 'stop';
      return;
    }
    this.ids.push(next);
    this.seen.push(next);
    const shown = this.watcher.push(this.decoder.push(next));
    if (shown) opts.onText?.(shown);
    if (this.watcher.stopped) {
      this.finish = 'stop';
      return;
    }
    if (this.ids.length >= opts.maxNewTokens) {
      this.finish = 'length';
      return;
    }
    this.logits = lastLogits(this.model, Int32Array.of(next), this.cache);
  }

  /** Ends the generation (flushing held-back text to `onText`) and reports it. */
  result(): GenerateResult {
    const finishReason = this.finish ?? 'length';
    const rest = this.watcher.stopped ? '' : this.watcher.push(this.decoder.flush()) + this.watcher.flush();
    if (rest) this.opts.onText?.(rest);
    return {
      text: this.watcher.fullText,
      ids: this.ids,
      promptTokens: this.promptIds.length,
      finishReason,
      prefillMs: this.prefillMs,
      decodeMs: performance.now() - this.decodeStart,
    };
  }
}

/** Runs new tokens through the model and returns the logits of the last one: the only row decoding needs. */
export function lastLogits(model: CausalLM, ids: Int32Array, cache: KVCache): Float32Array {
  const h = model.hidden({ ids, batch: 1, length: ids.length, cache });
  const c = model.config.hiddenSize;
  const last = new Tensor(h.data.subarray((ids.length - 1) * c, ids.length * c), [1, c]);
  return model.logits(last).data;
}
