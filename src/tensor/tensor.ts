/**
 * A float32 tensor: a contiguous row-major buffer and its shape. Views (`reshape`) share the
 * buffer. When `requiresGrad` is set, ops record how they were made so `backward()` can
 * propagate gradients; leaves accumulate theirs in `grad`.
 */
export class Tensor {
  /** Gradient of a leaf, summed over every `backward()` since it was last cleared. */
  grad: Tensor | null = null;
  /** How this tensor was computed, when it needs a gradient and is not a leaf. */
  node: GradNode | null = null;
  requiresGrad: boolean;

  constructor(
    public data: Float32Array,
    public readonly shape: readonly number[],
    requiresGrad = false,
  ) {
    const n = sizeOf(shape);
    if (data.length !== n) throw new Error(`Tensor: data has ${data.length} values, shape [${shape.join(', ')}] needs ${n}`);
    this.requiresGrad = requiresGrad;
  }

  static zeros(shape: readonly number[], requiresGrad = false): Tensor {
    return new Tensor(new Float32Array(sizeOf(shape)), shape, requiresGrad);
  }

  static from(values: ArrayLike<number>, shape: readonly number[] = [values.length], requiresGrad = false): Tensor {
    return new Tensor(Float32Array.from(values), shape, requiresGrad);
  }

  static scalar(value: number): Tensor {
    return new Tensor(Float32Array.of(value), []);
  }

  get size(): number {
    return this.data.length;
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
    return new Tensor(this.data, this.shape);
  }

  clone(): Tensor {
    return new Tensor(this.data.slice(), this.shape, this.requiresGrad);
  }

  /** Adds `grad` (same size) into this leaf's gradient. */
  accumulateGrad(grad: Float32Array): void {
    if (!this.grad) {
      this.grad = new Tensor(grad.slice(), this.shape);
      return;
    }
    const g = this.grad.data;
    for (let i = 0; i < g.length; i++) g[i] += grad[i];
  }

  zeroGrad(): void {
    this.grad = null;
  }

  /** Reverse-mode differentiation from this scalar (or with an explicit output gradient). */
  backward(outputGrad?: Float32Array): void {
    runBackward(this, outputGrad);
  }

  toString(): string {
    return `Tensor([${this.shape.join(', ')}])`;
  }
}

export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * Receives an op's input gradients. `acc(t)` hands out the buffer to add into, or null when `t`
 * needs no gradient, so backward kernels can skip work nobody will read.
 */
export interface GradSink {
  acc(t: Tensor): Float32Array | null;
}

/** One recorded op: its inputs and the rule that turns the output gradient into theirs. */
export interface GradNode {
  readonly op: string;
  readonly inputs: readonly Tensor[];
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

/**
 * Wraps an op's forward result: if grad is on and an input needs a gradient, the result joins the
 * graph with `backward` as its rule.
 */
export function record(
  out: Tensor,
  op: string,
  inputs: readonly Tensor[],
  backward: (outputGrad: Float32Array, sink: GradSink) => void,
): Tensor {
  if (!gradEnabled) return out;
  let needed = false;
  for (const t of inputs) if (t.requiresGrad) needed = true;
  if (!needed) return out;
  out.requiresGrad = true;
  out.node = { op, inputs, backward };
  return out;
}

function runBackward(root: Tensor, outputGrad?: Float32Array): void {
  if (!root.requiresGrad) throw new Error('backward(): tensor does not require a gradient');
  if (!outputGrad && root.size !== 1) {
    throw new Error(`backward(): output has ${root.size} values; pass its gradient explicitly`);
  }
  const order = topologicalOrder(root);
  const grads = new Map<Tensor, Float32Array>();
  grads.set(root, outputGrad ? outputGrad.slice() : Float32Array.of(1));
  const sink: GradSink = {
    acc(t: Tensor): Float32Array | null {
      if (!t.requiresGrad) return null;
      let g = grads.get(t);
      if (!g) {
        g = new Float32Array(t.size);
        grads.set(t, g);
      }
      return g;
    },
  };
  for (let i = order.length - 1; i >= 0; i--) {
    const t = order[i];
    const g = grads.get(t);
    if (!g) continue;
    grads.delete(t);
    if (t.node) {
      t.node.backward(g, sink);
      // The graph is used once, as in PyTorch: dropping it frees the saved activations.
      t.node = USED_NODE;
    } else {
      t.accumulateGrad(g);
    }
  }
}

/** Tensors reachable from `root`, each after all of its inputs. */
function topologicalOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  const stack: Array<[Tensor, number]> = [[root, 0]];
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
