/**
 * Random-weight model folders from presets, read back: sharded saves, bf16 folders, and the
 * tiny-llama and tiny-qwen3 presets end to end.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { generate } from '../src/infer/generate.js';
import { encodeChatPrompt, loadPipeline } from '../src/infer/pipeline.js';
import { GREEDY } from '../src/infer/sampling.js';
import { initModel } from '../src/io/init-model.js';
import { loadModel, saveModel } from '../src/io/model-folder.js';
import { readSafetensors } from '../src/io/safetensors.js';
import type { CausalLM } from '../src/models/decoder.js';
import { PRESETS } from '../src/models/presets.js';
import { UserError } from '../src/errors.js';
import { noGrad } from '../src/tensor/tensor.js';
import { removeDir, tempDir } from './helpers/adapter-fixtures.js';

let root: string;

before(() => {
  root = tempDir('init-model');
});

after(() => {
  if (root) removeDir(root);
});

const IDS = [5, 300, 17, 900, 42, 42, 7, 1000, 3, 250, 64, 1];

function logitsOf(model: CausalLM, ids = IDS): Float32Array {
  return noGrad(() => model.forward({ ids: Int32Array.from(ids), batch: 1, length: ids.length })).data;
}

function maxAbs(x: Float32Array): number {
  let m = 0;
  for (const v of x) m = Math.max(m, Math.abs(v));
  return m;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** float32 → bfloat16 → float32, rounding to nearest even, as torch does. */
function roundToBf16(x: Float32Array): Float32Array {
  const bits = new Uint32Array(Float32Array.from(x).buffer);
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i];
    bits[i] = ((b + 0x7fff + ((b >>> 16) & 1)) >>> 0) & 0xffff0000;
  }
  return new Float32Array(bits.buffer);
}

describe('initModel', () => {
  it('the same seed writes the same weights; another seed different ones', () => {
    const a = initModel({ preset: 'tiny', out: path.join(root, 'seed-a'), seed: 3 });
    const b = initModel({ preset: 'tiny', out: path.join(root, 'seed-b'), seed: 3 });
    const c = initModel({ preset: 'tiny', out: path.join(root, 'seed-c'), seed: 4 });
    const pa = [...a.namedParameters()];
    const pb = new Map(b.namedParameters());
    const pc = new Map(c.namedParameters());
    for (const [name, t] of pa) {
      assert.deepEqual(t.data, pb.get(name)!.data, name);
    }
    assert.notDeepEqual(pa.find(([n]) => n === 'model.embed_tokens.weight')![1].data, pc.get('model.embed_tokens.weight')!.data);
  });

  it('the folder reloads to the model it returned, logits bit for bit', () => {
    const dir = path.join(root, 'reload');
    const made = initModel({ preset: 'tiny', out: dir, seed: 5 });
    assert.deepEqual(logitsOf(loadModel(dir)), logitsOf(made));
  });

  it('an unknown preset is a UserError listing the presets', () => {
    assert.throws(() => initModel({ preset: 'huge', out: path.join(root, 'huge') }), (e: unknown) => {
      assert.ok(e instanceof UserError);
      for (const name of Object.keys(PRESETS)) assert.ok(e.message.includes(name), e.message);
      return true;
    });
    assert.ok(!fs.existsSync(path.join(root, 'huge')), 'a failed init-model should not leave a folder');
  });

  it('the qwen2.5-0.5b preset has the real model\'s shape', () => {
    const c = PRESETS['qwen2.5-0.5b'].config;
    assert.equal(c.model_type, 'qwen2');
    assert.deepEqual(
      [c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size, c.vocab_size, c.tie_word_embeddings, c.rope_theta],
      [896, 24, 14, 2, 4864, 151936, true, 1000000],
    );
  });
});

describe('sharded folders', () => {
  it('a small maxShardBytes writes shards and an index; loadModel reads them back to identical logits', () => {
    const source = path.join(root, 'shard-source');
    const model = initModel({ preset: 'tiny-llama', out: source, seed: 6 });
    const dir = path.join(root, 'sharded');
    saveModel(model, dir, { maxShardBytes: 100_000, copyFrom: source });
    const files = fs.readdirSync(dir);
    const shards = files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).sort();
    assert.ok(shards.length >= 3, `only ${shards.length} shards: ${files}`);
    assert.ok(!files.includes('model.safetensors'));
    shards.forEach((f, i) => assert.equal(f, `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`));
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8')) as { metadata: { total_size: number }; weight_map: Record<string, string> };
    const names = [...model.namedParameters()].map(([n]) => n);
    assert.deepEqual(Object.keys(index.weight_map).sort(), [...names].sort());
    assert.deepEqual([...new Set(Object.values(index.weight_map))].sort(), shards);
    assert.equal(index.metadata.total_size, model.parameters().reduce((n, t) => n + t.size * 4, 0));
    // Every shard but one holding a single oversized tensor stays within the limit.
    for (const f of shards) {
      const file = readSafetensors(path.join(dir, f));
      const bytes = file.names().reduce((n, name) => n + file.info(name).shape.reduce((a, b) => a * b, 1) * 4, 0);
      assert.ok(bytes <= 100_000 || file.names().length === 1, `${f} holds ${bytes} bytes`);
      file.close();
    }
    const reloaded = loadModel(dir);
    assert.deepEqual(logitsOf(reloaded), logitsOf(model));
    // And it is a working model folder: the pipeline loads and generates.
    const p = loadPipeline(dir);
    const result = generate(p.model, p.tokenizer, encodeChatPrompt(p, [{ role: 'user', content: 'hi' }]), { ...GREEDY, maxNewTokens: 4, seed: 0, stopTokenIds: [], stopStrings: [] });
    assert.equal(result.ids.length, 4);
  });

  it('saving unsharded over a sharded folder removes the old shards and index', () => {
    const dir = path.join(root, 'resave');
    const model = initModel({ preset: 'tiny', out: path.join(root, 'resave-src'), seed: 7 });
    saveModel(model, dir, { maxShardBytes: 100_000 });
    assert.ok(fs.existsSync(path.join(dir, 'model.safetensors.index.json')));
    saveModel(model, dir);
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('safetensors')), ['model.safetensors']);
    assert.deepEqual(logitsOf(loadModel(dir)), logitsOf(model));
  });
});

