/**
 * What the autograd graph keeps alive. Graph nodes link identities (`Tensor.autograd`), never
 * tensors, and each backward rule keeps only the buffers its formula reads, so an intermediate
 * that no rule saved is garbage as soon as the forward code lets go of it (the input of a frozen
 * linear layer, the SwiGLU output feeding a frozen down_proj, reshape views).
 *
 * A closure's contents cannot be inspected, so these tests ask the garbage collector itself:
 * weak references to every intermediate, a full collection, and the survivors must be exactly
 * the op's saved set, no fewer (backward would break) and no more (memory). After backward the
 * graph is spent and nothing survives. The collector is reached through `--expose-gc` when the
 * process has it, otherwise by turning that flag on at run time; where neither works the tests
 * are skipped with a message saying so.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';

import { parseDecoderConfig } from '../src/models/config.js';
import { CausalLM } from '../src/models/decoder.js';
import { initializeWeights } from '../src/models/init.js';
import { PRESETS } from '../src/models/presets.js';
import { applyLora, loraLayers } from '../src/nn/apply-lora.js';
import type { LinearLike } from '../src/nn/layers.js';
import { Module } from '../src/nn/module.js';
import {
  RopeTables,
  Tensor,
  add,
  attention,
  clamp,
  crossEntropy,
  dropout,
  embedding,
  exp,
  linear,
  linearTokenLogprobs,
  log1mexp,
  logSigmoid,
  matmul,
  maximum,
  mean,
  mul,
  reshape,
  rmsNorm,
  rope,
  scale,
  segmentSum,
  selectRows,
  silu,
  softmax,
  sub,
  sum,
  sumLastDim,
  swiglu,
  tokenLogprobs,
} from '../src/tensor/index.js';
import { Rng as TensorRng } from '../src/tensor/random.js';
import { causalLmLoss } from '../src/train/loss.js';
import { Rng, randn } from './helpers/gradcheck.js';

function findGc(): (() => void) | null {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (exposed) return exposed;
  try {
    v8.setFlagsFromString('--expose-gc');
    return vm.runInNewContext('gc') as () => void;
  } catch {
    return null;
  }
}

const gc = findGc();
const skip = gc ? false : 'the garbage collector cannot be reached (run with --expose-gc)';

/** Names of the weakly held objects still alive after a full collection. */
async function survivors(refs: ReadonlyMap<string, WeakRef<object>>): Promise<string[]> {
  // A WeakRef's target is held until the job that made it ends, so let it end first.
  await new Promise((resolve) => setImmediate(resolve));
  gc?.();
  return [...refs].filter(([, r]) => r.deref() !== undefined).map(([name]) => name).sort();
}

interface InputSpec {
  shape: number[];
  /** Made from a leaf that trains (an intermediate that needs a gradient), or a frozen constant. */
  grad: boolean;
  /** Moves each value, e.g. to keep log1mexp's input negative. */
  map?: (v: number) => number;
}

interface OpCase {
  name: string;
  inputs: InputSpec[];
  run: (...xs: Tensor[]) => Tensor;
  /** The values backward keeps: input indices, and 'out' for the op's own output. */
  kept: Array<number | 'out'>;
}

const g = (...shape: number[]): InputSpec => ({ shape, grad: true });
const frozen = (...shape: number[]): InputSpec => ({ shape, grad: false });
const tables = new RopeTables({ headDim: 4, theta: 10000 });

