import { UserError } from '../../errors.js';
import { exportMerged } from '../../io/export.js';
import { parseFlags, requireFlag } from '../args.js';
import type { Command } from '../main.js';

const HELP = `usage: tunekit export --model DIR [--adapter DIR] --out DIR [--dtype f32|bf16|f16]

Merges the adapter into the base weights (W' = W0 + (alpha/r)·B·A) and writes a plain Hugging Face
model folder: config.json, safetensors weights, tokenizer files. It runs like any model, at no
extra cost.`;

export const exportCommand: Command = {
  summary: 'merge a LoRA adapter into its base and write a Hugging Face model folder',
  run(argv) {
    const { values } = parseFlags('export', argv, {
      model: { type: 'string' },
      adapter: { type: 'string' },
      out: { type: 'string' },
      dtype: { type: 'string' },
      format: { type: 'string' },
      help: { type: 'boolean' },
    });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const format = values.format ?? 'hf';
    if (format !== 'hf') throw new UserError(`export: --format ${format} is not available yet; use hf`);
    const dtypes = { f32: 'F32', bf16: 'BF16', f16: 'F16' } as const;
    const d = (values.dtype ?? 'f32').toLowerCase();
    if (!(d in dtypes)) throw new UserError(`export: --dtype must be f32, bf16 or f16, got "${values.dtype}"`);
    const out = requireFlag('export', values.out, 'out');
    exportMerged({ model: requireFlag('export', values.model, 'model'), adapter: values.adapter ?? null, out, dtype: dtypes[d as keyof typeof dtypes] });
    console.log(`wrote ${out}`);
    return 0;
  },
};
