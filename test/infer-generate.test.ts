/**
 * `generate` on tiny random models: the KV-cached path picks the tokens a full forward over the
 * growing sequence picks; streaming, limits, stop tokens, stop strings, seeds and aborting.
 *
 * The `tiny` preset ties its head to the embeddings, and with random weights its greedy output
 * repeats the last prompt token forever, which would let a broken cache pass. These tests use
 * untied heads (tiny-llama, and tiny with `tie_word_embeddings: false`), whose greedy outputs
 * vary, and check that they do.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { generate } from '../src/infer/generate.js';
import type { GenerateOptions } from '../src/infer/generate.js';
import { generateAsync } from '../src/infer/generate-async.js';
import { encodeChatPrompt, loadPipeline } from '../src/infer/pipeline.js';
import type { Pipeline } from '../src/infer/pipeline.js';
import { GREEDY, argmax } from '../src/infer/sampling.js';
import { initModel } from '../src/io/init-model.js';
import type { CausalLM } from '../src/models/decoder.js';
import { noGrad } from '../src/tensor/tensor.js';
import { removeDir, tempDir } from './helpers/adapter-fixtures.js';

let root: string;
const pipelines: Record<string, Pipeline> = {};

before(() => {
  root = tempDir('infer-generate');
  const llama = path.join(root, 'tiny-llama');
  initModel({ preset: 'tiny-llama', out: llama, seed: 1 });
  pipelines['tiny-llama'] = loadPipeline(llama);
  const qwen = path.join(root, 'tiny-untied');
  initModel({ preset: 'tiny', out: qwen, seed: 2, configOverrides: { tie_word_embeddings: false } });
  pipelines['tiny (qwen2, untied)'] = loadPipeline(qwen);
});

after(() => {
  if (root) removeDir(root);
});

function options(o: Partial<GenerateOptions> = {}): GenerateOptions {
  return { ...GREEDY, maxNewTokens: 24, seed: 0, stopTokenIds: [], stopStrings: [], ...o };
}

function promptIds(p: Pipeline, text = 'Hello, how are you?'): number[] {
  return encodeChatPrompt(p, [{ role: 'user', content: text }]);
}

/** The last position's logits of a full forward (no cache) over `ids`. */
function fullForwardLastLogits(model: CausalLM, ids: readonly number[]): Float32Array {
  return noGrad(() => {
    const logits = model.forward({ ids: Int32Array.from(ids), batch: 1, length: ids.length });
    const v = model.config.vocabSize;
    return logits.data.slice((ids.length - 1) * v, ids.length * v);
  });
}

/** Greedy decoding the slow way: the whole sequence through the model at every step. */
function manualGreedy(model: CausalLM, prompt: readonly number[], steps: number, penalty = 1): number[] {
  const seq = [...prompt];
  const out: number[] = [];
  for (let s = 0; s < steps; s++) {
    const logits = fullForwardLastLogits(model, seq);
    if (penalty !== 1) {
      // transformers' rule over every id so far, prompt included; each id once.
      for (const id of new Set(seq)) logits[id] = logits[id] < 0 ? logits[id] * penalty : logits[id] / penalty;
    }
    const next = argmax(logits);
    out.push(next);
    seq.push(next);
  }
  return out;
}

for (const name of ['tiny-llama', 'tiny (qwen2, untied)']) {
  describe(`generate on ${name}`, () => {
    it('greedy: the KV-cached path gives the tokens of a full forward over the growing sequence', () => {
      const p = pipelines[name];
      const ids = promptIds(p);
      const result = generate(p.model, p.tokenizer, ids, options());
      const expected = manualGreedy(p.model, ids, 24);
      assert.deepEqual(result.ids, expected);
      assert.equal(result.finishReason, 'length');
      assert.equal(result.promptTokens, ids.length);
      // The comparison means something only if the output is not one token repeated.
      assert.ok(new Set(expected).size >= 8, `greedy output too uniform to test the cache: ${expected}`);
    });

    it('repetition penalty: matches the full-forward loop with transformers\' rule over prompt and output', () => {
      const p = pipelines[name];
      const ids = promptIds(p);
      const plain = generate(p.model, p.tokenizer, ids, options({ maxNewTokens: 24 }));
      for (const penalty of [3, 0.5]) {
        const penalised = generate(p.model, p.tokenizer, ids, options({ maxNewTokens: 24, repetitionPenalty: penalty }));
        assert.deepEqual(penalised.ids, manualGreedy(p.model, ids, 24, penalty), `penalty ${penalty}`);
        // Below 1 the penalty favours the prompt's tokens, so the output must change.
        if (penalty < 1) assert.notDeepEqual(penalised.ids, plain.ids);
      }
    });
  });
}

