/**
 * Adapters in PEFT's format: what `saveAdapter` writes is read back here by the safetensors
 * rules themselves (header parsed by hand), and a folder written by hand the way PEFT's
 * `save_pretrained` writes it loads and computes W₀ + (alpha/r)·B·A. Every unsupported or
 * broken input gives a one-line message naming the file and the field or tensor.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { UserError } from '../src/errors.js';
import { loadAdapter, readAdapterConfig, saveAdapter } from '../src/io/peft-adapter.js';
import { parseDecoderConfig } from '../src/models/config.js';
import { CausalLM } from '../src/models/decoder.js';
import { initializeWeights } from '../src/models/init.js';
import { PRESETS } from '../src/models/presets.js';
import { applyLora, loraLayers } from '../src/nn/apply-lora.js';
import type { Linear } from '../src/nn/layers.js';
import { LoraLinear } from '../src/nn/lora.js';
import { Rng, noGrad } from '../src/tensor/index.js';

const V = 97;
const C = 64;
const KV = 32;
const IDS = Int32Array.from([3, 17, 42, 8, 95, 1, 60, 33, 12, 77, 5, 29]);

function tinyModel(seed = 1): CausalLM {
  const model = new CausalLM(parseDecoderConfig({ ...PRESETS.tiny.config, vocab_size: V }));
  initializeWeights(model, seed);
  return model;
}

function logits(model: CausalLM): Float32Array {
  model.eval();
  return noGrad(() => model.forward({ ids: IDS, batch: 2, length: 6 }).data.slice());
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

// --- safetensors by the format's own rules, independent of src/io/safetensors.ts -------------

interface RawTensor {
  dtype: string;
  shape: number[];
  data: Float32Array;
}

function readSafetensorsByHand(file: string): { tensors: Map<string, RawTensor>; metadata: unknown } {
  const bytes = fs.readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const tensors = new Map<string, RawTensor>();
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [begin, end] = e.data_offsets;
    const copy = new Uint8Array(bytes.subarray(8 + n + begin, 8 + n + end));
    tensors.set(name, { dtype: e.dtype, shape: e.shape, data: new Float32Array(copy.buffer) });
  }
  return { tensors, metadata: header.__metadata__ };
}

/** As safetensors' Python `save_file` writes: u64 LE header length, JSON header padded with spaces to 8, data. */
function writeSafetensorsByHand(file: string, tensors: Array<[string, number[], Float32Array]>): void {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const [name, shape, data] of tensors) {
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  fs.writeFileSync(file, Buffer.concat([length, Buffer.from(json), ...tensors.map(([, , d]) => Buffer.from(d.buffer, d.byteOffset, d.byteLength))]));
}

/** adapter_config.json as PEFT 0.15 writes it for a causal LM, extra fields included. */
function peftConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: 'Qwen/Qwen2.5-0.5B-Instruct',
    bias: 'none',
    corda_config: null,
    eva_config: null,
    exclude_modules: null,
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: 16,
    lora_bias: false,
    lora_dropout: 0.05,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    peft_type: 'LORA',
    r: 2,
    rank_pattern: {},
    revision: null,
    target_modules: ['k_proj', 'q_proj'],
    task_type: 'CAUSAL_LM',
    trainable_token_indices: null,
    use_dora: false,
    use_rslora: false,
    ...overrides,
  };
}

const PROJ_OUT: Record<string, number> = { q_proj: C, k_proj: KV, v_proj: KV, o_proj: C };

/** Random A [r, in] and B [out, r] for the given attention projections, with PEFT's key names. */
function peftTensors(
  r: number,
  modules: Array<[layer: number, proj: string]>,
  seed: number,
  infix = '',
): Array<[string, number[], Float32Array]> {
  const rng = new Rng(seed);
  const out: Array<[string, number[], Float32Array]> = [];
  for (const [layer, proj] of modules) {
    const p = `base_model.model.model.layers.${layer}.self_attn.${proj}`;
    out.push([`${p}.lora_A${infix}.weight`, [r, C], rng.fillNormal(new Float32Array(r * C), 0.1)]);
    out.push([`${p}.lora_B${infix}.weight`, [PROJ_OUT[proj], r], rng.fillNormal(new Float32Array(PROJ_OUT[proj] * r), 0.1)]);
  }
  return out;
}

