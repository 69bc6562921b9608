import { simd } from '../wasm/simd.js';
import { fastExp } from './fast-exp.js';
import type { GradInto } from './grad-into.js';
/** SiLU(x) = x·σ(x). */
export function siluForward(x: Float32Array, out: Float32Array): void {
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    out[i] = v / (1 + fastExp(-v));
  }
}

/** d SiLU/dx = σ(x)·(1 + x·(1 − σ(x))). */
export function siluBackward(x: Float32Array, grad: Float32Array, into: Float32Array): void {
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    const s = 1 / (1 + fastExp(-v));
    into[i] += grad[i] * s * (1 + v * (1 - s));
  }
}

/** SwiGLU: out = SiLU(gate) · up, the Llama MLP's middle step, fused to avoid two temporaries. */
export function swigluForward(gate: Float32Array, up: Float32Array, out: Float32Array): void {
  const vector = simd();
  if (vector) return vector.swigluForward(gate, up, out);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i];
    out[i] = (g / (1 + fastExp(-g))) * up[i];
  }
}

/**
 * SwiGLU's backward: ∂/∂gate and ∂/∂up for the output gradient `grad`, each written or added
 * as its `beta` says. Both may be one buffer (swiglu(x, x)); then both must add.
 */
export function swigluBackward(gate: Float32Array, up: Float32Array, grad: Float32Array, gateInto: GradInto | null, upInto: GradInto | null): void {
  const same = gateInto && upInto && gateInto.grad.buffer === upInto.grad.buffer;
  if (same && (gateInto.beta === 0 || upInto.beta === 0)) throw new Error('swigluBackward: one buffer for both gradients must be added to');
  // The SIMD path copies each gradient separately: two views of one buffer must add in place,
  // as the scalar loop does.
  const vector = same ? null : simd();
  if (vector) return vector.swigluBackward(gate, up, grad, gateInto, upInto);
  const [gi, ui] = [gateInto?.grad, upInto?.grad];
  const [gAdd, uAdd] = [gateInto?.beta === 1, upInto?.beta === 1];
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i];
    const s = 1 / (1 + fastExp(-g));
    if (ui) ui[i] = (uAdd ? ui[i] : 0) + grad[i] * g * s;
    if (gi) gi[i] = (gAdd ? gi[i] : 0) + grad[i] * up[i] * s * (1 + g * (1 - s));
  }
}
