/**
 * `base_dtype: bf16`: frozen decoder-block linear weights stored as bfloat16 (round to nearest
 * even), widened to float32 for each product. A model with a bf16 base must compute exactly what
 * the float32 model computes once its weights are rounded to bf16 (forward, the KV-cache decode
 * path, LoRA gradients, merging), and nearly what the unrounded one computes; training with it
 * lowers the loss and saves an ordinary PEFT adapter.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { narrowToBf16, roundToBf16, widenBf16, widenToScratch } from '../src/backend/kernels/bf16.js';
import { f32ToBf16 } from '../src/io/dtype.js';
import { loadModel, saveModel } from '../src/io/model-folder.js';
import { loadAdapter } from '../src/io/peft-adapter.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import type { CausalLM } from '../src/models/decoder.js';
import { KVCache } from '../src/models/kv-cache.js';
import { applyLora, loraLayers, mergeAndUnload } from '../src/nn/apply-lora.js';
import { baseWeightsReport, isBaseLinearWeight, storeFrozenBaseAsBf16 } from '../src/nn/base-dtype.js';
import { Rng, Tensor, crossEntropy, noGrad } from '../src/tensor/index.js';
import { lastLogits } from '../src/infer/decoding.js';
import { loadTrainConfig } from '../src/train/config.js';
import { makeAdapter, removeDir, tempDir, writeRandomModel } from './helpers/adapter-fixtures.js';
import { losses, runQuiet, shortRunSettings } from './helpers/train-fixtures.js';

const fromBits = (b: number): number => new Float32Array(Uint32Array.of(b).buffer)[0];
const bf16Of = (x: number): number => narrowToBf16(Float32Array.of(x))[0];

describe('bf16 conversion (kernels/bf16.ts)', () => {
  it('rounds to nearest, ties to even', () => {
    // Around 1.0 a bf16 step is 2^-7; 2^-8 is exactly halfway.
    assert.equal(bf16Of(1 + 2 ** -8), 0x3f80, 'tie with an even kept half stays');
    assert.equal(bf16Of(1 + 3 * 2 ** -8), 0x3f82, 'tie with an odd kept half rounds up to even');
    assert.equal(bf16Of(1 + 2 ** -8 + 2 ** -20), 0x3f81, 'above the midpoint rounds up');
    assert.equal(bf16Of(1 + 2 ** -8 - 2 ** -20), 0x3f80, 'below the midpoint rounds down');
    assert.equal(bf16Of(-(1 + 3 * 2 ** -8)), 0xbf82, 'negative numbers round the same way');
    assert.equal(bf16Of(fromBits(0x3f80ffff)), 0x3f81);
    // A carry out of the mantissa bumps the exponent.
    assert.equal(bf16Of(fromBits(0x3fffffff)), 0x4000);
    // Subnormals round like everything else.
    assert.equal(bf16Of(fromBits(0x00008000)), 0x0000);
    assert.equal(bf16Of(fromBits(0x00018000)), 0x0002);
    assert.equal(roundToBf16(0.1), fromBits(0x3dcd0000));
  });

  it('keeps NaN a NaN, ±Inf infinite and −0 negative; overflow becomes Inf', () => {
    assert.equal(bf16Of(Infinity), 0x7f80);
    assert.equal(bf16Of(-Infinity), 0xff80);
    assert.equal(bf16Of(-0), 0x8000);
    assert.ok(Object.is(widenBf16(Uint16Array.of(0x8000))[0], -0));
    assert.equal(bf16Of(3.4028234663852886e38), 0x7f80, 'float32 max is past bf16 max: Inf');
    for (const nan of [0x7fc00000, 0x7f800001, 0xff800001, 0x7fffffff]) {
      const h = bf16Of(fromBits(nan));
      assert.ok(Number.isNaN(widenBf16(Uint16Array.of(h))[0]), `NaN 0x${nan.toString(16)} -> 0x${h.toString(16)}`);
      assert.equal(h & 0x8000, (nan >>> 16) & 0x8000, 'sign kept');
    }
  });

  it('round-trips every bf16 value exactly (NaNs stay NaN)', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const wide = widenBf16(all);
    const wideBits = new Uint32Array(wide.buffer);
    for (let i = 0; i < 65536; i++) assert.equal(wideBits[i], (i << 16) >>> 0);
    const back = narrowToBf16(wide);
    for (let i = 0; i < 65536; i++) {
      if (Number.isNaN(wide[i])) assert.ok(Number.isNaN(widenBf16(Uint16Array.of(back[i]))[0]));
      else assert.equal(back[i], i);
    }
  });

  it('agrees with the safetensors writer on random bit patterns', () => {
    const rng = new Rng(3);
    const bits = Uint32Array.from({ length: 20000 }, () => rng.nextUint32());
    const f = new Float32Array(bits.buffer);
    assert.deepEqual(narrowToBf16(f), f32ToBf16(f));
  });

  it('widens into one reused scratch buffer', () => {
    const big = widenToScratch(new Uint16Array(1000).fill(0x3f80));
    const small = widenToScratch(Uint16Array.of(0x4000, 0xc000));
    assert.equal(small.buffer, big.buffer, 'no new buffer for a smaller weight');
    assert.deepEqual([...small], [2, -2]);
  });
});

describe('a tensor stored as bf16', () => {
  it('is frozen, hides its float32 values and takes half the bytes', () => {
    const t = Tensor.from([1, 2.5, -3, 0.1], [2, 2]);
    assert.equal(t.byteLength, 16);
    t.toBf16();
    assert.equal(t.dtype, 'bfloat16');
    assert.equal(t.size, 4);
    assert.equal(t.byteLength, 8);
    assert.throws(() => t.data, /stored as bf16/);
    assert.throws(() => {
      t.requiresGrad = true;
    }, /cannot train/);
    assert.deepEqual([...t.clone().toFloat32().data], [1, 2.5, -3, roundToBf16(0.1)]);
    assert.throws(() => Tensor.from([1], [1], true).toBf16(), /only a frozen tensor/);
  });
});

// ---------------------------------------------------------------------------------------------

const root = tempDir('bf16-base');
const tiedDir = path.join(root, 'tiny');
const untiedDir = path.join(root, 'tiny-llama');

before(() => {
  writeRandomModel(tiedDir, 'tiny', 5);
  writeRandomModel(untiedDir, 'tiny-llama', 6);
});

after(() => removeDir(root));

const IDS = Int32Array.from([3, 17, 42, 8, 95, 1, 60, 33, 12, 77, 5, 29]);
const INPUT = { ids: IDS, batch: 2, length: 6 };

/** The float32 model with every weight base_dtype bf16 converts rounded to bf16 in place. */
function preRounded(dir: string): CausalLM {
  const m = loadModel(dir);
  for (const [name, t] of m.namedParameters()) if (isBaseLinearWeight(name, t.shape)) t.data = widenBf16(narrowToBf16(t.data));
  return m;
}

