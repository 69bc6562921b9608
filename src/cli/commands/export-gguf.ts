import { existsSync } from 'node:fs';

import { UserError } from '../../errors.js';
import { GGUF_DTYPES, exportGguf, exportLoraGguf } from '../../io/gguf-export.js';
import type { GgufDtype } from '../../io/gguf-export.js';
import { parseHubId, resolveModel } from '../../io/hub.js';
import { readAdapterConfig } from '../../io/peft-adapter.js';
import { formatBytes } from '../../io/hub-progress.js';

export const EXPORT_GGUF_HELP = `usage: tunekit export --format gguf --model M [--adapter DIR] --out FILE.gguf
                     [--dtype f32|f16|bf16|q8_0] [--template NAME] [--ollama]
       tunekit export --format gguf --adapter DIR [--model M] --lora --out FILE.gguf

Writes a GGUF file for llama.cpp, Ollama and node-llama-cpp, as llama.cpp's converters would:
  --model M             the base model: a folder or a hub id (org/name[@revision])
  --adapter DIR         a LoRA adapter, merged into the weights
  --lora                write the adapter itself as a LoRA GGUF instead of merging it (also the
                        default when --model is left out: the base is the adapter's
                        base_model_name_or_path); load it over the base GGUF
  --dtype               weights type: f16 (default), bf16, q8_0, or f32 (adapters: f32)
  --template NAME       the built-in chat template used in training (qwen, chatml, llama3,
                        alpaca, default) instead of the model's own
  --ollama              also write an Ollama Modelfile beside FILE.gguf whose TEMPLATE and stop
                        parameters match the chat template`;

/** What the export command parsed; string flags as given, booleans when present. */
export interface ExportGgufFlags {
  model?: string;
  adapter?: string;
  out?: string;
  dtype?: string;
  template?: string;
  ollama?: boolean;
  lora?: boolean;
  revision?: string;
}

/** Runs `tunekit export --format gguf`; returns the exit code. */
export async function exportGgufFromArgs(values: ExportGgufFlags): Promise<number> {
  const out = values.out;
  if (!out) throw new UserError('export: --out FILE.gguf is required');
  if (!out.toLowerCase().endsWith('.gguf')) throw new UserError(`export: --out must name a .gguf file for --format gguf, got "${out}"`);
  const dtype = values.dtype?.toLowerCase();
  if (dtype !== undefined && !(GGUF_DTYPES as readonly string[]).includes(dtype)) {
    throw new UserError(`export: --dtype must be one of ${GGUF_DTYPES.join(', ')} for --format gguf, got "${values.dtype}"`);
  }
  const loraMode = values.lora === true || (values.model === undefined && values.adapter !== undefined);
  if (loraMode) {
    if (!values.adapter) throw new UserError('export: --lora needs --adapter DIR');
    if (values.ollama) throw new UserError('export: --ollama describes a whole model; export the base (or merged) model with --ollama, then point an ADAPTER line at this file');
    if (values.template) throw new UserError('export: --template has no effect on a LoRA GGUF (the chat template lives in the base GGUF)');
    const base = values.model ?? baseOfAdapter(values.adapter);
    const model = await resolveModel(base, { revision: values.revision });
    const r = exportLoraGguf({ adapter: values.adapter, model, out, dtype: dtype as GgufDtype | undefined });
    console.log(`wrote ${r.out}: LoRA adapter, ${r.tensors} tensors, ${formatBytes(r.bytes)}`);
    return 0;
  }
  if (!values.model) throw new UserError('export: --model is required');
  const model = await resolveModel(values.model, { revision: values.revision });
  const r = exportGguf({
    model,
    adapter: values.adapter ?? null,
    out,
    dtype: dtype as GgufDtype | undefined,
    template: values.template ?? null,
    ollama: values.ollama === true,
    name: parseHubId(values.model) && !existsSync(values.model) ? values.model : null,
  });
  console.log(`wrote ${r.out}: ${r.tensors} tensors, ${formatBytes(r.bytes)}${r.modelfile ? `; ${r.modelfile} (ollama create NAME -f ${r.modelfile})` : ''}`);
  return 0;
}

function baseOfAdapter(dir: string): string {
  const base = readAdapterConfig(dir).baseModelNameOrPath;
  if (!base) throw new UserError(`${dir}/adapter_config.json names no base_model_name_or_path; pass --model with the base model`);
  return base;
}
