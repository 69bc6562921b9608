/**
 * An Ollama Modelfile for an exported GGUF: FROM the file, a TEMPLATE (Go text/template) that
 * renders a conversation exactly as the chat template used in training does, and the stop
 * parameters that end a turn. A template that differs from training's, or a missing stop, is the
 * most common complaint after an export: the model rambles into a made-up next turn.
 *
 * Ollama passes the conversation as `.Messages` ({Role, Content}); a Modelfile SYSTEM line arrives
 * as a leading system message. Each built-in template tunekit trains with has its Go
 * transcription here; a model's own Jinja template is recognised by its markers.
 */
import fs from 'node:fs';
import { basename, dirname, join } from 'node:path';

import { UserError } from '../errors.js';
import { BUILTIN_TEMPLATES } from '../text/chat-template.js';
import type { BuiltinTemplateName } from '../text/chat-template.js';
import type { GgufVocab } from './gguf-tokenizer.js';

export interface OllamaTemplate {
  template: string;
  stop: string[];
}

const QWEN_DEFAULT_SYSTEM = 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.';
const ALPACA_DEFAULT_SYSTEM = 'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n';

const CHATML_TURNS = `{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
`;

/** Which built-in template a Jinja chat template is, by its markers; null when unknown. */
export function recogniseTemplate(jinja: string): BuiltinTemplateName | null {
  for (const [name, source] of Object.entries(BUILTIN_TEMPLATES)) if (source === jinja) return name as BuiltinTemplateName;
  if (jinja.includes('<|im_start|>')) return jinja.includes(QWEN_DEFAULT_SYSTEM) ? 'qwen' : 'chatml';
  if (jinja.includes('<|start_header_id|>')) return 'llama3';
  if (jinja.includes('### Instruction:')) return 'alpaca';
  if (jinja.includes("'Human: '")) return 'default';
  return null;
}

/**
 * The Go template and stops for a built-in template. `bos` is written literally where the Jinja
 * template writes it and the tokenizer does not add it itself; `eos` is the eos token's text.
 */
export function ollamaTemplate(name: BuiltinTemplateName, tokens: { bos: string | null; addBos: boolean; eos: string | null }): OllamaTemplate {
  const eos = tokens.eos ?? '';
  switch (name) {
    case 'chatml':
      return { template: CHATML_TURNS, stop: ['<|im_start|>', '<|im_end|>'] };
    case 'qwen':
      return {
        template: `{{- if or (not .Messages) (ne (index .Messages 0).Role "system") }}<|im_start|>system
${QWEN_DEFAULT_SYSTEM}<|im_end|>
{{ end }}${CHATML_TURNS}`,
        stop: ['<|im_start|>', '<|im_end|>'],
      };
    case 'llama3': {
      const bos = tokens.addBos ? '' : (tokens.bos ?? '<|begin_of_text|>');
      return {
        template: `${bos}{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}<|start_header_id|>assistant<|end_header_id|>

`,
        stop: ['<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'],
      };
    }
    case 'alpaca':
      return {
        template: `{{- if and .Messages (eq (index .Messages 0).Role "system") }}{{ (index .Messages 0).Content }}{{ else }}${ALPACA_DEFAULT_SYSTEM}{{ end }}
{{- range .Messages }}{{ if eq .Role "user" }}### Instruction:
{{ .Content }}

### Response:
{{ else if eq .Role "assistant" }}{{ .Content }}${eos}

{{ end }}{{ end }}`,
        stop: [...(eos ? [eos] : []), '### Instruction:'],
      };
    case 'default':
      return {
        template: `{{- range $i, $m := .Messages }}{{ if and (eq $i 0) (eq $m.Role "system") }}System: {{ $m.Content }}${eos}
{{ else if eq $m.Role "user" }}Human: {{ $m.Content }}${eos}
Assistant:{{ else if eq $m.Role "assistant" }}{{ $m.Content }}${eos}
{{ end }}{{ end }}`,
        stop: [...(eos ? [eos] : []), 'Human:'],
      };
  }
}

export interface ModelfileOptions {
  /** The GGUF file; the Modelfile goes beside it and names it relatively. */
  gguf: string;
  /** The Jinja template embedded in the GGUF (training's). */
  chatTemplate: string | null;
  /** The built-in template named at export, if any. */
  templateName: string | null;
  vocab: Pick<GgufVocab, 'tokens' | 'specialIds' | 'addSpecial'>;
}

export function modelfileText(opts: ModelfileOptions): string {
  const name = (opts.templateName as BuiltinTemplateName | null) ?? (opts.chatTemplate ? recogniseTemplate(opts.chatTemplate) : 'default');
  if (name === null) {
    throw new UserError(
      `--ollama: the model's chat template is none of the formats tunekit can write for Ollama (${Object.keys(BUILTIN_TEMPLATES).join(', ')}); pass --template NAME with the template used in training`,
    );
  }
  const token = (id: number | undefined) => (id === undefined ? null : (opts.vocab.tokens[id] ?? null));
  const { template, stop } = ollamaTemplate(name, {
    bos: token(opts.vocab.specialIds.bos),
    addBos: opts.vocab.addSpecial.bos === true,
    eos: token(opts.vocab.specialIds.eos),
  });
  if (template.includes('"""')) throw new UserError('--ollama: the template contains """, which a Modelfile cannot quote');
  const lines = [
    `# Written by tunekit: chat template "${name}", as in training.`,
    `FROM ./${basename(opts.gguf)}`,
    `TEMPLATE """${template}"""`,
    ...[...new Set(stop)].map((s) => `PARAMETER stop ${JSON.stringify(s)}`),
  ];
  return `${lines.join('\n')}\n`;
}

/** Writes `Modelfile` beside the GGUF file; returns its path. */
export function writeOllamaModelfile(opts: ModelfileOptions): string {
  const path = join(dirname(opts.gguf), 'Modelfile');
  const tmp = `${path}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, modelfileText(opts));
  fs.renameSync(tmp, path);
  return path;
}