function logits(model: CausalLM): Float32Array {
  model.eval();
  return noGrad(() => model.forward(INPUT).data.slice());
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

for (const [label, dir] of [['tied head (qwen2)', tiedDir], ['untied head (llama)', untiedDir]] as const) {
  describe(`a model with a bf16 base, ${label}`, () => {
    it('stores q/k/v/o/gate/up/down as bf16, the rest as float32', () => {
      const m = loadModel(dir, { baseDtype: 'bf16' });
      const names: string[] = [];
      for (const [name, t] of m.namedParameters()) {
        if (t.bf16) names.push(name.replace(/^model\.layers\.\d+\./, ''));
        else assert.ok(!/_proj\.weight$/.test(name), `${name} should be bf16`);
      }
      assert.deepEqual([...new Set(names)].sort(), [
        'mlp.down_proj.weight', 'mlp.gate_proj.weight', 'mlp.up_proj.weight',
        'self_attn.k_proj.weight', 'self_attn.o_proj.weight', 'self_attn.q_proj.weight', 'self_attn.v_proj.weight',
      ]);
      assert.equal(m.outputWeight().dtype, 'float32');
      const report = baseWeightsReport(m);
      assert.equal(report.bf16Tensors, 14);
      assert.ok(report.bf16Bytes > 0);
    });

    it('gives the logits of the float32 model with pre-rounded weights (1e-5), and near the unrounded ones', () => {
      const bf = logits(loadModel(dir, { baseDtype: 'bf16' }));
      const rounded = logits(preRounded(dir));
      const exact = logits(loadModel(dir));
      assert.ok(maxAbsDiff(bf, rounded) <= 1e-5, `bf16 vs pre-rounded: ${maxAbsDiff(bf, rounded)}`);
      const d = maxAbsDiff(bf, exact);
      assert.ok(d > 0, 'rounding to bf16 must change something for this check to mean anything');
      assert.ok(d < 0.03 * maxAbs(exact), `bf16 vs float32: ${d} (max |logit| ${maxAbs(exact)})`);
    });

    it('decodes one row at a time through the KV cache like the pre-rounded model', () => {
      const steps = (m: CausalLM): Float32Array[] => {
        m.eval();
        const cache = new KVCache(m.config, 1, 16);
        return noGrad(() => [lastLogits(m, IDS.subarray(0, 5), cache), ...[7, 9, 11].map((t) => lastLogits(m, Int32Array.of(t), cache).slice())]);
      };
      const bf = steps(loadModel(dir, { baseDtype: 'bf16' }));
      const rounded = steps(preRounded(dir));
      bf.forEach((row, i) => assert.ok(maxAbsDiff(row, rounded[i]) <= 1e-5, `step ${i}: ${maxAbsDiff(row, rounded[i])}`));
    });

    it('gives LoRA the gradients it gets over the pre-rounded float32 base', () => {
      const grads = (m: CausalLM): Map<string, Float32Array> => {
        applyLora(m, { r: 4, targets: 'all', seed: 11 });
        const rng = new Rng(12);
        for (const [, l] of loraLayers(m)) rng.fillNormal(l.lora_B.weight.data, 0.05);
        m.train();
        const labels = Int32Array.from(IDS, (id, i) => (i % 6 === 5 ? -100 : IDS[i + 1]));
        crossEntropy(m.forward(INPUT), labels).backward();
        return new Map(m.trainableParameters().map(([n, t]) => [n, t.grad!.data.slice()]));
      };
      const bf = grads(loadModel(dir, { baseDtype: 'bf16' }));
      const rounded = grads(preRounded(dir));
      assert.equal(bf.size, 28);
      for (const [name, g] of rounded) {
        const scale = Math.max(maxAbs(g), 1e-3);
        assert.ok(maxAbs(g) > 0, `${name}: zero gradient`);
        assert.ok(maxAbsDiff(bf.get(name)!, g) <= 1e-5 * scale, `${name}: ${maxAbsDiff(bf.get(name)!, g)} (max |g| ${maxAbs(g)})`);
      }
    });

    it('merges an adapter in float32 and saves the merged model in the requested dtype', () => {
      const adapter = makeAdapter(dir, path.join(root, `adapter-${path.basename(dir)}`), { seed: 3, targets: ['q_proj', 'v_proj', 'down_proj'] });
      const merged = (m: CausalLM): CausalLM => {
        loadAdapter(m, adapter);
        mergeAndUnload(m);
        return m;
      };
      const bf = merged(loadModel(dir, { baseDtype: 'bf16' }));
      const rounded = merged(preRounded(dir));
      // Merged layers are float32 now; the others are still bf16.
      const q = bf.getParameter('model.layers.0.self_attn.q_proj.weight')!;
      assert.equal(q.dtype, 'float32');
      assert.equal(bf.getParameter('model.layers.0.self_attn.k_proj.weight')!.dtype, 'bfloat16');
      assert.deepEqual(q.data, rounded.getParameter('model.layers.0.self_attn.q_proj.weight')!.data);

      for (const dtype of ['F32', 'BF16'] as const) {
        const a = path.join(root, `merged-bf-${dtype}-${path.basename(dir)}`);
        const b = path.join(root, `merged-f32-${dtype}-${path.basename(dir)}`);
        saveModel(bf, a, { dtype, copyFrom: dir });
        saveModel(rounded, b, { dtype, copyFrom: dir });
        assert.ok(fs.readFileSync(path.join(a, 'model.safetensors')).equals(fs.readFileSync(path.join(b, 'model.safetensors'))), `${dtype} files differ`);
        const reread = logits(loadModel(a));
        assert.ok(maxAbsDiff(reread, logits(rounded)) <= (dtype === 'F32' ? 1e-5 : 0.05 * maxAbs(reread)));
      }
    });
  });
}

describe('loading a BF16 checkpoint with base_dtype bf16', () => {
  it('keeps the stored bits, with no trip through float32', () => {
    const bfDir = path.join(root, 'tiny-bf16-on-disk');
    saveModel(loadModel(tiedDir), bfDir, { dtype: 'BF16', copyFrom: tiedDir });
    const m = loadModel(bfDir, { baseDtype: 'bf16' });
    const file = readSafetensors(path.join(bfDir, 'model.safetensors'));
    try {
      const name = 'model.layers.1.mlp.up_proj.weight';
      const raw = file.getRaw(name);
      assert.equal(raw.dtype, 'BF16');
      assert.deepEqual(m.getParameter(name)!.bf16, new Uint16Array(raw.bytes.buffer));
    } finally {
      file.close();
    }
    // On a BF16 checkpoint nothing is rounded: the same logits as loading it in float32.
    assert.ok(maxAbsDiff(logits(m), logits(loadModel(bfDir))) <= 1e-5);
  });

  it('rounds a large F32 tensor chunk by chunk exactly as a whole', () => {
    const file = path.join(root, 'big.safetensors');
    const data = new Float32Array(2_500_001);
    new Rng(9).fillNormal(data, 1);
    writeSafetensors(file, [{ name: 'w', shape: [data.length], data }]);
    const st = readSafetensors(file);
    try {
      assert.deepEqual(st.getBf16('w'), narrowToBf16(st.get('w')));
    } finally {
      st.close();
    }
  });

  it('converts a model built in memory with storeFrozenBaseAsBf16', () => {
    const m = loadModel(tiedDir);
    assert.equal(storeFrozenBaseAsBf16(m), 0, 'trainable weights are left alone');
    m.freeze();
    assert.equal(storeFrozenBaseAsBf16(m), 14);
    assert.ok(maxAbsDiff(logits(m), logits(preRounded(tiedDir))) <= 1e-5);
  });
});

describe('training with base_dtype', () => {
  const config = (extra: Record<string, unknown>) => loadTrainConfig(null, { model_name_or_path: 'm', dataset: 'd', output_dir: 'o', ...extra });

  it('accepts fp32, bf16, float32 and bfloat16; defaults to fp32', () => {
    assert.equal(config({}).config.base_dtype, 'fp32');
    assert.equal(config({ base_dtype: 'bf16' }).config.base_dtype, 'bf16');
    assert.equal(config({ base_dtype: 'bfloat16' }).config.base_dtype, 'bf16');
    assert.equal(config({ base_dtype: 'float32' }).config.base_dtype, 'fp32');
  });

  it('rejects another value in one line naming the key and the allowed values', () => {
    assert.throws(
      () => config({ base_dtype: 'fp8' }),
      (e: Error) => e.name === 'UserError' && !e.message.includes('\n') && /"base_dtype" must be one of fp32, float32, bf16, bfloat16, got "fp8"/.test(e.message),
    );
  });

  it('refuses bf16 with full fine-tuning, whose weights all train', () => {
    assert.throws(
      () => config({ base_dtype: 'bf16', finetuning_type: 'full' }),
      (e: Error) => e.name === 'UserError' && !e.message.includes('\n') && /base_dtype bf16.*finetuning_type full/.test(e.message),
    );
  });

  it('trains LoRA over a bf16 base (loss decreases, as over float32) and saves a PEFT adapter', async () => {
    const out = path.join(root, 'sft-bf16');
    const settings = { ...shortRunSettings(tiedDir, out), num_train_epochs: 4, base_dtype: 'bf16' };
    const run = await runQuiet(settings);
    const l = losses(run.result);
    assert.ok(l.every(Number.isFinite));
    const head = (l[0] + l[1]) / 2;
    const tail = (l[l.length - 1] + l[l.length - 2]) / 2;
    assert.ok(tail < head - 0.2, `loss went from ${head} to ${tail}`);
    assert.ok(run.lines.some((line) => /^note: base_dtype bf16: 14 frozen linear weights stored as bf16, \d+\.\d MiB/.test(line)), run.lines.join('\n'));

    const ref = await runQuiet({ ...settings, base_dtype: 'fp32', output_dir: path.join(root, 'sft-fp32') });
    const lf = losses(ref.result);
    assert.equal(lf.length, l.length);
    assert.ok(maxAbsDiff(l, lf) < 0.05, `bf16 and float32 loss curves differ by ${maxAbsDiff(l, lf)}`);

    // An ordinary adapter: it loads onto the float32 base.
    assert.ok(fs.existsSync(path.join(out, 'adapter_config.json')));
    const m = loadModel(tiedDir);
    const loaded = loadAdapter(m, out);
    assert.equal(loaded.paths.length, 14);
    assert.ok(loraLayers(m).some(([, layer]) => maxAbs(layer.lora_B.weight.data) > 0));
  });

  it('runs stage dpo with LoRA over a bf16 base', async () => {
    const dataDir = path.join(root, 'pref');
    fs.mkdirSync(dataDir, { recursive: true });
    const rows = ['What time do you open?', 'Do you deliver?', 'Is there parking?', 'Can I book a table?'].map((q) => ({
      instruction: q, input: '', chosen: 'Hello! Thank you for asking, we are glad to help.', rejected: 'No.',
    }));
    fs.writeFileSync(path.join(dataDir, 'pairs.json'), JSON.stringify(rows));
    fs.writeFileSync(path.join(dataDir, 'dataset_info.json'), JSON.stringify({ pairs: { file_name: 'pairs.json', ranking: true } }));
    const out = path.join(root, 'dpo-bf16');
    const run = await runQuiet({
      model_name_or_path: tiedDir, stage: 'dpo', dataset: 'pairs', dataset_dir: dataDir, output_dir: out, per_device_train_batch_size: 2,
      learning_rate: 5e-3, num_train_epochs: 2, logging_steps: 1, save_steps: 1000, lora_target: 'all', base_dtype: 'bf16',
    });
    assert.equal(run.result.globalStep, 4);
    assert.ok(losses(run.result).every(Number.isFinite));
    assert.ok(run.lines.some((line) => line.startsWith('note: base_dtype bf16: 14 frozen linear weights')));
    assert.ok(fs.existsSync(path.join(out, 'adapter_model.safetensors')));
  });

  it('runs stage rm, then ppo whose reward model shares the bf16 base with the policy', async () => {
    const dataDir = path.join(root, 'pref');
    fs.writeFileSync(path.join(dataDir, 'prompts.json'), JSON.stringify([{ instruction: 'Do you deliver?', input: '' }, { instruction: 'Where are you?', input: '' }]));
    const rmDir = path.join(root, 'rm-bf16');
    const common = { model_name_or_path: tiedDir, dataset_dir: dataDir, lora_target: 'all', logging_steps: 1, save_steps: 1000, base_dtype: 'bf16' };
    const rm = await runQuiet({ ...common, stage: 'rm', dataset: 'pairs', output_dir: rmDir, per_device_train_batch_size: 2, max_steps: 2 });
    assert.ok(losses(rm.result).every(Number.isFinite));
    const ppo = await runQuiet({
      ...common, stage: 'ppo', dataset: 'prompts.json', output_dir: path.join(root, 'ppo-bf16'), per_device_train_batch_size: 2,
      max_steps: 1, ppo_epochs: 1, max_new_tokens: 4, reward_model: rmDir,
    });
    assert.equal(ppo.result.globalStep, 1);
    assert.ok(ppo.lines.some((l) => l.includes('(sharing the base weights)')), ppo.lines.join('\n'));
    assert.ok(ppo.lines.some((l) => l.startsWith('note: base_dtype bf16: 14 frozen linear weights')));
  });
});
