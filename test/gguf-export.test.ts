/**
 * GGUF export read back with an independent parser (@huggingface/gguf, the Hub's own reader):
 * metadata by llama.cpp's converter rules, tensor names, shapes (ggml's innermost-first order)
 * and types, the bytes of each type, Q8_0's error bound, Llama's q/k permutation checked by what
 * it is for (it turns transformers' half-split rotation into llama.cpp's interleaved one), the
 * llama3 rope factors, and the LoRA adapter GGUF.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { gguf } from '@huggingface/gguf';

import { exportGgufFromArgs } from '../src/cli/commands/export-gguf.js';
import { FileFormatError, UserError } from '../src/errors.js';
import { bf16ToF32, f16ToF32, f32ToBf16 } from '../src/io/dtype.js';
import { exportGguf, exportLoraGguf, ggufTensorName, permuteRows } from '../src/io/gguf-export.js';
import { GgmlType, dequantizeQ8_0, quantizeQ8_0 } from '../src/io/gguf-writer.js';
import { loadModel, readJsonFile } from '../src/io/model-folder.js';
import { saveAdapter } from '../src/io/peft-adapter.js';
import type { CausalLM } from '../src/models/decoder.js';
import { applyLora, loraLayers } from '../src/nn/apply-lora.js';
import { Rng } from '../src/tensor/random.js';
import { writeRandomModel } from './helpers/adapter-fixtures.js';

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tunekit-gguf-'));
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A tiny preset with weights large enough that every tensor matters (random norms and biases too). */
function makeModel(preset: string, seed = 1): { dir: string; model: CausalLM } {
  const dir = path.join(tmp, `${preset}-${seed}`);
  if (!fs.existsSync(dir)) writeRandomModel(dir, preset, seed);
  return { dir, model: loadModel(dir) };
}

type Parsed = Awaited<ReturnType<typeof readGguf>>;

async function readGguf(file: string) {
  const parsed = await gguf(file, { allowLocalFile: true });
  const meta = parsed.metadata as unknown as Record<string, unknown>;
  const tensors = new Map(parsed.tensorInfos.map((t) => [t.name, { shape: t.shape.map(Number), dtype: t.dtype as number, offset: Number(t.offset) }]));
  const dataStart = Number(parsed.tensorDataOffset);
  /** The raw bytes of a tensor. */
  const bytes = (name: string, byteLength: number): Uint8Array => {
    const info = tensors.get(name);
    assert.ok(info, `no tensor ${name}`);
    const buf = new Uint8Array(byteLength);
    const fd = fs.openSync(file, 'r');
    try {
      fs.readSync(fd, buf, 0, byteLength, dataStart + info.offset);
    } finally {
      fs.closeSync(fd);
    }
    return buf;
  };
  const count = (name: string) => tensors.get(name)!.shape.reduce((a, b) => a * b, 1);
  const f32 = (name: string) => new Float32Array(bytes(name, count(name) * 4).buffer);
  const u16 = (name: string) => new Uint16Array(bytes(name, count(name) * 2).buffer);
  const q8 = (name: string) => dequantizeQ8_0(bytes(name, (count(name) / 32) * 34), count(name));
  return { meta, tensors, dataStart, f32, u16, q8 };
}

function param(model: CausalLM, name: string): Float32Array {
  const t = model.getParameter(name);
  assert.ok(t, `no parameter ${name}`);
  return t.data;
}

