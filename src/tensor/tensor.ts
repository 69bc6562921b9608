import { narrowToBf16, widenBf16 } from '../backend/kernels/bf16.js';
import { axpy } from '../backend/kernels/elementwise.js';
import type { GradInto } from '../backend/kernels/grad-into.js';

/** Below this many values, zeroing costs less than a separate native allocation. */
const UNINITIALIZED_MIN = 4096;

/** Stands for the values while `Tensor.fromBf16` builds a tensor, until its bf16 storage is set. */
const BF16_PENDING = new Float32Array(0);

/**
 * A float32 tensor: a contiguous row-major buffer and its shape. Views (`reshape`) share the
 * buffer. When `requiresGrad` is set, ops record how they were made so `backward()` can
 * propagate gradients; leaves accumulate theirs in `grad`.
 *
 * A frozen weight may instead be stored as bfloat16 (`toBf16()`, `fromBf16()`): half the memory;
 * `bf16` then holds the bit patterns, `data` is unavailable (it throws, so no code path widens a
 * whole weight by accident) and the matrix products widen it on the fly (see `ops/matmul.ts`).
 *
 * The graph never points at a Tensor: its nodes link `autograd` identities, and each backward
 * rule keeps only the buffers it needs. An intermediate whose values no rule saved is freed as
 * soon as the code that made it lets go of it.
 */
export class Tensor {
  /** This tensor's place in the autograd graph, apart from its values. */
  readonly autograd: AutogradMeta;

  /** The float32 values; null while the tensor is stored as bf16. */
  private values: Float32Array | null;
  /** The bf16 bit patterns of a frozen weight stored at half width; null for float32. */
  private halves: Uint16Array | null = null;

  constructor(
    data: Float32Array,
    public readonly shape: readonly number[],
    requiresGrad = false,
  ) {
    const n = sizeOf(shape);
    if (data.length !== n && data !== BF16_PENDING) throw new Error(`Tensor: data has ${data.length} values, shape [${shape.join(', ')}] needs ${n}`);
    this.values = data;
    this.autograd = new AutogradMeta(shape, requiresGrad);
  }

  /** The float32 values. A bf16 tensor has none: widen `bf16` (kernels/bf16.ts) where needed. */
  get data(): Float32Array {
    if (this.values === null) throw new Error(`${this} is stored as bf16; its float32 values must be widened from .bf16 (or call toFloat32())`);
    return this.values;
  }

  /** Replaces the values (loading weights); a bf16 tensor becomes float32 again. */
  set data(d: Float32Array) {
    this.values = d;
    this.halves = null;
  }

  /** A frozen tensor over bf16 bit patterns (the high halves of float32 values). */
  static fromBf16(bits: Uint16Array, shape: readonly number[]): Tensor {
    return new Tensor(BF16_PENDING, shape).setBf16Storage(bits);
  }

  /** The bf16 bit patterns when stored as bf16, else null. */
  get bf16(): Uint16Array | null {
    return this.halves;
  }

  get dtype(): 'float32' | 'bfloat16' {
    return this.halves ? 'bfloat16' : 'float32';
  }

  /** Bytes the values take in memory. */
  get byteLength(): number {
    return this.halves ? this.halves.byteLength : this.size * 4;
  }

  /**
   * Stores the values as bf16 (round to nearest even), dropping the float32 buffer. Only a
   * tensor that needs no gradient can be: the optimizer updates float32 values.
   */
  toBf16(): this {
    if (this.halves) return this;
    if (this.requiresGrad) throw new Error(`${this}: only a frozen tensor (requiresGrad false) can be stored as bf16`);
    return this.setBf16Storage(narrowToBf16(this.data));
  }

  /** Stores the values as float32 again (exactly the bf16 values, widened). */
  toFloat32(): this {
    if (this.halves) this.data = widenBf16(this.halves);
    return this;
  }