const CASES: OpCase[] = [
  { name: 'matmul, both train', inputs: [g(3, 4), g(4, 5)], run: (a, b) => matmul(a, b), kept: [0, 1] },
  { name: 'linear, frozen weight: the input is not kept', inputs: [g(3, 4), frozen(5, 4)], run: (x, w) => linear(x, w), kept: [1] },
  { name: 'linear, frozen weight and bias', inputs: [g(3, 4), frozen(5, 4), frozen(5)], run: (x, w, b) => linear(x, w, b), kept: [1] },
  { name: 'linear, frozen input, weight trains', inputs: [frozen(3, 4), g(5, 4)], run: (x, w) => linear(x, w), kept: [0] },
  { name: 'batched matmul, A trains', inputs: [g(2, 3, 4), frozen(2, 4, 5)], run: (a, b) => matmul(a, b), kept: [1] },
  { name: 'add', inputs: [g(3, 4), g(4)], run: (a, b) => add(a, b), kept: [] },
  { name: 'sub', inputs: [g(3, 4), g(3, 4)], run: (a, b) => sub(a, b), kept: [] },
  { name: 'mul, both train', inputs: [g(3, 4), g(3, 4)], run: (a, b) => mul(a, b), kept: [0, 1] },
  { name: 'mul by a constant', inputs: [g(3, 4), frozen(3, 4)], run: (a, c) => mul(a, c), kept: [1] },
  { name: 'scale', inputs: [g(3, 4)], run: (x) => scale(x, 3), kept: [] },
  { name: 'reshape', inputs: [g(3, 4)], run: (x) => reshape(x, [4, -1]), kept: [] },
  { name: 'silu', inputs: [g(3, 4)], run: (x) => silu(x), kept: [0] },
  { name: 'swiglu', inputs: [g(3, 4), g(3, 4)], run: (a, b) => swiglu(a, b), kept: [0, 1] },
  { name: 'swiglu into a frozen down projection', inputs: [g(3, 4), g(3, 4), frozen(2, 4)], run: (a, b, w) => linear(swiglu(a, b), w), kept: [0, 1, 2] },
  { name: 'rmsNorm, frozen weight', inputs: [g(3, 4), frozen(4)], run: (x, w) => rmsNorm(x, w, 1e-6), kept: [0, 1] },
  { name: 'rope', inputs: [g(1, 3, 2, 4)], run: (x) => rope(x, Int32Array.of(0, 1, 2), tables), kept: [] },
  { name: 'softmax keeps its output', inputs: [g(3, 4)], run: (x) => softmax(x), kept: ['out'] },
  { name: 'exp keeps its output', inputs: [g(3, 4)], run: (x) => exp(x), kept: ['out'] },
  { name: 'embedding', inputs: [g(6, 4)], run: (w) => embedding(w, Int32Array.of(1, 5, 1)), kept: [] },
  { name: 'selectRows', inputs: [g(5, 3)], run: (x) => selectRows(x, Int32Array.of(0, 2, 4)), kept: [] },
  { name: 'segmentSum', inputs: [g(6)], run: (x) => segmentSum(x, Int32Array.of(0, 0, 1, -1, 1, 1), 2), kept: [] },
  { name: 'sum', inputs: [g(3, 4)], run: (x) => sum(x), kept: [] },
  { name: 'mean', inputs: [g(3, 4)], run: (x) => mean(x), kept: [] },
  { name: 'sumLastDim', inputs: [g(3, 4)], run: (x) => sumLastDim(x), kept: [] },
  { name: 'clamp', inputs: [g(3, 4)], run: (x) => clamp(x, -0.5, 0.5), kept: [0] },
  { name: 'maximum', inputs: [g(3, 4), g(3, 4)], run: (a, b) => maximum(a, b), kept: [0, 1] },
  { name: 'logSigmoid', inputs: [g(3, 4)], run: (x) => logSigmoid(x), kept: [0] },
  { name: 'log1mexp', inputs: [{ shape: [3, 4], grad: true, map: (v) => -Math.abs(v) - 0.1 }], run: (x) => log1mexp(x), kept: [0] },
  { name: 'dropout keeps only its mask', inputs: [g(3, 4)], run: (x) => dropout(x, 0.5, new TensorRng(3)), kept: [] },
  { name: 'tokenLogprobs', inputs: [g(4, 6)], run: (x) => tokenLogprobs(x, Int32Array.of(0, 5, -100, 2)), kept: [0] },
  { name: 'crossEntropy', inputs: [g(4, 6)], run: (x) => crossEntropy(x, Int32Array.of(0, 5, -100, 2)), kept: [0] },
  {
    name: 'linearTokenLogprobs, frozen head: neither h nor W',
    inputs: [g(4, 3), frozen(6, 3)],
    run: (h, w) => linearTokenLogprobs(h, w, Int32Array.of(0, 5, -1, 2)),
    kept: [],
  },
  {
    name: 'linearTokenLogprobs, the head trains',
    inputs: [g(4, 3), g(6, 3)],
    run: (h, w) => linearTokenLogprobs(h, w, Int32Array.of(0, 5, -1, 2)),
    kept: [0, 1],
  },
  {
    name: 'attention keeps q, k, v (and its probabilities)',
    inputs: [g(1, 3, 2, 4), g(1, 3, 1, 4), g(1, 3, 1, 4)],
    run: (q, k, v) => attention(q, k, v),
    kept: [0, 1, 2],
  },
];

interface Built {
  loss: Tensor;
  leaves: Tensor[];
  /** Every input's and the output's tensor object and values. */
  refs: Map<string, WeakRef<object>>;
}

/**
 * Runs one op on fresh intermediates (each trained input is `scale(leaf, 1)`, so only the graph
 * could keep it) and reduces its output with `sum`, which keeps nothing. Only the loss and the
 * leaves come back; everything else is up to the graph.
 */
function build(c: OpCase, seed: number): Built {
  const rng = new Rng(seed);
  const leaves: Tensor[] = [];
  const refs = new Map<string, WeakRef<object>>();
  const xs = c.inputs.map((spec, i) => {
    const values = randn(rng, spec.shape).data.map(spec.map ?? ((v) => v));
    let x: Tensor;
    if (spec.grad) {
      const leaf = new Tensor(values, spec.shape, true);
      leaves.push(leaf);
      x = scale(leaf, 1);
    } else {
      x = new Tensor(values, spec.shape);
    }
    refs.set(`input ${i} tensor`, new WeakRef(x));
    refs.set(`input ${i} values`, new WeakRef(x.data));
    return x;
  });
  const out = c.run(...xs);
  refs.set('output tensor', new WeakRef(out));
  refs.set('output values', new WeakRef(out.data));
  return { loss: sum(out), leaves, refs };
}