describe('GGUF export: Qwen2 (tiny preset, tied embeddings)', () => {
  let g: Parsed;
  let model: CausalLM;
  let dir: string;
  before(async () => {
    ({ dir, model } = makeModel('tiny'));
    exportGguf({ model: dir, out: path.join(tmp, 'qwen2-f32.gguf'), dtype: 'f32' });
    g = await readGguf(path.join(tmp, 'qwen2-f32.gguf'));
  });

  it('writes the qwen2 architecture keys from config.json', () => {
    const config = readJsonFile(path.join(dir, 'config.json'));
    const m = g.meta;
    assert.equal(m.version, 3);
    assert.equal(m['general.architecture'], 'qwen2');
    assert.equal(m['general.type'], 'model');
    assert.equal(m['general.file_type'], 0);
    assert.equal(m['general.quantization_version'], 2);
    assert.equal(m['qwen2.block_count'], config.num_hidden_layers);
    assert.equal(m['qwen2.context_length'], config.max_position_embeddings);
    assert.equal(m['qwen2.embedding_length'], config.hidden_size);
    assert.equal(m['qwen2.feed_forward_length'], config.intermediate_size);
    assert.equal(m['qwen2.attention.head_count'], config.num_attention_heads);
    assert.equal(m['qwen2.attention.head_count_kv'], config.num_key_value_heads);
    assert.equal(m['qwen2.rope.freq_base'], config.rope_theta);
    assert.equal(m['qwen2.attention.layer_norm_rms_epsilon'], Math.fround(config.rms_norm_eps as number));
    assert.equal(m['qwen2.attention.key_length'], undefined, 'no head_dim in config.json: llama.cpp derives it');
  });

  it('writes the tokenizer: tokens, types, merges, special ids, chat template', () => {
    const tj = readJsonFile(path.join(dir, 'tokenizer.json'));
    const tc = readJsonFile(path.join(dir, 'tokenizer_config.json'));
    const vocab = (tj.model as { vocab: Record<string, number>; merges: string[] }).vocab;
    const added = tj.added_tokens as Array<{ id: number; content: string }>;
    const tokens = g.meta['tokenizer.ggml.tokens'] as string[];
    const types = g.meta['tokenizer.ggml.token_type'] as number[];
    assert.equal(g.meta['tokenizer.ggml.model'], 'gpt2');
    assert.equal(g.meta['tokenizer.ggml.pre'], 'qwen2');
    assert.equal(tokens.length, model.config.vocabSize);
    for (const [token, id] of Object.entries(vocab)) assert.equal(tokens[id], token);
    for (const a of added) {
      assert.equal(tokens[a.id], a.content);
      assert.equal(types[a.id], 3, `${a.content} is a control token`);
    }
    assert.equal(types.filter((t) => t === 1).length, Object.keys(vocab).length);
    assert.deepEqual(g.meta['tokenizer.ggml.merges'], (tj.model as { merges: string[] }).merges);
    const id = (content: string) => added.find((a) => a.content === content)!.id;
    assert.equal(g.meta['tokenizer.ggml.eos_token_id'], id('<|im_end|>'));
    assert.equal(g.meta['tokenizer.ggml.padding_token_id'], id('<|endoftext|>'));
    assert.equal(g.meta['tokenizer.ggml.bos_token_id'], undefined, 'the tiny tokenizer has no bos');
    assert.equal(g.meta['tokenizer.ggml.add_bos_token'], false);
    assert.equal(g.meta['tokenizer.chat_template'], tc.chat_template);
  });

  it('names every tensor as llama.cpp does, omits output.weight when tied, keeps biases and norms f32', () => {
    const expected = ['token_embd.weight', 'output_norm.weight'];
    for (let b = 0; b < model.config.numLayers; b++) {
      for (const n of ['attn_norm', 'ffn_norm', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down']) expected.push(`blk.${b}.${n}.weight`);
      for (const n of ['attn_q', 'attn_k', 'attn_v']) expected.push(`blk.${b}.${n}.weight`, `blk.${b}.${n}.bias`);
    }
    assert.deepEqual([...g.tensors.keys()].sort(), expected.sort());
    const { hiddenSize: C, vocabSize: V, numKvHeads, headDim } = model.config;
    assert.deepEqual(g.tensors.get('token_embd.weight')!.shape, [C, V], 'ne is innermost first: [hidden, vocab]');
    assert.deepEqual(g.tensors.get('blk.0.attn_k.weight')!.shape, [C, numKvHeads * headDim]);
    assert.deepEqual(g.tensors.get('blk.0.attn_k.bias')!.shape, [numKvHeads * headDim]);
    for (const [, t] of g.tensors) assert.equal(t.dtype, GgmlType.F32);
    for (const [, t] of g.tensors) assert.equal(t.offset % 32, 0, 'tensor data is 32-byte aligned');
    assert.equal(g.dataStart % 32, 0);
  });

  it('stores the weights unchanged (no permutation for qwen2)', () => {
    for (const [name] of model.namedParameters()) {
      assert.deepEqual(g.f32(ggufTensorName(name)!), param(model, name), name);
    }
  });
});

describe('GGUF export: Llama (tiny-llama: untied head, llama3 rope scaling)', () => {
  let g: Parsed;
  let model: CausalLM;
  before(async () => {
    const m = makeModel('tiny-llama');
    model = m.model;
    exportGguf({ model: m.dir, out: path.join(tmp, 'llama-f32.gguf'), dtype: 'f32' });
    g = await readGguf(path.join(tmp, 'llama-f32.gguf'));
  });

  it('writes llama keys, output.weight, and rope_freqs as the converter computes them', () => {
    const c = model.config;
    assert.equal(g.meta['general.architecture'], 'llama');
    assert.equal(g.meta['llama.vocab_size'], c.vocabSize);
    assert.equal(g.meta['llama.rope.dimension_count'], c.headDim);
    assert.equal(g.meta['llama.rope.freq_base'], 500000);
    assert.ok(g.tensors.has('output.weight'));
    assert.deepEqual(g.f32('output.weight'), param(model, 'lm_head.weight'));
    // convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors, with rope_scaling's original length.
    const s = c.raw.rope_scaling as { factor: number; low_freq_factor: number; high_freq_factor: number; original_max_position_embeddings: number };
    const factors = g.f32('rope_freqs.weight');
    assert.equal(factors.length, c.headDim / 2);
    const lowWavelen = s.original_max_position_embeddings / s.low_freq_factor;
    const highWavelen = s.original_max_position_embeddings / s.high_freq_factor;
    let blended = 0;
    for (let i = 0; i < c.headDim / 2; i++) {
      const freq = Math.fround(1 / Math.pow(500000, Math.fround((2 * i) / c.headDim)));
      const wavelen = (2 * Math.PI) / freq;
      let want: number;
      if (wavelen < highWavelen) want = 1;
      else if (wavelen > lowWavelen) want = s.factor;
      else {
        const smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        want = 1 / ((1 - smooth) / s.factor + smooth);
        blended++;
      }
      assert.ok(Math.abs(factors[i] - want) <= 1e-5 * want, `rope factor ${i}: ${factors[i]} vs ${want}`);
    }
    assert.ok(new Set(factors).size > 1, 'the preset exercises more than one regime of the scaling');
    assert.ok(blended + factors.filter((f) => f === 1).length > 0);
  });

  it("permutes q/k rows so llama.cpp's interleaved rotation equals transformers' half rotation", () => {
    const { numHeads: H, numKvHeads: HKV, headDim: D, hiddenSize: C } = model.config;
    const rng = new Rng(3);
    const x = new Float32Array(C);
    rng.fillNormal(x, 1);
    const angles = Array.from({ length: D / 2 }, (_, i) => 0.7 * (i + 1));
    for (const [proj, heads] of [['q_proj', H], ['k_proj', HKV]] as const) {
      const w = param(model, `model.layers.0.self_attn.${proj}.weight`);
      const wg = g.f32(`blk.0.${proj === 'q_proj' ? 'attn_q' : 'attn_k'}.weight`);
      assert.notDeepEqual(wg, w, 'llama weights are permuted');
      const matvec = (m: Float32Array) => Array.from({ length: heads * D }, (_, r) => x.reduce((s, xi, c) => s + m[r * C + c] * xi, 0));
      const q = matvec(w);
      const qg = matvec(wg);
      for (let h = 0; h < heads; h++) {
        for (let i = 0; i < D / 2; i++) {
          const [c, s] = [Math.cos(angles[i]), Math.sin(angles[i])];
          // transformers: pair (i, i + D/2); llama.cpp (LLAMA_ROPE_TYPE_NORM): pair (2i, 2i + 1).
          const hf = [q[h * D + i] * c - q[h * D + i + D / 2] * s, q[h * D + i + D / 2] * c + q[h * D + i] * s];
          const gg = [qg[h * D + 2 * i] * c - qg[h * D + 2 * i + 1] * s, qg[h * D + 2 * i + 1] * c + qg[h * D + 2 * i] * s];
          assert.ok(Math.abs(hf[0] - gg[0]) < 1e-5 && Math.abs(hf[1] - gg[1]) < 1e-5, `${proj} head ${h} pair ${i}`);
        }
      }
    }
  });
});

describe('GGUF export: Qwen3 (q/k norms, head_dim ≠ hidden/heads)', () => {
  it('writes key_length/value_length and the q/k norm tensors', async () => {
    const { dir, model } = makeModel('tiny-qwen3');
    const out = path.join(tmp, 'qwen3.gguf');
    exportGguf({ model: dir, out, dtype: 'f16' });
    const g = await readGguf(out);
    assert.equal(g.meta['general.architecture'], 'qwen3');
    assert.equal(g.meta['qwen3.attention.key_length'], 32);
    assert.equal(g.meta['qwen3.attention.value_length'], 32);
    assert.equal(g.meta['general.file_type'], 1);
    for (const n of ['attn_q_norm', 'attn_k_norm']) {
      const t = g.tensors.get(`blk.1.${n}.weight`)!;
      assert.deepEqual(t.shape, [32]);
      assert.equal(t.dtype, GgmlType.F32, 'norms stay f32');
      assert.deepEqual(g.f32(`blk.1.${n}.weight`), param(model, `model.layers.1.self_attn.${n.slice(5)}.weight`));
    }
    const q = g.tensors.get('blk.0.attn_q.weight')!;
    assert.equal(q.dtype, GgmlType.F16);
    assert.deepEqual(q.shape, [64, 4 * 32]);
    const want = param(model, 'model.layers.0.self_attn.q_proj.weight');
    const got = f16ToF32(g.u16('blk.0.attn_q.weight'));
    for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) <= Math.abs(want[i]) * 2 ** -11 + 6e-8, `f16 value ${i}`);
  });
});

