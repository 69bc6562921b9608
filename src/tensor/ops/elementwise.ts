import { broadcastShape } from '../../backend/kernels/broadcast.js';
import { addForward, mulBackward, mulForward, reduceToShape, scaleInto, axpy } from '../../backend/kernels/elementwise.js';
import { siluBackward, siluForward, swigluBackward, swigluForward } from '../../backend/kernels/activation.js';
import { Tensor, needsGrad, record, saved } from '../tensor.js';

/** a + b with broadcasting. */
export function add(a: Tensor, b: Tensor): Tensor {
  const shape = broadcastShape(a.shape, b.shape);
  const out = Tensor.uninitialized(shape);
  addForward(a.data, a.shape, b.data, b.shape, out.data, shape);
  // Backward needs the shapes only.
  const [ag, bg] = [a.autograd, b.autograd];
  return record(out, 'add', [a, b], (g, sink) => {
    // A same-shape input takes the output gradient as it is (the first one without a copy).
    for (const ig of [ag, bg]) {
      if (ig.size === g.length) {
        sink.add(ig, g);
      } else {
        const gi = sink.acc(ig);
        if (gi) reduceToShape(g, shape, gi, ig.shape);
      }
    }
  });
}

/** a · b element-wise with broadcasting. */
export function mul(a: Tensor, b: Tensor): Tensor {
  const shape = broadcastShape(a.shape, b.shape);
  const out = Tensor.zeros(shape);
  mulForward(a.data, a.shape, b.data, b.shape, out.data, shape);
  // da needs b and db needs a: each is kept only if the other trains.
  const aData = needsGrad(b) ? a.data : null;
  const bData = needsGrad(a) ? b.data : null;
  const [ag, bg] = [a.autograd, b.autograd];
  return record(out, 'mul', [a, b], (g, sink) => {
    const ga = sink.acc(ag);
    const gb = sink.acc(bg);
    if (ga) mulBackward(g, shape, saved(bData, 'mul b'), bg.shape, ga, ag.shape);
    if (gb) mulBackward(g, shape, saved(aData, 'mul a'), ag.shape, gb, bg.shape);
  });
}

/** x · s for a constant s. */
export function scale(x: Tensor, s: number): Tensor {
  const out = Tensor.zeros(x.shape);
  scaleInto(x.data, s, out.data);
  const xg = x.autograd;
  return record(out, 'scale', [x], (g, sink) => {
    const gx = sink.acc(xg);
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
  const [xData, xg] = [x.data, x.autograd];
  return record(out, 'silu', [x], (g, sink) => {
    const gx = sink.acc(xg);
    if (gx) siluBackward(xData, g, gx);
  });
}

/** SiLU(gate) · up, the gated MLP of Llama and Qwen. */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  if (gate.size !== up.size) throw new Error(`swiglu: ${gate} and ${up} differ in size`);
  const out = Tensor.uninitialized(gate.shape);
  swigluForward(gate.data, up.data, out.data);
  // Backward keeps gate and up (not the output, which the next layer may drop).
  const [gateData, upData, gateG, upG] = [gate.data, up.data, gate.autograd, up.autograd];
  return record(out, 'swiglu', [gate, up], (g, sink) => {
    if (gateG === upG) {
      // swiglu(x, x): both terms add into x's one gradient.
      const both = sink.acc(gateG);
      swigluBackward(gateData, upData, g, both && { grad: both, beta: 1 }, both && { grad: both, beta: 1 });
    } else {
      swigluBackward(gateData, upData, g, sink.into(gateG), sink.into(upG));
    }
  });
}