  /** Swaps in bf16 storage of `shape`'s size; the tensor stays frozen while it has it. */
  setBf16(bits: Uint16Array): this {
    if (this.requiresGrad) throw new Error(`${this}: only a frozen tensor (requiresGrad false) can be stored as bf16`);
    return this.setBf16Storage(bits);
  }

  private setBf16Storage(bits: Uint16Array): this {
    if (bits.length !== this.size) throw new Error(`${this}: ${bits.length} bf16 values for shape [${this.shape.join(', ')}]`);
    this.halves = bits;
    this.values = null;
    return this;
  }

  static zeros(shape: readonly number[], requiresGrad = false): Tensor {
    return new Tensor(new Float32Array(sizeOf(shape)), shape, requiresGrad);
  }

  /**
   * A tensor whose values are not initialised, for an op's output that its kernel writes in
   * full (a product with beta 0, an element-wise result): it skips zeroing memory that is about
   * to be overwritten.
   */
  static uninitialized(shape: readonly number[]): Tensor {
    return new Tensor(uninitializedFloats(sizeOf(shape)), shape);
  }

  static from(values: ArrayLike<number>, shape: readonly number[] = [values.length], requiresGrad = false): Tensor {
    return new Tensor(Float32Array.from(values), shape, requiresGrad);
  }

  static scalar(value: number): Tensor {
    return new Tensor(Float32Array.of(value), []);
  }

  get requiresGrad(): boolean {
    return this.autograd.requiresGrad;
  }

  set requiresGrad(on: boolean) {
    if (on && this.halves) throw new Error(`${this} is a frozen weight stored as bf16; it cannot train (keep float32 weights for full fine-tuning)`);
    this.autograd.requiresGrad = on;
  }

  /** Gradient of a leaf, summed over every `backward()` since it was last cleared. */
  get grad(): Tensor | null {
    return this.autograd.grad;
  }

  set grad(g: Tensor | null) {
    this.autograd.grad = g;
  }

  /** How this tensor was computed, when it needs a gradient and is not a leaf. */
  get node(): GradNode | null {
    return this.autograd.node;
  }

  get size(): number {
    return this.autograd.size;
  }

  get ndim(): number {
    return this.shape.length;
  }

  /** The value of a one-element tensor. */
  item(): number {
    if (this.data.length !== 1) throw new Error(`item(): tensor has ${this.data.length} values, expected 1`);
    return this.data[0];
  }

  /** Length of the last dimension. */
  get lastDim(): number {
    return this.shape[this.shape.length - 1] ?? 1;
  }

  /** A copy that is not part of any graph. */
  detach(): Tensor {
    if (this.halves) return Tensor.fromBf16(this.halves, this.shape);
    return new Tensor(this.data, this.shape);
  }

  clone(): Tensor {
    if (this.halves) return Tensor.fromBf16(this.halves.slice(), this.shape);
    return new Tensor(this.data.slice(), this.shape, this.requiresGrad);
  }

  /** Adds `grad` (same size) into this leaf's gradient. */
  accumulateGrad(grad: Float32Array): void {
    this.autograd.accumulateGrad(grad);
  }

  zeroGrad(): void {
    this.grad = null;
  }

  /** Reverse-mode differentiation from this scalar (or with an explicit output gradient). */
  backward(outputGrad?: Float32Array): void {
    runBackward(this.autograd, outputGrad);
  }

  toString(): string {
    return `Tensor([${this.shape.join(', ')}])`;
  }
}

/**
 * A tensor's autograd identity (PyTorch's AutogradMeta): whether it needs a gradient, the node
 * that made it (null for a leaf) and a leaf's accumulated gradient, but not its values. Graph
 * nodes and gradient sinks refer to tensors through these, so holding one keeps no buffer alive.
 */
export class AutogradMeta {
  requiresGrad: boolean;
  node: GradNode | null = null;
  /** A leaf's gradient; see `Tensor.grad`. */
  grad: Tensor | null = null;
  readonly size: number;