describe('GGUF dtypes', () => {
  it('bf16 stores the rounded-to-nearest-even upper halves', async () => {
    const { dir, model } = makeModel('tiny');
    const out = path.join(tmp, 'bf16.gguf');
    exportGguf({ model: dir, out, dtype: 'bf16' });
    const g = await readGguf(out);
    assert.equal(g.meta['general.file_type'], 32);
    assert.equal(g.tensors.get('blk.0.ffn_up.weight')!.dtype, GgmlType.BF16);
    assert.equal(g.tensors.get('blk.0.attn_q.bias')!.dtype, GgmlType.F32, 'biases stay f32');
    const w = param(model, 'model.layers.0.mlp.up_proj.weight');
    assert.deepEqual(g.u16('blk.0.ffn_up.weight'), f32ToBf16(w));
    const back = bf16ToF32(g.u16('blk.0.ffn_up.weight'));
    for (let i = 0; i < w.length; i++) assert.ok(Math.abs(back[i] - w[i]) <= Math.abs(w[i]) * 2 ** -8);
  });

  it('q8_0 quantises every matrix within half a step of its block scale', async () => {
    const { dir, model } = makeModel('tiny');
    const out = path.join(tmp, 'q8.gguf');
    exportGguf({ model: dir, out, dtype: 'q8_0' });
    const g = await readGguf(out);
    assert.equal(g.meta['general.file_type'], 7);
    for (const [name, t] of model.namedParameters()) {
      const gname = ggufTensorName(name)!;
      const info = g.tensors.get(gname)!;
      if (t.shape.length === 1) {
        assert.equal(info.dtype, GgmlType.F32, `${gname} stays f32`);
        continue;
      }
      assert.equal(info.dtype, GgmlType.Q8_0, gname);
      const back = g.q8(gname);
      let worst = 0;
      for (let b = 0; b < t.data.length / 32; b++) {
        let amax = 0;
        for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(t.data[b * 32 + j]));
        const d = amax / 127;
        // Rounding to the nearest step (d/2) plus the f16 rounding of d, amplified by |q| ≤ 127.
        const bound = d / 2 + 127 * d * 2 ** -11 + 1e-12;
        for (let j = 0; j < 32; j++) {
          const err = Math.abs(back[b * 32 + j] - t.data[b * 32 + j]);
          assert.ok(err <= bound, `${gname} block ${b}: error ${err} > ${bound}`);
          worst = Math.max(worst, err / (amax || 1));
        }
      }
      assert.ok(worst > 1e-4, `${gname}: quantisation must actually lose something (${worst})`);
    }
  });

  it('q8_0 blocks hold an f16 scale and halves-away-from-zero int8 values', () => {
    const x = new Float32Array(64);
    for (let j = 0; j < 32; j++) x[j] = j - 15.5; // max 16.5 → d = 16.5/127
    x[31] = 127; // second check: d = 1 exactly, so q = round(x)
    for (let j = 32; j < 64; j++) x[j] = 0; // all-zero block: d = 0, q = 0
    const q = quantizeQ8_0(x);
    assert.equal(q.length, 2 * 34);
    const view = new DataView(q.buffer);
    const d = f16ToF32(new Uint16Array([view.getUint16(0, true)]))[0];
    assert.equal(d, 1);
    assert.deepEqual(
      Array.from({ length: 32 }, (_, j) => view.getInt8(2 + j)),
      Array.from({ length: 32 }, (_, j) => (j === 31 ? 127 : Math.sign(j - 15.5) * Math.floor(Math.abs(j - 15.5) + 0.5))),
    );
    assert.equal(view.getUint16(34, true), 0);
    assert.ok(q.subarray(36).every((b) => b === 0));
    assert.deepEqual(dequantizeQ8_0(q, 64).subarray(32), new Float32Array(32));
  });
});