describe('generate: streaming and text', () => {
  it('streamed pieces concatenate to the final text, which is the decoded ids', () => {
    const p = pipelines['tiny-llama'];
    const ids = promptIds(p);
    for (const o of [options({ maxNewTokens: 40 }), options({ maxNewTokens: 40, temperature: 1, seed: 5 })]) {
      const pieces: string[] = [];
      const result = generate(p.model, p.tokenizer, ids, { ...o, onText: (s) => pieces.push(s) });
      assert.ok(pieces.length > 1, 'the text should arrive in several pieces');
      assert.equal(pieces.join(''), result.text);
      assert.equal(result.text, p.tokenizer.decode(result.ids, { skipSpecialTokens: true }));
    }
  });
});

describe('generate: how it ends', () => {
  it('maxNewTokens is respected, with finishReason "length"', () => {
    const p = pipelines['tiny-llama'];
    for (const n of [1, 7]) {
      const result = generate(p.model, p.tokenizer, promptIds(p), options({ maxNewTokens: n }));
      assert.equal(result.ids.length, n);
      assert.equal(result.finishReason, 'length');
    }
    const none = generate(p.model, p.tokenizer, promptIds(p), options({ maxNewTokens: 0 }));
    assert.deepEqual(none.ids, []);
    assert.equal(none.text, '');
    assert.equal(none.finishReason, 'length');
  });

  it('a stop token id ends it with "stop"; the stop token is neither in the ids nor the text', () => {
    const p = pipelines['tiny-llama'];
    const ids = promptIds(p);
    const free = generate(p.model, p.tokenizer, ids, options({ maxNewTokens: 30 }));
    // Stop at the first token that first appears at position ≥ 3.
    const k = free.ids.findIndex((t, i) => i >= 3 && free.ids.indexOf(t) === i);
    assert.ok(k >= 3);
    const stop = free.ids[k];
    const pieces: string[] = [];
    const result = generate(p.model, p.tokenizer, ids, options({ maxNewTokens: 30, stopTokenIds: [stop], onText: (s) => pieces.push(s) }));
    assert.equal(result.finishReason, 'stop');
    assert.deepEqual(result.ids, free.ids.slice(0, k));
    assert.equal(result.text, p.tokenizer.decode(free.ids.slice(0, k), { skipSpecialTokens: true }));
    assert.equal(pieces.join(''), result.text);
  });

  it('a stop token as the very first choice gives an empty answer', () => {
    const p = pipelines['tiny-llama'];
    const ids = promptIds(p);
    const first = generate(p.model, p.tokenizer, ids, options({ maxNewTokens: 1 })).ids[0];
    const result = generate(p.model, p.tokenizer, ids, options({ stopTokenIds: [first] }));
    assert.deepEqual(result.ids, []);
    assert.equal(result.text, '');
    assert.equal(result.finishReason, 'stop');
  });

  it('stop strings cut the text before them, streamed and final alike', () => {
    const p = pipelines['tiny-llama'];
    const ids = promptIds(p);
    const free = generate(p.model, p.tokenizer, ids, options({ maxNewTokens: 40 }));
    // A short plain-text stretch from the middle of the free text as the stop string.
    const m = /[a-z]{2,4}/.exec(free.text.slice(6));
    assert.ok(m, `no plain-text stretch in ${JSON.stringify(free.text)}`);
    const stop = m[0];
    const cut = free.text.indexOf(stop);
    const pieces: string[] = [];
    const result = generate(p.model, p.tokenizer, ids, options({ maxNewTokens: 40, stopStrings: ['@@never@@', stop], onText: (s) => pieces.push(s) }));
    assert.equal(result.finishReason, 'stop');
    assert.equal(result.text, free.text.slice(0, cut));
    assert.equal(pieces.join(''), result.text);
    // It stopped at the token that completed the stop string: the ids are a prefix of the free run.
    assert.ok(result.ids.length < free.ids.length);
    assert.deepEqual(result.ids, free.ids.slice(0, result.ids.length));
    assert.ok(p.tokenizer.decode(result.ids, { skipSpecialTokens: true }).includes(stop));
    assert.ok(!p.tokenizer.decode(result.ids.slice(0, -1), { skipSpecialTokens: true }).includes(stop));
  });

  it('the model folder\'s own stop tokens (generation_config.json) end a turn', () => {
    const p = loadPipeline(path.join(root, 'tiny-llama'));
    const imEnd = p.tokenizer.tokenToId('<|im_end|>')!;
    assert.deepEqual(p.stopTokenIds, [imEnd, p.tokenizer.tokenToId('<|endoftext|>')!].sort((x, y) => x - y));
    const ids = promptIds(p);
    const first = generate(p.model, p.tokenizer, ids, options({ maxNewTokens: 1 })).ids[0];
    // Make <|im_end|> the best first token: its head row becomes twice the winner's.
    const head = p.model.outputWeight();
    const c = p.model.config.hiddenSize;
    for (let j = 0; j < c; j++) head.data[imEnd * c + j] = 2 * head.data[first * c + j];
    assert.equal(generate(p.model, p.tokenizer, ids, options({ maxNewTokens: 1 })).ids[0], imEnd);
    const result = generate(p.model, p.tokenizer, ids, options({ stopTokenIds: p.stopTokenIds }));
    assert.deepEqual(result.ids, []);
    assert.equal(result.finishReason, 'stop');
  });

  it('an already aborted signal stops before the first token, with "aborted"', () => {
    const p = pipelines['tiny-llama'];
    const controller = new AbortController();
    controller.abort();
    const result = generate(p.model, p.tokenizer, promptIds(p), options({ signal: controller.signal }));
    assert.deepEqual(result.ids, []);
    assert.equal(result.finishReason, 'aborted');
  });

  it('aborting mid-way stops at the next step, with "aborted" and the text so far', () => {
    const p = pipelines['tiny-llama'];
    const ids = promptIds(p);
    const free = generate(p.model, p.tokenizer, ids, options({ maxNewTokens: 30 }));
    const controller = new AbortController();
    const pieces: string[] = [];
    const result = generate(p.model, p.tokenizer, ids, options({
      maxNewTokens: 30,
      signal: controller.signal,
      onText: (s) => {
        pieces.push(s);
        if (pieces.length === 3) controller.abort();
      },
    }));
    assert.equal(result.finishReason, 'aborted');
    assert.ok(result.ids.length >= 3 && result.ids.length < 30, `${result.ids.length} tokens`);
    assert.deepEqual(result.ids, free.ids.slice(0, result.ids.length));
    assert.equal(pieces.join(''), result.text);
  });

  it('an empty prompt is refused', () => {
    const p = pipelines['tiny-llama'];
    assert.throws(() => generate(p.model, p.tokenizer, [], options()), /prompt is empty/);
  });
});

