import { initModel } from '../../io/init-model.js';
import { PRESETS } from '../../models/presets.js';
import { UserError } from '../../errors.js';
import { numberFlag, parseFlags, requireFlag } from '../args.js';
import type { Command } from '../main.js';

function help(): string {
  const presets = Object.entries(PRESETS).map(([n, p]) => `  ${n.padEnd(14)}${p.description}`).join('\n');
  return `usage: tunekit init-model --preset NAME --out DIR [--seed S] [--dtype f32|bf16|f16]\n\nWrites a random-weight model folder in Hugging Face format, with tokenizer files.\n\npresets:\n${presets}`;
}

export const initModelCommand: Command = {
  summary: 'write a random-weight model folder (Hugging Face format) from a preset',
  run(argv) {
    const { values } = parseFlags('init-model', argv, {
      preset: { type: 'string' },
      out: { type: 'string' },
      seed: { type: 'string' },
      dtype: { type: 'string' },
      help: { type: 'boolean' },
    });
    if (values.help) {
      console.log(help());
      return 0;
    }
    const dtypes = { f32: 'F32', bf16: 'BF16', f16: 'F16' } as const;
    const dtypeName = (values.dtype ?? 'f32').toLowerCase();
    if (!(dtypeName in dtypes)) throw new UserError(`init-model: --dtype must be f32, bf16 or f16, got "${values.dtype}"`);
    const out = requireFlag('init-model', values.out, 'out');
    const model = initModel({
      preset: requireFlag('init-model', values.preset, 'preset'),
      out,
      seed: numberFlag('init-model', values.seed, 'seed', { integer: true }) ?? 0,
      dtype: dtypes[dtypeName as keyof typeof dtypes],
    });
    const params = model.parameters().reduce((n, t) => n + t.size, 0);
    console.log(`wrote ${out}: ${model.config.modelType}, ${(params / 1e6).toFixed(2)}M parameters`);
    return 0;
  },
};