describe('LoRA adapter GGUF', () => {
  function adapterFor(preset: string, opts: { rslora: boolean; targets: 'all' | string[] }): { base: string; adapter: string; model: CausalLM } {
    const { dir, model } = makeModel(preset);
    const applied = applyLora(model, { r: 8, alpha: 16, targets: opts.targets, useRslora: opts.rslora, seed: 5 });
    const rng = new Rng(9);
    for (const [, layer] of loraLayers(model)) rng.fillNormal(layer.lora_B.weight.data, 0.05);
    const adapter = path.join(tmp, `adapter-${preset}-${opts.rslora}`);
    saveAdapter(model, applied, adapter, { baseModelNameOrPath: dir });
    return { base: dir, adapter, model };
  }

  it('writes adapter metadata and lora_a [in, r] / lora_b [r, out] per adapted weight', async () => {
    const { base, adapter, model } = adapterFor('tiny', { rslora: false, targets: ['q_proj', 'v_proj'] });
    const out = path.join(tmp, 'lora-qwen2.gguf');
    exportLoraGguf({ adapter, model: base, out });
    const g = await readGguf(out);
    assert.equal(g.meta['general.architecture'], 'qwen2');
    assert.equal(g.meta['general.type'], 'adapter');
    assert.equal(g.meta['adapter.type'], 'lora');
    assert.equal(g.meta['adapter.lora.alpha'], 16);
    const layers = loraLayers(model);
    assert.equal(g.tensors.size, 2 * layers.length);
    for (const [p, layer] of layers) {
      const name = ggufTensorName(`${p}.weight`)!;
      assert.deepEqual(g.tensors.get(`${name}.lora_a`)!.shape, [layer.inFeatures, 8]);
      assert.deepEqual(g.tensors.get(`${name}.lora_b`)!.shape, [8, layer.outFeatures]);
      assert.deepEqual(g.f32(`${name}.lora_a`), layer.lora_A.weight.data);
      assert.deepEqual(g.f32(`${name}.lora_b`), layer.lora_B.weight.data, 'qwen2: no permutation');
    }
  });

  it('llama: permutes the rows of B for q/k, keeps rsLoRA scaling through alpha·√r, and q8_0 falls back to f16 for rows of r', async () => {
    const { base, adapter, model } = adapterFor('tiny-llama', { rslora: true, targets: 'all' });
    const out = path.join(tmp, 'lora-llama.gguf');
    exportLoraGguf({ adapter, model: base, out, dtype: 'q8_0' });
    const g = await readGguf(out);
    assert.ok(Math.abs((g.meta['adapter.lora.alpha'] as number) - 16 * Math.sqrt(8)) < 1e-4, 'alpha·√r / r = alpha/√r');
    assert.equal(g.tensors.get('blk.0.attn_q.weight.lora_a')!.dtype, GgmlType.Q8_0, 'rows of 64: q8_0');
    assert.equal(g.tensors.get('blk.0.attn_q.weight.lora_b')!.dtype, GgmlType.F16, 'rows of r = 8: f16');
    const q = loraLayers(model).find(([p]) => p === 'model.layers.0.self_attn.q_proj')![1];
    const want = permuteRows(q.lora_B.weight.data, q.lora_B.weight.shape, model.config.numHeads);
    assert.notDeepEqual(want, q.lora_B.weight.data);
    const got = f16ToF32(g.u16('blk.0.attn_q.weight.lora_b'));
    for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) <= Math.abs(want[i]) * 2 ** -11 + 6e-8);
  });
});