const BOTH_LAYERS_QK: Array<[number, string]> = [[0, 'q_proj'], [0, 'k_proj'], [1, 'q_proj'], [1, 'k_proj']];

function writeAdapterFolder(dir: string, config: Record<string, unknown>, tensors: Array<[string, number[], Float32Array]>): string {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2));
  writeSafetensorsByHand(path.join(dir, 'adapter_model.safetensors'), tensors);
  return dir;
}

/** The base model with W ← W + scaling·B·A applied by hand (float64) for every tensor pair. */
function mergedByHand(tensors: Array<[string, number[], Float32Array]>, scaling: number, seed = 1): CausalLM {
  const model = tinyModel(seed);
  const byName = new Map(tensors.map(([n, s, d]) => [n.replace('.default', ''), { s, d }]));
  for (const [name, { s, d: a }] of byName) {
    if (!name.endsWith('.lora_A.weight')) continue;
    const modulePath = name.slice('base_model.model.'.length, -'.lora_A.weight'.length);
    const b = byName.get(name.replace('lora_A', 'lora_B'))!;
    const w = (model.getModule(modulePath) as Linear).weight;
    const [r, inF] = s;
    const out = b.s[0];
    for (let o = 0; o < out; o++) {
      for (let i = 0; i < inF; i++) {
        let delta = 0;
        for (let k = 0; k < r; k++) delta += b.d[o * r + k] * a[k * inF + i];
        w.data[o * inF + i] += scaling * delta;
      }
    }
  }
  return model;
}

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tunekit-peft-'));
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('saveAdapter', () => {
  it("writes PEFT's key names, shapes and F32, and the config fields PEFT writes", () => {
    const model = tinyModel();
    const applied = applyLora(model, { r: 4, alpha: 16, dropout: 0.1, seed: 3 });
    new Rng(4).fillNormal(loraLayers(model)[0][1].lora_B.weight.data, 0.1);
    const dir = path.join(tmp, 'saved');
    saveAdapter(model, applied, dir, { baseModelNameOrPath: 'Qwen/Qwen2.5-0.5B-Instruct' });

    assert.deepEqual(fs.readdirSync(dir).sort(), ['adapter_config.json', 'adapter_model.safetensors'], 'no temporary files left');
    const { tensors, metadata } = readSafetensorsByHand(path.join(dir, 'adapter_model.safetensors'));
    assert.deepEqual(metadata, { format: 'pt' });
    const want = new Map<string, number[]>();
    for (const layer of [0, 1]) {
      const p = `base_model.model.model.layers.${layer}.self_attn`;
      want.set(`${p}.q_proj.lora_A.weight`, [4, C]);
      want.set(`${p}.q_proj.lora_B.weight`, [C, 4]);
      want.set(`${p}.v_proj.lora_A.weight`, [4, C]);
      want.set(`${p}.v_proj.lora_B.weight`, [KV, 4]);
    }
    assert.deepEqual([...tensors.keys()].sort(), [...want.keys()].sort());
    const params = new Map(model.namedParameters());
    for (const [name, t] of tensors) {
      assert.equal(t.dtype, 'F32', name);
      assert.deepEqual(t.shape, want.get(name), name);
      assert.deepEqual(t.data, params.get(name.slice('base_model.model.'.length))!.data, `${name} holds the model's values`);
    }

    const config = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(Object.keys(config), Object.keys(config).sort(), 'keys sorted, as PEFT writes them');
    const expected: Record<string, unknown> = {
      peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 4, lora_alpha: 16, lora_dropout: 0.1, target_modules: ['q_proj', 'v_proj'],
      use_rslora: false, base_model_name_or_path: 'Qwen/Qwen2.5-0.5B-Instruct', bias: 'none', fan_in_fan_out: false,
      inference_mode: true, init_lora_weights: true, modules_to_save: null, layers_to_transform: null, layers_pattern: null,
      rank_pattern: {}, alpha_pattern: {}, use_dora: false, revision: null, megatron_config: null, loftq_config: {},
    };
    for (const [k, v] of Object.entries(expected)) assert.deepEqual(config[k], v, k);
  });

  it('records rsLoRA, gaussian init, all targets, and full paths when only some layers are wrapped', () => {
    const model = tinyModel();
    const applied = applyLora(model, { r: 2, alpha: 4, targets: 'all', init: 'gaussian', useRslora: true });
    saveAdapter(model, applied, path.join(tmp, 'rs'));
    const config = readAdapterConfig(path.join(tmp, 'rs'));
    assert.deepEqual(config.settings, { r: 2, alpha: 4, dropout: 0, useRslora: true, init: 'gaussian' });
    assert.deepEqual(config.targetModules, ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
    assert.equal(config.raw.init_lora_weights, 'gaussian');
    assert.equal(config.baseModelNameOrPath, null);

    const partial = tinyModel();
    const dir = writeAdapterFolder(path.join(tmp, 'regex-src'), peftConfig({ target_modules: 'model\\.layers\\.0\\.self_attn\\.q_proj' }), peftTensors(2, [[0, 'q_proj']], 5));
    const loaded = loadAdapter(partial, dir);
    saveAdapter(partial, loaded, path.join(tmp, 'partial'));
    assert.deepEqual(readAdapterConfig(path.join(tmp, 'partial')).targetModules, ['model.layers.0.self_attn.q_proj']);
  });

  it('refuses a model without LoRA layers', () => {
    const model = tinyModel();
    const applied = applyLora(tinyModel(), { r: 2 });
    assert.throws(() => saveAdapter(model, applied, path.join(tmp, 'none')), /no LoRA layers/);
  });
});

describe('loadAdapter', () => {
  it('save → load into a fresh model gives identical logits', () => {
    const trained = tinyModel();
    const applied = applyLora(trained, { r: 4, alpha: 8, targets: ['q_proj', 'v_proj', 'down_proj'], seed: 7 });
    const rng = new Rng(8);
    for (const [, l] of loraLayers(trained)) rng.fillNormal(l.lora_B.weight.data, 0.05);
    const dir = path.join(tmp, 'roundtrip');
    saveAdapter(trained, applied, dir);
    const want = logits(trained);
    assert.ok(maxAbsDiff(want, logits(tinyModel())) > 1e-3, 'the adapter must change the logits');

    const fresh = tinyModel();
    const loaded = loadAdapter(fresh, dir);
    assert.deepEqual(loaded.settings, applied.settings);
    assert.deepEqual(loaded.targetModules, applied.targetModules);
    assert.deepEqual([...loaded.paths].sort(), [...applied.paths].sort());
    assert.deepEqual(logits(fresh), want);
    const trainable = fresh.trainableParameters().map(([n]) => n);
    assert.equal(trainable.length, 2 * applied.paths.length);
    for (const n of trainable) assert.match(n, /\.lora_[AB]\.weight$/);
  });

  it('loads a folder written the way PEFT writes it, extra config fields and all', () => {
    const tensors = peftTensors(2, BOTH_LAYERS_QK, 9);
    const config = peftConfig({ peft_version: '0.15.2', megatron_config: null, loftq_config: {}, exclude_modules: null, lora_bias: false });
    const dir = writeAdapterFolder(path.join(tmp, 'peft'), config, tensors);
    const model = tinyModel();
    const loaded = loadAdapter(model, dir);
    assert.deepEqual(loaded.settings, { r: 2, alpha: 16, dropout: 0.05, useRslora: false, init: 'kaiming' });
    assert.equal(loaded.config.baseModelNameOrPath, 'Qwen/Qwen2.5-0.5B-Instruct');
    assert.deepEqual(loaded.targetModules, ['k_proj', 'q_proj']);
    assert.equal(loraLayers(model).length, 4);
    // W₀ + (16/2)·B·A, worked out by hand on a second copy of the base model.
    const byHand = logits(mergedByHand(tensors, 16 / 2));
    assert.ok(maxAbsDiff(byHand, logits(tinyModel())) > 1e-3, 'the adapter must change the logits');
    assert.ok(maxAbsDiff(logits(model), byHand) < 1e-5, `loaded adapter vs W₀ + s·BA: ${maxAbsDiff(logits(model), byHand)}`);
  });

  it('uses alpha/√r when use_rslora is true', () => {
    const tensors = peftTensors(4, BOTH_LAYERS_QK, 10);
    const dir = writeAdapterFolder(path.join(tmp, 'peft-rs'), peftConfig({ r: 4, use_rslora: true }), tensors);
    const model = tinyModel();
    loadAdapter(model, dir);
    assert.ok(maxAbsDiff(logits(model), logits(mergedByHand(tensors, 16 / 2))) < 1e-5);
  });

  it("accepts keys with PEFT's adapter-name infix (lora_A.default.weight)", () => {
    const tensors = peftTensors(2, BOTH_LAYERS_QK, 11, '.default');
    const dir = writeAdapterFolder(path.join(tmp, 'infix'), peftConfig(), tensors);
    const model = tinyModel();
    loadAdapter(model, dir);
    assert.ok(maxAbsDiff(logits(model), logits(mergedByHand(tensors, 8))) < 1e-5);
  });

  it('matches a regex target_modules against full module paths, and a plain string as one name', () => {
    const regex = writeAdapterFolder(
      path.join(tmp, 'regex'),
      peftConfig({ target_modules: '.*layers\\.0\\.self_attn\\.(q|k)_proj' }),
      peftTensors(2, [[0, 'q_proj'], [0, 'k_proj']], 12),
    );
    const model = tinyModel();
    const loaded = loadAdapter(model, regex);
    assert.deepEqual([...loaded.paths].sort(), ['model.layers.0.self_attn.k_proj', 'model.layers.0.self_attn.q_proj']);
    assert.equal(model.getModule('model.layers.1.self_attn.q_proj') instanceof LoraLinear, false);
    assert.equal(model.trainableParameters().length, 4);

    const plain = writeAdapterFolder(path.join(tmp, 'plain'), peftConfig({ target_modules: 'q_proj' }), peftTensors(2, [[0, 'q_proj'], [1, 'q_proj']], 13));
    assert.deepEqual(loadAdapter(tinyModel(), plain).paths.sort(), ['model.layers.0.self_attn.q_proj', 'model.layers.1.self_attn.q_proj']);

    const excluded = writeAdapterFolder(
      path.join(tmp, 'exclude'),
      peftConfig({ target_modules: ['q_proj'], exclude_modules: ['model.layers.1.self_attn.q_proj'] }),
      peftTensors(2, [[0, 'q_proj']], 14),
    );
    assert.deepEqual(loadAdapter(tinyModel(), excluded).paths, ['model.layers.0.self_attn.q_proj']);
  });

  describe('bad input', () => {
    const good = (): Array<[string, number[], Float32Array]> => peftTensors(2, BOTH_LAYERS_QK, 20);
    let n = 0;
    /** Loads a folder and expects a one-line UserError matching every pattern; the model stays untouched. */
    function expectError(config: Record<string, unknown> | null, tensors: Array<[string, number[], Float32Array]> | null, ...patterns: RegExp[]): void {
      const dir = path.join(tmp, `bad-${n++}`);
      fs.mkdirSync(dir, { recursive: true });
      if (config) fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(config));
      if (tensors) writeSafetensorsByHand(path.join(dir, 'adapter_model.safetensors'), tensors);
      const model = tinyModel();
      assert.throws(
        () => loadAdapter(model, dir),
        (e: unknown) => {
          assert.ok(e instanceof UserError, `expected a UserError, got ${String(e)}`);
          assert.ok(!e.message.includes('\n'), `message is not one line: ${e.message}`);
          assert.ok(e.message.includes(dir), `message does not name the folder or file: ${e.message}`);
          for (const p of patterns) assert.match(e.message, p);
          return true;
        },
      );
      assert.equal(loraLayers(model).length, 0, 'a failed load must leave the model as it was');
      assert.equal(model.trainableParameters().length, [...model.namedParameters()].length, 'a failed load must not freeze the model');
    }

    it('a folder without adapter_config.json', () => expectError(null, good(), /no adapter_config\.json/));
    it('a missing folder', () => {
      assert.throws(() => readAdapterConfig(path.join(tmp, 'nowhere')), (e: unknown) => e instanceof UserError && /does not exist/.test(e.message));
    });
    it('peft_type other than LORA', () => expectError(peftConfig({ peft_type: 'IA3' }), good(), /adapter_config\.json: "peft_type" is "IA3"/, /LORA/));
    it('use_dora: true', () => expectError(peftConfig({ use_dora: true }), good(), /adapter_config\.json: "use_dora" is true/, /DoRA/));
    it('fan_in_fan_out: true', () => expectError(peftConfig({ fan_in_fan_out: true }), good(), /"fan_in_fan_out" is true/));
    it('lora_bias: true', () => expectError(peftConfig({ lora_bias: true }), good(), /"lora_bias" is true/));
    it('a rank_pattern', () => expectError(peftConfig({ rank_pattern: { q_proj: 8 } }), good(), /"rank_pattern" is \{"q_proj":8\}/, /per-layer ranks/));
    it('an alpha_pattern', () => expectError(peftConfig({ alpha_pattern: { q_proj: 8 } }), good(), /"alpha_pattern"/, /per-layer alphas/));
    it('modules_to_save', () => expectError(peftConfig({ modules_to_save: ['lm_head'] }), good(), /"modules_to_save" is \["lm_head"\]/));
    it('layers_to_transform', () => expectError(peftConfig({ layers_to_transform: [0] }), good(), /"layers_to_transform" is \[0\]/));
    it('bias other than none', () => expectError(peftConfig({ bias: 'all' }), good(), /"bias" is "all"/));
    it('a PiSSA init that rewrote the base weights', () => expectError(peftConfig({ init_lora_weights: 'pissa_niter_4' }), good(), /"init_lora_weights" is "pissa_niter_4"/));
    it('a bad r', () => expectError(peftConfig({ r: 0 }), good(), /"r" must be a positive integer, got 0/));
    it('a target the model lacks', () => expectError(peftConfig({ target_modules: ['q_proj', 'c_attn'] }), good(), /"target_modules" names "c_attn"/));
    it('a target that is not a decoder linear layer', () => expectError(peftConfig({ target_modules: ['embed_tokens'] }), good(), /matches model\.embed_tokens/));
    it('a regex that matches nothing', () => expectError(peftConfig({ target_modules: '.*\\.c_attn' }), good(), /matches no module/));

    it('only adapter_model.bin', () => {
      const dir = path.join(tmp, 'bin-only');
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(peftConfig()));
      fs.writeFileSync(path.join(dir, 'adapter_model.bin'), 'PK');
      assert.throws(() => loadAdapter(tinyModel(), dir), (e: unknown) => e instanceof UserError && /only adapter_model\.bin/.test(e.message) && /safetensors/.test(e.message));
    });

    it('a missing tensor', () => {
      const tensors = good().filter(([name]) => !name.endsWith('layers.1.self_attn.k_proj.lora_B.weight'));
      expectError(peftConfig(), tensors, /adapter_model\.safetensors: has no tensor "base_model\.model\.model\.layers\.1\.self_attn\.k_proj\.lora_B\.weight"/);
    });

    it('an unexpected tensor', () => {
      const tensors = [...good(), ['base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector', [C], new Float32Array(C)] as [string, number[], Float32Array]];
      expectError(peftConfig(), tensors, /has tensor "base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_magnitude_vector"/);
    });

    it('tensors for v_proj when the config names q_proj and k_proj', () => {
      expectError(peftConfig(), [...good(), ...peftTensors(2, [[0, 'v_proj']], 21)], /has tensor "base_model\.model\.model\.layers\.0\.self_attn\.v_proj\.lora_[AB]\.weight"/);
    });

    it('a shape that does not fit r or the model', () => {
      expectError(peftConfig({ r: 4 }), good(), /tensor "base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight" has shape \[2, 64\] but r=4 and the model imply \[4, 64\]/);
    });

    it('one module stored twice, with and without the adapter name', () => {
      const tensors = [...good(), ...peftTensors(2, [[0, 'q_proj']], 22, '.default')];
      expectError(peftConfig(), tensors, /holds both/);
    });
  });
});