  constructor(
    readonly shape: readonly number[],
    requiresGrad: boolean,
  ) {
    this.size = sizeOf(shape);
    this.requiresGrad = requiresGrad;
  }

  accumulateGrad(grad: Float32Array): void {
    if (!this.grad) {
      this.grad = new Tensor(grad.slice(), this.shape);
      return;
    }
    const g = this.grad.data;
    for (let i = 0; i < g.length; i++) g[i] += grad[i];
  }
}

export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** n floats whose values are whatever memory held (small ones are zeroed: not worth a Buffer). */
function uninitializedFloats(n: number): Float32Array {
  if (n < UNINITIALIZED_MIN) return new Float32Array(n);
  const bytes = Buffer.allocUnsafeSlow(n * 4);
  return new Float32Array(bytes.buffer, bytes.byteOffset, n);
}

/**
 * Receives an op's input gradients. `acc(input)` hands out the buffer to add into, or null when
 * the input needs no gradient (or did not need one when the op ran), so backward kernels can
 * skip work nobody will read. Backward closures pass the input's `autograd`: a closure that
 * mentions the Tensor itself keeps its buffer alive until backward.
 */
export interface GradSink {
  acc(input: AutogradMeta | Tensor): Float32Array | null;
  /**
   * Like `acc`, for a kernel that can either overwrite or add (a product's beta): when the input
   * has no gradient yet, its buffer is new and not zeroed, `beta` is 0 and the kernel must write
   * every element; otherwise `beta` is 1 and the kernel adds. Saves zeroing a buffer only to add
   * to it.
   */
  into(input: AutogradMeta | Tensor): GradInto | null;
  /**
   * Adds `grad`, of the input's full size, to the input's gradient. When the input has none yet
   * and `grad` is the output gradient the rule was given, the sink keeps that buffer rather than
   * a copy (the first time only): the rule must not write to `grad` afterwards.
   */
  add(input: AutogradMeta | Tensor, grad: Float32Array): void;
}

/**
 * One recorded op: the identities of its inputs that needed a gradient when it ran, and the rule
 * that turns the output gradient into theirs (holding only what that rule needs).
 */
export interface GradNode {
  readonly op: string;
  readonly inputs: readonly AutogradMeta[];
  backward(outputGrad: Float32Array, sink: GradSink): void;
}

/** Stands where a node was after backward() consumed it, so a second pass fails loudly. */
const USED_NODE: GradNode = {
  op: 'used',
  inputs: [],
  backward(): void {
    throw new Error('backward(): this graph was already used by an earlier backward(); run the forward again');
  },
};

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/**
 * Whether an op run now with these inputs will be recorded with a gradient for any of them: what
 * its forward asks before keeping a value for backward.
 */
export function needsGrad(...inputs: Tensor[]): boolean {
  if (!gradEnabled) return false;
  for (const t of inputs) if (t.requiresGrad) return true;
  return false;
}

/**
 * A value a backward rule kept in its forward. Null means the rule was asked for a gradient it
 * did not prepare for, which `GradSink` rules out; this turns such a bug into an error.
 */
export function saved<T>(value: T | null, what: string): T {
  if (value === null) throw new Error(`backward(): ${what} was not kept by the forward pass`);
  return value;
}

/** Runs `fn` without recording a graph (inference, reference log-probabilities, optimizer steps). */
export function noGrad<T>(fn: () => T): T {
  const before = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = before;
  }
}

/** Runs `fn` with graph recording on, even inside `noGrad` (PyTorch's enable_grad). */
export function withGrad<T>(fn: () => T): T {
  const before = gradEnabled;
  gradEnabled = true;
  try {
    return fn();
  } finally {
    gradEnabled = before;
  }
}

/**
 * Wraps an op's forward result: if grad is on and an input needs a gradient, the result joins the
 * graph with `backward` as its rule. The node keeps the inputs' identities, not the inputs, so
 * `backward` must capture the buffers it needs (and `x.autograd` for `sink.acc`), never `x`.
 */
