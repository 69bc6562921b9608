import { Rng } from '../tensor/random.js';
import type { CausalLM } from './decoder.js';

/**
 * Random weights as transformers initialises a fresh model: every matrix ~ N(0, 0.02²)
 * (`initializer_range`), biases zero, norm weights one.
 */
export function initializeWeights(model: CausalLM, seed: number, std = 0.02): void {
  const rng = new Rng(seed);
  for (const [name, t] of model.namedParameters()) {
    if (name.endsWith('norm.weight') || name.endsWith('layernorm.weight')) t.data.fill(1);
    else if (name.endsWith('.bias')) t.data.fill(0);
    else rng.fillNormal(t.data, std);
  }
}
