import { Tensor, noGrad } from '../../src/tensor/index.js';

/**
 * Finite-difference gradient checking for float32 ops.
 *
 * The loss is a fixed random projection of the output, L = Σ out·R, so every output element
 * matters and no error can cancel by symmetry. The analytic gradient comes from
 * `out.backward(R)` (which is exactly ∂L/∂out = R, so the check does not lean on `mul`/`sum`).
 * The numeric one is a central difference of L, summed in float64, with the step actually taken
 * in float32 (x ± h is rounded, so the divisor is the rounded difference).
 */

/** Small deterministic generator (mulberry32) with normal samples by Box–Muller. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  normal(): number {
    const u = 1 - this.uniform();
    const v = this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  normals(n: number, scale = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.normal() * scale;
    return out;
  }
}

/** A tensor of N(0, scale²) values. */
export function randn(rng: Rng, shape: readonly number[], requiresGrad = false, scale = 1): Tensor {
  let n = 1;
  for (const d of shape) n *= d;
  return new Tensor(rng.normals(n, scale), shape, requiresGrad);
}

export interface GradcheckOptions {
  /**
   * Finite-difference step. Default 1e-2: with float32 forwards, smaller steps drown in
   * rounding (a few ops deep, 1e-3 is already worse), larger ones in the O(eps²) truncation.
   */
  eps?: number;
  /** Largest accepted error (see `InputReport.maxErr`). Default 1e-2. */
  tol?: number;
  /** Seed of the projection R. */
  seed?: number;
  /** Accept an input whose gradient is zero everywhere (otherwise the check proves nothing and fails). */
  allowZeroGrad?: boolean;
}

export interface InputReport {
  /** Position of the input in the argument list. */
  input: number;
  shape: readonly number[];
  /** Largest |a − n| / max(|n|, max|n| / 10) over the input's elements (a = analytic, n = numeric). */
  maxErr: number;
  /** Flat index of the worst element, with both gradients there. */
  worstIndex: number;
  analytic: number;
  numeric: number;
  /** Largest |numeric| seen: a check where every gradient is zero proves nothing. */
  maxNumeric: number;
  /** backward() left no gradient at all. */
  missing: boolean;
}

/** L = Σ out·R in float64. */
function project(out: Tensor, r: Float32Array): number {
  let s = 0;
  for (let i = 0; i < out.size; i++) s += out.data[i] * r[i];
  return s;
}

/**
 * Compares, for every input that requires a gradient, the gradient from `backward()` with
 * central differences. `fn` must build a fresh graph on each call from exactly these tensors.
 * Inputs that do not require a gradient must be left without one.
 */
export function gradcheck(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[], opts: GradcheckOptions = {}): InputReport[] {
  const eps = opts.eps ?? 1e-2;
  for (const x of inputs) x.zeroGrad();
  const out = fn(...inputs);
  if (!out.requiresGrad) throw new Error('gradcheck: the output does not require a gradient (no input was recorded)');
  const r = new Rng(opts.seed ?? 1234).normals(out.size);
  out.backward(r);

  const reports: InputReport[] = [];
  inputs.forEach((x, input) => {
    if (!x.requiresGrad) {
      if (x.grad) throw new Error(`gradcheck: input ${input} does not require a gradient but received one`);
      return;
    }
    const analyticGrad = x.grad?.data ?? null;
    const report: InputReport = {
      input, shape: x.shape, maxErr: 0, worstIndex: -1, analytic: 0, numeric: 0, maxNumeric: 0, missing: analyticGrad === null,
    };
    const d = x.data;
    const numeric = new Float64Array(d.length);
    for (let i = 0; i < d.length; i++) {
      const x0 = d[i];
      const plus = Math.fround(x0 + eps);
      const minus = Math.fround(x0 - eps);
      d[i] = plus;
      const fPlus = noGrad(() => project(fn(...inputs), r));
      d[i] = minus;
      const fMinus = noGrad(() => project(fn(...inputs), r));
      d[i] = x0;
      numeric[i] = (fPlus - fMinus) / (plus - minus);
      report.maxNumeric = Math.max(report.maxNumeric, Math.abs(numeric[i]));
    }
    // Errors are relative to each element, floored at a tenth of the input's largest gradient:
    // scale-free (a loss whose gradients are all ~1e-3 is judged as strictly as one at ~1), and
    // tiny elements are not judged on rounding noise alone.
    const floor = Math.max(0.1 * report.maxNumeric, 1e-30);
    for (let i = 0; i < d.length; i++) {
      const analytic = analyticGrad ? analyticGrad[i] : 0;
      const err = Math.abs(analytic - numeric[i]) / Math.max(Math.abs(numeric[i]), floor);
      // A NaN error compares false, so it becomes the worst element (recorded as Infinity).
      if (report.worstIndex < 0 || !(err <= report.maxErr)) {
        report.maxErr = Number.isNaN(err) ? Infinity : err;
        report.worstIndex = i;
        report.analytic = analytic;
        report.numeric = numeric[i];
      }
    }
    reports.push(report);
  });
  return reports;
}

/** `gradcheck`, throwing with the worst element of each failing input. */
export function assertGradcheck(
  name: string,
  fn: (...xs: Tensor[]) => Tensor,
  inputs: Tensor[],
  opts: GradcheckOptions = {},
): InputReport[] {
  const tol = opts.tol ?? 1e-2;
  const reports = gradcheck(fn, inputs, opts);
  if (reports.length === 0) throw new Error(`${name}: no input requires a gradient; nothing was checked`);
  const failures: string[] = [];
  for (const r of reports) {
    const where = `input ${r.input} [${r.shape.join(', ')}]`;
    if (r.missing && r.maxNumeric > 0) {
      failures.push(`${where}: backward() gave no gradient, finite differences reach ${r.maxNumeric.toExponential(3)}`);
    } else if (r.maxNumeric === 0 && !opts.allowZeroGrad) {
      failures.push(`${where}: the gradient is zero everywhere, so this check cannot fail; change the case`);
    } else if (!(r.maxErr < tol)) {
      failures.push(
        `${where}: worst element ${r.worstIndex}: analytic ${r.analytic.toPrecision(6)} vs numeric ${r.numeric.toPrecision(6)} ` +
          `(error ${r.maxErr.toExponential(3)} > ${tol})`,
      );
    }
  }
  if (process.env.GRADCHECK_VERBOSE) {
    const errs = reports.map((r) => `${r.input}: ${r.maxErr.toExponential(2)} (|n| ≤ ${r.maxNumeric.toPrecision(3)})`);
    console.log(`gradcheck ${name}: ${errs.join(', ')}`);
  }
  if (failures.length) throw new Error(`${name}: gradient check failed\n  ${failures.join('\n  ')}`);
  return reports;
}