describe('GGUF export errors', () => {
  it('rejects an unknown dtype and a folder as --out', () => {
    const { dir } = makeModel('tiny');
    assert.throws(() => exportGguf({ model: dir, out: path.join(tmp, 'x.gguf'), dtype: 'q4_0' as never }), UserError);
    assert.throws(() => exportGguf({ model: dir, out: tmp, dtype: 'f32' }), /is a folder/);
  });

  it('names the file when the pre-tokenizer is one llama.cpp has no name for', () => {
    const { dir } = makeModel('tiny');
    const other = path.join(tmp, 'odd-tokenizer');
    fs.cpSync(dir, other, { recursive: true });
    const tjPath = path.join(other, 'tokenizer.json');
    const tj = readJsonFile(tjPath) as { pre_tokenizer: { pretokenizers: Array<{ pattern?: { Regex: string } }> } };
    tj.pre_tokenizer.pretokenizers[0].pattern!.Regex = String.raw`\s+|\S+`;
    fs.writeFileSync(tjPath, JSON.stringify(tj));
    assert.throws(
      () => exportGguf({ model: other, out: path.join(tmp, 'odd.gguf'), dtype: 'f32' }),
      (e: unknown) => e instanceof FileFormatError && e.message.includes(tjPath) && e.message.includes('qwen2') && e.message.includes('llama-bpe'),
    );
  });
});

