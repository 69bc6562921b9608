import { simd } from '../wasm/simd.js';
import { fastExp } from './fast-exp.js';
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

export function swigluBackward(
  gate: Float32Array,
  up: Float32Array,
  grad: Float32Array,
  gateInto: Float32Array | null,
  upInto: Float32Array | null,
): void {
  // The SIMD path copies each accumulator separately: two views of one buffer (swiglu(x, x))
  // must add in place, as the scalar loop does.
  const vector = gateInto && upInto && gateInto.buffer === upInto.buffer ? null : simd();
  if (vector) return vector.swigluBackward(gate, up, grad, gateInto, upInto);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i];
    const s = 1 / (1 + fastExp(-g));
    if (upInto) upInto[i] += grad[i] * g * s;
    if (gateInto) gateInto[i] += grad[i] * up[i] * s * (1 + g * (1 - s));
  }
}
