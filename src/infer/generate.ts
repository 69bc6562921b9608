import type { CausalLM } from '../models/decoder.js';
import { KVCache } from '../models/kv-cache.js';
import { Tensor, noGrad } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import type { Tokenizer } from '../text/tokenizer.js';
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
 * Continues `promptIds` with the KV cache: one forward over the prompt, then one position per
 * new token, so each step costs one token's worth of compute.
 */
export function generate(model: CausalLM, tokenizer: Tokenizer, promptIds: readonly number[], opts: GenerateOptions): GenerateResult {
  if (promptIds.length === 0) throw new Error('generate: the prompt is empty');
  return noGrad(() => {
    const rng = new Rng(opts.seed);
    const cache = new KVCache(model.config, 1, promptIds.length + opts.maxNewTokens);
    const decoder = tokenizer.createStreamDecoder({ skipSpecialTokens: true });
    const watcher = new StopStringWatcher(opts.stopStrings);
    const stopIds = new Set(opts.stopTokenIds);
    const seen = [...promptIds];
    const ids: number[] = [];
    let finishReason: GenerateResult['finishReason'] = 'length';
    const t0 = performance.now();
    let logits = lastLogits(model, Int32Array.from(promptIds), cache);
    const t1 = performance.now();
    while (ids.length < opts.maxNewTokens) {
      if (opts.signal?.aborted) {
        finishReason = 'aborted';
        break;
      }
      const next = sampleToken(logits, opts, rng, seen);
      if (stopIds.has(next)) {
        finishReason = 'stop';
        break;
      }
      ids.push(next);
      seen.push(next);
      const shown = watcher.push(decoder.push(next));
      if (shown) opts.onText?.(shown);
      if (watcher.stopped) {
        finishReason = 'stop';
        break;
      }
      if (ids.length < opts.maxNewTokens) logits = lastLogits(model, Int32Array.of(next), cache);
    }
    const rest = watcher.stopped ? '' : watcher.push(decoder.flush()) + watcher.flush();
    if (rest) opts.onText?.(rest);
    return {
      text: watcher.fullText,
      ids,
      promptTokens: promptIds.length,
      finishReason,
      prefillMs: t1 - t0,
      decodeMs: performance.now() - t1,
    };
  });
}

/** Runs new tokens through the model and returns the logits of the last one. */
function lastLogits(model: CausalLM, ids: Int32Array, cache: KVCache): Float32Array {
  const h = model.hidden({ ids, batch: 1, length: ids.length, cache });
  const c = model.config.hiddenSize;
  const last = new Tensor(h.data.subarray((ids.length - 1) * c, ids.length * c), [1, c]);
  return model.logits(last).data;
}
