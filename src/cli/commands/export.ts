import { UserError } from '../../errors.js';
import { exportMerged } from '../../io/export.js';
import { resolveModel } from '../../io/hub.js';
import { parseFlags, requireFlag } from '../args.js';
import type { Command } from '../main.js';
import { EXPORT_GGUF_HELP, exportGgufFromArgs } from './export-gguf.js';

const HELP = `usage: tunekit export --model DIR|ORG/NAME [--adapter DIR] --out DIR [--dtype f32|bf16|f16]

Merges the adapter into the base weights (W' = W0 + (alpha/r)·B·A) and writes a plain Hugging Face
model folder: config.json, safetensors weights, tokenizer files. It runs like any model, at no
extra cost.

${EXPORT_GGUF_HELP}`;

export const exportCommand: Command = {
  summary: 'merge a LoRA adapter into its base; write a Hugging Face folder or GGUF (llama.cpp, Ollama)',
  async run(argv) {
    const { values } = parseFlags('export', argv, {
      model: { type: 'string' },
      adapter: { type: 'string' },
      out: { type: 'string' },
      dtype: { type: 'string' },
      format: { type: 'string' },
      template: { type: 'string' },
      revision: { type: 'string' },
      ollama: { type: 'boolean' },
      lora: { type: 'boolean' },
      help: { type: 'boolean' },
    });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const format = values.format ?? 'hf';
    if (format === 'gguf') return exportGgufFromArgs(values);
    if (format !== 'hf') throw new UserError(`export: --format must be hf or gguf, got "${format}"`);
    const dtypes = { f32: 'F32', bf16: 'BF16', f16: 'F16' } as const;
    const d = (values.dtype ?? 'f32').toLowerCase();
    if (!(d in dtypes)) throw new UserError(`export: --dtype must be f32, bf16 or f16 for --format hf, got "${values.dtype}"`);
    const out = requireFlag('export', values.out, 'out');
    const model = await resolveModel(requireFlag('export', values.model, 'model'), { revision: values.revision });
    exportMerged({ model, adapter: values.adapter ?? null, out, dtype: dtypes[d as keyof typeof dtypes] });
    console.log(`wrote ${out}`);
    return 0;
  },
};
