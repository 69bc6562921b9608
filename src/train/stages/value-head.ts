/**
 * A scalar head on the decoder's final hidden states: the reward model's score and PPO's value
 * estimate. Named and stored as TRL's `AutoModelForCausalLMWithValueHead` and LLaMA-Factory store
 * it: `v_head.summary.weight` [1, C] and `v_head.summary.bias` [1] in `value_head.safetensors`
 * beside the adapter (or the full model).
 */
import fs from 'node:fs';
import { join } from 'node:path';
import { FileFormatError, UserError } from '../../errors.js';
import { readSafetensors, writeSafetensors } from '../../io/safetensors.js';
import { linear } from '../../tensor/index.js';
import { Rng } from '../../tensor/random.js';
import { Tensor } from '../../tensor/tensor.js';

export const VALUE_HEAD_FILE = 'value_head.safetensors';
const WEIGHT = 'v_head.summary.weight';
const BIAS = 'v_head.summary.bias';

export class ValueHead {
  constructor(
    readonly weight: Tensor,
    readonly bias: Tensor,
  ) {}

  /** PyTorch's default Linear init: weight and bias ~ U(−1/√C, 1/√C), seeded. */
  static create(hidden: number, seed: number): ValueHead {
    const rng = new Rng(seed ^ 0x5eed);
    const bound = 1 / Math.sqrt(hidden);
    const w = Tensor.zeros([1, hidden], true);
    const b = Tensor.zeros([1], true);
    rng.fillUniform(w.data, -bound, bound);
    rng.fillUniform(b.data, -bound, bound);
    return new ValueHead(w, b);
  }

  /** Reads `value_head.safetensors` from a folder (or the file itself), checking it fits a model of `hidden` channels. */
  static load(path: string, hidden: number): ValueHead {
    const file = fs.existsSync(path) && fs.statSync(path).isDirectory() ? join(path, VALUE_HEAD_FILE) : path;
    if (!fs.existsSync(file)) throw new UserError(`${path} has no ${VALUE_HEAD_FILE}; a reward model is trained with stage: rm`);
    const st = readSafetensors(file);
    try {
      const read = (name: string, shape: number[]): Tensor => {
        if (!st.has(name)) throw new FileFormatError(file, `has no tensor "${name}"`);
        const got = st.info(name).shape;
        if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) {
          throw new FileFormatError(file, `tensor "${name}" has shape [${got.join(', ')}], the model needs [${shape.join(', ')}] (a head for another model?)`);
        }
        return new Tensor(st.get(name), shape, true);
      };
      return new ValueHead(read(WEIGHT, [1, hidden]), read(BIAS, [1]));
    } finally {
      st.close();
    }
  }

  parameters(): Array<[string, Tensor]> {
    return [[WEIGHT, this.weight], [BIAS, this.bias]];
  }

  /** Hidden states [N, C] to scores [N, 1]. */
  forward(hidden: Tensor): Tensor {
    return linear(hidden, this.weight, this.bias);
  }

  save(dir: string): void {
    fs.mkdirSync(dir, { recursive: true });
    writeSafetensors(join(dir, VALUE_HEAD_FILE), this.parameters().map(([name, t]) => ({ name, shape: t.shape, data: t.data })), { format: 'pt' });
  }
}