describe('bf16 folders', () => {
  let f32: CausalLM;
  let bf16: CausalLM;
  let bf16Dir: string;

  before(() => {
    f32 = initModel({ preset: 'tiny-llama', out: path.join(root, 'f32'), seed: 8 });
    bf16Dir = path.join(root, 'bf16');
    initModel({ preset: 'tiny-llama', out: bf16Dir, seed: 8, dtype: 'BF16' });
    bf16 = loadModel(bf16Dir);
  });

  it('stores BF16 tensors and says so in config.json', () => {
    const config = JSON.parse(fs.readFileSync(path.join(bf16Dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(config.torch_dtype, 'bfloat16');
    const file = readSafetensors(path.join(bf16Dir, 'model.safetensors'));
    try {
      for (const name of file.names()) assert.equal(file.info(name).dtype, 'BF16', name);
    } finally {
      file.close();
    }
    const f32Size = fs.statSync(path.join(root, 'f32', 'model.safetensors')).size;
    const bf16Size = fs.statSync(path.join(bf16Dir, 'model.safetensors')).size;
    assert.ok(Math.abs(bf16Size - f32Size / 2) < 20_000, `${bf16Size} vs half of ${f32Size}`);
  });

  it('holds the f32 weights rounded to nearest-even bfloat16', () => {
    const want = new Map(f32.namedParameters());
    for (const [name, t] of bf16.namedParameters()) {
      assert.deepEqual(t.data, roundToBf16(want.get(name)!.data), name);
    }
  });

  it('gives logits within bf16 tolerance of the f32 model, and not equal to them', () => {
    const a = logitsOf(f32);
    const b = logitsOf(bf16);
    const diff = maxAbsDiff(a, b);
    const scale = maxAbs(a);
    // bf16 keeps 8 significant bits (relative rounding 2^-9 ≈ 0.002 per weight).
    assert.ok(diff <= 0.02 * scale, `max |Δ| ${diff} against max |logit| ${scale}`);
    assert.ok(diff > 0, 'bf16 rounding should move the logits a little');
    // The tolerance is tight enough to fail: another seed's logits are far outside it.
    const other = initModel({ preset: 'tiny-llama', out: path.join(root, 'f32-other'), seed: 9 });
    assert.ok(maxAbsDiff(a, logitsOf(other)) > 0.2 * scale);
  });

  it('the CLI\'s --dtype bf16 writes the same folder', async () => {
    const { main } = await import('../src/cli/main.js');
    const out = path.join(root, 'bf16-cli');
    const log = console.log;
    console.log = () => {};
    try {
      assert.equal(await main(['init-model', '--preset', 'tiny-llama', '--out', out, '--seed', '8', '--dtype', 'bf16']), 0);
    } finally {
      console.log = log;
    }
    assert.ok(fs.readFileSync(path.join(out, 'model.safetensors')).equals(fs.readFileSync(path.join(bf16Dir, 'model.safetensors'))));
  });
});

describe('tiny presets', () => {
  for (const [preset, modelType, extra] of [
    ['tiny-llama', 'llama', 'lm_head.weight'],
    ['tiny-qwen3', 'qwen3', 'model.layers.0.self_attn.q_norm.weight'],
    ['tiny', 'qwen2', 'model.layers.0.self_attn.q_proj.bias'],
  ] as const) {
    it(`${preset} loads as ${modelType} and generates`, () => {
      const dir = path.join(root, `preset-${preset}`);
      initModel({ preset, out: dir, seed: 10 });
      const p = loadPipeline(dir);
      assert.equal(p.model.config.modelType, modelType);
      const names = [...p.model.namedParameters()].map(([n]) => n);
      assert.ok(names.includes(extra), `${preset} lacks ${extra}`);
      if (preset === 'tiny-llama') {
        assert.equal(p.model.config.tieWordEmbeddings, false);
        assert.ok(p.model.config.rope.llama3, 'llama3 rope scaling');
      }
      if (preset === 'tiny-qwen3') assert.equal(p.model.config.headDim, 32);
      const ids = encodeChatPrompt(p, [{ role: 'user', content: 'Hello' }]);
      const pieces: string[] = [];
      const result = generate(p.model, p.tokenizer, ids, { ...GREEDY, ...p.defaults, maxNewTokens: 6, seed: 0, stopTokenIds: [], stopStrings: [], onText: (s) => pieces.push(s) });
      assert.equal(result.ids.length, 6);
      assert.equal(result.finishReason, 'length');
      assert.ok(result.ids.every((id) => Number.isInteger(id) && id >= 0 && id < p.model.config.vocabSize));
      assert.equal(pieces.join(''), result.text);
    });
  }
});
