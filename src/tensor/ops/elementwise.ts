import { broadcastShape } from '../../backend/kernels/broadcast.js';
import { addForward, mulBackward, mulForward, reduceToShape, scaleInto, axpy } from '../../backend/kernels/elementwise.js';
import { siluBackward, siluForward, swigluBackward, swigluForward } from '../../backend/kernels/activation.js';
import { Tensor, record } from '../tensor.js';

/** a + b with broadcasting. */
export function add(a: Tensor, b: Tensor): Tensor {
  const shape = broadcastShape(a.shape, b.shape);
  const out = Tensor.zeros(shape);
  addForward(a.data, a.shape, b.data, b.shape, out.data, shape);
  return record(out, 'add', [a, b], (g, sink) => {
    const ga = sink.acc(a);
    const gb = sink.acc(b);
    if (ga) reduceToShape(g, shape, ga, a.shape);
    if (gb) reduceToShape(g, shape, gb, b.shape);
  });
}

/** a · b element-wise with broadcasting. */
export function mul(a: Tensor, b: Tensor): Tensor {
  const shape = broadcastShape(a.shape, b.shape);
  const out = Tensor.zeros(shape);
  mulForward(a.data, a.shape, b.data, b.shape, out.data, shape);
  return record(out, 'mul', [a, b], (g, sink) => {
    const ga = sink.acc(a);
    const gb = sink.acc(b);
    if (ga) mulBackward(g, shape, b.data, b.shape, ga, a.shape);
    if (gb) mulBackward(g, shape, a.data, a.shape, gb, b.shape);
  });
}

/** x · s for a constant s. */
export function scale(x: Tensor, s: number): Tensor {
  const out = Tensor.zeros(x.shape);
  scaleInto(x.data, s, out.data);
  return record(out, 'scale', [x], (g, sink) => {
    const gx = sink.acc(x);
    if (gx) axpy(s, g, gx);
  });
}

/** a − b with broadcasting. */
export function sub(a: Tensor, b: Tensor): Tensor {
  return add(a, scale(b, -1));
}

export function silu(x: Tensor): Tensor {
  const out = Tensor.zeros(x.shape);
  siluForward(x.data, out.data);
  return record(out, 'silu', [x], (g, sink) => {
    const gx = sink.acc(x);
    if (gx) siluBackward(x.data, g, gx);
  });
}

/** SiLU(gate) · up, the gated MLP of Llama and Qwen. */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  if (gate.size !== up.size) throw new Error(`swiglu: ${gate} and ${up} differ in size`);
  const out = Tensor.zeros(gate.shape);
  swigluForward(gate.data, up.data, out.data);
  return record(out, 'swiglu', [gate, up], (g, sink) => {
    swigluBackward(gate.data, up.data, g, sink.acc(gate), sink.acc(up));
  });
}