describe('exportGgufFromArgs (tunekit export --format gguf)', () => {
  it('writes a merged model, a LoRA adapter (base from adapter_config.json), and checks its flags', async () => {
    const { dir, model } = makeModel('tiny');
    const applied = applyLora(model, { r: 4, targets: ['q_proj'], seed: 1 });
    const adapter = path.join(tmp, 'cli-adapter');
    saveAdapter(model, applied, adapter, { baseModelNameOrPath: dir });
    const log = console.log;
    console.log = () => {};
    try {
      const merged = path.join(tmp, 'cli', 'merged.gguf');
      assert.equal(await exportGgufFromArgs({ model: dir, adapter, out: merged, dtype: 'Q8_0', ollama: true }), 0);
      assert.equal((await readGguf(merged)).meta['general.file_type'], 7);
      assert.ok(fs.existsSync(path.join(tmp, 'cli', 'Modelfile')));
      const lora = path.join(tmp, 'cli', 'adapter.gguf');
      assert.equal(await exportGgufFromArgs({ adapter, out: lora }), 0);
      assert.equal((await readGguf(lora)).meta['general.type'], 'adapter');
    } finally {
      console.log = log;
    }
    await assert.rejects(exportGgufFromArgs({ model: dir, out: path.join(tmp, 'x.bin') }), /must name a \.gguf file/);
    await assert.rejects(exportGgufFromArgs({ model: dir, out: path.join(tmp, 'x.gguf'), dtype: 'q4_k' }), /--dtype must be one of f32, f16, bf16, q8_0/);
    await assert.rejects(exportGgufFromArgs({ model: dir, adapter, lora: true, ollama: true, out: path.join(tmp, 'x.gguf') }), /--ollama describes a whole model/);
    await assert.rejects(exportGgufFromArgs({ out: path.join(tmp, 'x.gguf') }), /--model is required/);
  });
});