export function record(
  out: Tensor,
  op: string,
  inputs: readonly Tensor[],
  backward: (outputGrad: Float32Array, sink: GradSink) => void,
): Tensor {
  if (!gradEnabled) return out;
  const edges: AutogradMeta[] = [];
  for (const t of inputs) if (t.requiresGrad) edges.push(t.autograd);
  if (!edges.length) return out;
  out.autograd.requiresGrad = true;
  out.autograd.node = { op, inputs: edges, backward };
  return out;
}

function runBackward(root: AutogradMeta, outputGrad?: Float32Array): void {
  if (!root.requiresGrad) throw new Error('backward(): tensor does not require a gradient');
  if (!outputGrad && root.size !== 1) {
    throw new Error(`backward(): output has ${root.size} values; pass its gradient explicitly`);
  }
  const order = topologicalOrder(root);
  const grads = new Map<AutogradMeta, Float32Array>();
  grads.set(root, outputGrad ? outputGrad.slice() : Float32Array.of(1));
  // The node being run: it gets buffers only for its own recorded inputs, as recorded.
  let running: GradNode = USED_NODE;
  // The running node's output gradient, until a `sink.add` hands the buffer itself to an input.
  let adoptable: Float32Array | null = null;
  /** The input's identity when the running node recorded it as needing a gradient, else null. */
  const wanted = (input: AutogradMeta | Tensor): AutogradMeta | null => {
    const t = input instanceof Tensor ? input.autograd : input;
    return t.requiresGrad && running.inputs.includes(t) ? t : null;
  };
  const sink: GradSink = {
    acc(input: AutogradMeta | Tensor): Float32Array | null {
      const t = wanted(input);
      if (!t) return null;
      let g = grads.get(t);
      if (!g) {
        g = new Float32Array(t.size);
        grads.set(t, g);
      }
      return g;
    },
    into(input: AutogradMeta | Tensor): GradInto | null {
      const t = wanted(input);
      if (!t) return null;
      const g = grads.get(t);
      if (g) return { grad: g, beta: 1 };
      const fresh = uninitializedFloats(t.size);
      grads.set(t, fresh);
      return { grad: fresh, beta: 0 };
    },
    add(input: AutogradMeta | Tensor, grad: Float32Array): void {
      const t = wanted(input);
      if (!t) return;
      if (grad.length !== t.size) throw new Error(`backward: gradient of ${grad.length} values for an input of ${t.size}`);
      const g = grads.get(t);
      if (g) {
        axpy(1, grad, g);
      } else if (grad === adoptable) {
        grads.set(t, grad);
        adoptable = null;
      } else {
        grads.set(t, grad.slice());
      }
    },
  };
  for (let i = order.length - 1; i >= 0; i--) {
    const t = order[i];
    const g = grads.get(t);
    if (!g) continue;
    grads.delete(t);
    if (t.node) {
      running = t.node;
      adoptable = g;
      try {
        t.node.backward(g, sink);
      } finally {
        running = USED_NODE;
        adoptable = null;
      }
      // The graph is used once, as in PyTorch: dropping it frees the saved activations.
      t.node = USED_NODE;
    } else {
      t.accumulateGrad(g);
    }
  }
}

/** Identities reachable from `root`, each after all of its inputs. */
function topologicalOrder(root: AutogradMeta): AutogradMeta[] {
  const order: AutogradMeta[] = [];
  const seen = new Set<AutogradMeta>();
  const stack: Array<[AutogradMeta, number]> = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [t, i] = top;
    const inputs = t.node?.inputs ?? [];
    if (i < inputs.length) {
      top[1] = i + 1;
      const next = inputs[i];
      if (next.requiresGrad && !seen.has(next)) {
        seen.add(next);
        stack.push([next, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  return order;
}