describe('generate: seeds', () => {
  it('the same seed at temperature 0.8 repeats exactly; another seed differs', () => {
    const p = pipelines['tiny-llama'];
    const ids = promptIds(p);
    const run = (seed: number) => generate(p.model, p.tokenizer, ids, options({ temperature: 0.8, topP: 0.95, seed, maxNewTokens: 20 }));
    const a = run(7);
    const b = run(7);
    const c = run(8);
    assert.deepEqual(a.ids, b.ids);
    assert.equal(a.text, b.text);
    assert.notDeepEqual(a.ids, c.ids);
    // Sampling, not greedy: it departs from the greedy output.
    assert.notDeepEqual(a.ids, generate(p.model, p.tokenizer, ids, options({ maxNewTokens: 20 })).ids);
  });

  it('generateAsync gives the same tokens as generate', async () => {
    const p = pipelines['tiny (qwen2, untied)'];
    const ids = promptIds(p, 'Tell me a story.');
    const o = options({ temperature: 0.9, topK: 50, seed: 11, maxNewTokens: 16 });
    const sync = generate(p.model, p.tokenizer, ids, o);
    const pieces: string[] = [];
    const async = await generateAsync(p.model, p.tokenizer, ids, { ...o, onText: (s) => pieces.push(s) });
    assert.deepEqual(async.ids, sync.ids);
    assert.equal(async.text, sync.text);
    assert.equal(pieces.join(''), async.text);
  });
});