function keptNames(c: OpCase): string[] {
  return c.kept.map((k) => (k === 'out' ? 'output values' : `input ${k} values`)).sort();
}

describe('the graph keeps only what backward needs', { skip }, () => {
  it('the collector works here: an unreferenced buffer goes, a referenced one stays', async () => {
    const held = new Float32Array(8);
    const refs = new Map<string, WeakRef<object>>([
      ['held', new WeakRef(held)],
      ['dropped', new WeakRef(new Float32Array(8))],
    ]);
    assert.deepEqual(await survivors(refs), ['held']);
    assert.equal(held.length, 8);
  });

  for (const [i, c] of CASES.entries()) {
    it(c.name, async () => {
      const { loss, leaves, refs } = build(c, 10 + i);
      assert.ok(loss.requiresGrad, 'the case builds a graph');
      for (const input of loss.node?.inputs ?? []) assert.ok(!(input instanceof Tensor), 'a node links identities, not tensors');
      assert.deepEqual(await survivors(refs), keptNames(c), 'values alive while the graph is');
      loss.backward();
      for (const [j, leaf] of leaves.entries()) {
        assert.ok(leaf.grad, `leaf ${j} got a gradient`);
        assert.ok(leaf.grad.data.every(Number.isFinite), `leaf ${j}'s gradient is finite`);
      }
      assert.deepEqual(await survivors(refs), [], 'after backward the graph keeps nothing');
    });
  }

  it('the input of a frozen linear layer is freed, and backward still gives the right gradient', async () => {
    const w = Tensor.from([1, 2, 3, -1, 0.5, 4], [2, 3]);
    const p = Tensor.from([0.3, -0.7, 1.1, 2, 0, -1], [2, 3], true);
    const refs = new Map<string, WeakRef<object>>();
    const forward = (): Tensor => {
      const h = scale(p, 2);
      refs.set('h', new WeakRef(h.data));
      return sum(linear(h, w));
    };
    const loss = forward();
    assert.deepEqual(await survivors(refs), []);
    loss.backward();
    // d/dp Σ (2p)·Wᵀ = 2·Σ_o W[o, :], the same for every row.
    assert.deepEqual(Array.from(p.grad?.data ?? []), [0, 5, 14, 0, 5, 14]);
  });
});

/** Stands in for a projection and notes the values it was given. */
class Spy extends Module implements LinearLike {
  constructor(
    readonly inner: LinearLike,
    private readonly seen: (x: Float32Array) => void,
  ) {
    super();
    this.registerModule('inner', inner);
  }

  get inFeatures(): number {
    return this.inner.inFeatures;
  }

  get outFeatures(): number {
    return this.inner.outFeatures;
  }

  forward(x: Tensor): Tensor {
    this.seen(x.data);
    return this.inner.forward(x);
  }
}

describe('a LoRA SFT step on the tiny decoder', { skip }, () => {
  it('frees the attention output and the SwiGLU output (inputs of frozen o_proj and down_proj) but keeps what LoRA needs', async () => {
    const model = new CausalLM(parseDecoderConfig({ ...PRESETS.tiny.config, vocab_size: 50 }));
    initializeWeights(model, 1);
    applyLora(model, { r: 4, targets: ['q_proj', 'v_proj'], seed: 2 });
    // B = 0 would hide a broken update; give it values so every path carries a gradient.
    for (const [, layer] of loraLayers(model)) layer.lora_B.weight.data.fill(0.01);
    const refs = new Map<string, WeakRef<object>>();
    const layers = model.config.numLayers;
    for (let l = 0; l < layers; l++) {
      for (const name of ['self_attn.q_proj', 'self_attn.o_proj', 'mlp.down_proj']) {
        const path = `model.layers.${l}.${name}`;
        const inner = model.getModule(path) as LinearLike;
        model.replaceModule(path, new Spy(inner, (x) => refs.set(`${l} ${name} input`, new WeakRef(x))));
      }
    }
    const rng = new Rng(5);
    const ids = Int32Array.from({ length: 2 * 6 }, () => rng.int(50));
    const { loss } = causalLmLoss(model, { ids, labels: ids, batch: 2, length: 6 }, 12);
    // q_proj's input (the normed hidden state) is what lora_A's gradient is made of.
    const expected = Array.from({ length: layers }, (_, l) => `${l} self_attn.q_proj input`).sort();
    assert.deepEqual(await survivors(refs), expected);
    loss.backward();
    for (const [name, layer] of loraLayers(model)) {
      assert.ok(layer.lora_A.weight.grad?.data.some((v) => v !== 0), `${name}: lora_A has a gradient`);
      assert.ok(layer.lora_B.weight.grad?.data.some((v) => v !== 0), `${name}: lora_B has a gradient`);
    }
    assert.deepEqual(await survivors(refs), []);
  });
});
