/**
 * Chat templates: render a conversation to the exact string the model was trained on, with the
 * model's own Jinja template (as transformers' `apply_chat_template` does) or a built-in one, and
 * split that string into prompt and assistant spans so training can mask the prompt.
 */
import { Template } from '@huggingface/jinja';

import { UserError } from '../errors.js';

export type ChatRole = 'system' | 'user' | 'assistant';

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

export interface RenderOptions {
  /** Jinja source: the model's `chat_template`, or one from {@link BUILTIN_TEMPLATES}. */
  template: string;
  /** Append the header that makes the model answer next (`<|im_start|>assistant\n`). */
  addGenerationPrompt: boolean;
  bosToken?: string | null;
  eosToken?: string | null;
  /** Extra template variables, e.g. `{enable_thinking: false}` for Qwen3. */
  variables?: Record<string, unknown>;
}

/**
 * Built-in templates. `qwen` is Qwen2.5's template without tools (it adds Qwen's default system
 * prompt when the conversation has none); `llama3` is Meta's Llama-3-Instruct template (contents
 * trimmed); `alpaca` and `default` render exactly as LLaMA-Factory's templates of those names.
 */
export const BUILTIN_TEMPLATES = {
  qwen: String.raw`{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
{%- else %}
    {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if not (message.role == 'system' and loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}`,

  chatml: String.raw`{%- for message in messages %}
    {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}`,

  llama3: String.raw`{%- for message in messages %}
    {%- if loop.first %}
        {{- '<|begin_of_text|>' }}
    {%- endif %}
    {{- '<|start_header_id|>' + message.role + '<|end_header_id|>\n\n' + (message.content | trim) + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}`,

  // LLaMA-Factory prints a given system message as is (its default one ends in a blank line) and
  // puts the response header in the user turn, so add_generation_prompt changes nothing here.
  alpaca: String.raw`{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = 'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- system_message }}
{%- for message in loop_messages %}
    {%- if message.role == 'user' %}
        {{- '### Instruction:\n' + message.content + '\n\n### Response:\n' }}
    {%- elif message.role == 'assistant' %}
        {{- message.content + eos_token + '\n\n' }}
    {%- endif %}
{%- endfor %}`,

  default: String.raw`{%- if messages[0]['role'] == 'system' %}
    {{- 'System: ' + messages[0]['content'] + eos_token + '\n' }}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- for message in loop_messages %}
    {%- if message.role == 'user' %}
        {{- 'Human: ' + message.content + eos_token + '\nAssistant:' }}
    {%- elif message.role == 'assistant' %}
        {{- message.content + eos_token + '\n' }}
    {%- endif %}
{%- endfor %}`,
} as const;

export type BuiltinTemplateName = keyof typeof BUILTIN_TEMPLATES;

/** Used when no template is named and the model ships none: LLaMA-Factory's name for it. */
export const FALLBACK_TEMPLATE: BuiltinTemplateName = 'default';

/** The Jinja source of a built-in template; an unknown name is the user's mistake. */
export function builtinTemplate(name: string): string {
  if (!Object.hasOwn(BUILTIN_TEMPLATES, name)) {
    const names = Object.keys(BUILTIN_TEMPLATES).join(', ');
    throw new UserError(`unknown chat template "${name}"; built-in templates are: ${names}`);
  }
  return BUILTIN_TEMPLATES[name as BuiltinTemplateName];
}

/**
 * The template to use: the named built-in when a name is given; otherwise the model's own
 * `chat_template`; otherwise {@link FALLBACK_TEMPLATE}.
 */
export function resolveTemplate(name: string | null | undefined, tokenizer: { chatTemplate: string | null }): string {
  if (name != null && name !== '') return builtinTemplate(name);
  return tokenizer.chatTemplate ?? BUILTIN_TEMPLATES[FALLBACK_TEMPLATE];
}

// Parsing a template costs far more than rendering it, and segmenting renders one template many
// times per conversation; a handful of distinct templates exist per process.
const parsed = new Map<string, Template>();

function compile(source: string): Template {
  let template = parsed.get(source);
  if (template === undefined) {
    try {
      template = new Template(source);
    } catch (err) {
      throw new UserError(`chat template does not parse: ${(err as Error).message}`);
    }
    parsed.set(source, template);
  }
  return template;
}

/** The conversation as the template renders it, like transformers' `apply_chat_template(tokenize=False)`. */
export function renderChat(messages: readonly ChatMessage[], options: RenderOptions): string {
  const template = compile(options.template);
  const context = {
    ...options.variables,
    messages: messages.map((m) => ({ role: m.role, content: m.content })),
    add_generation_prompt: options.addGenerationPrompt,
    bos_token: options.bosToken ?? '',
    eos_token: options.eosToken ?? '',
  };
  try {
    return template.render(context);
  } catch (err) {
    // Everything that runs here is the template's own code: its `raise_exception("...")` (e.g.
    // "Conversation roles must alternate") or a construct it uses wrongly. Either way it is about
    // the template or the conversation given to it, not a tunekit bug.
    throw new UserError(`chat template failed: ${(err as Error).message}`);
  }
}

export interface ChatSegment {
  text: string;
  role: 'prompt' | 'assistant';
}

/**
 * The full rendering (without generation prompt) cut into consecutive segments: each assistant
 * turn — what the model produces after the generation prompt, up to and including the template's
 * end-of-turn marker (`<|im_end|>\n`, `<|eot_id|>`), as LLaMA-Factory trains on it — is labelled
 * 'assistant', everything between is 'prompt'. Concatenating the texts gives the full rendering.
 *
 * Spans come from rendering prefixes of the conversation: turn i starts where
 * `render(messages[0..i), addGenerationPrompt)` ends and ends where `render(messages[0..i])` ends.
 * Templates that render an earlier turn differently once later turns exist (Qwen3 drops the empty
 * `<think></think>` from all but the turns after the last user message) break the second
 * prefix property; there the turn's end is found by locating its content and end-of-turn text.
 */
export function renderChatSegments(
  messages: readonly ChatMessage[],
  options: Omit<RenderOptions, 'addGenerationPrompt'>,
): ChatSegment[] {
  const render = (count: number, addGenerationPrompt: boolean) =>
    renderChat(messages.slice(0, count), { ...options, addGenerationPrompt });
  const full = render(messages.length, false);

  const segments: ChatSegment[] = [];
  let done = 0; // characters of `full` already in segments
  const push = (role: ChatSegment['role'], end: number) => {
    if (end > done) segments.push({ role, text: full.slice(done, end) });
    done = end;
  };

  messages.forEach((message, i) => {
    if (message.role !== 'assistant') return;
    const prompt = render(i, true);
    if (!full.startsWith(prompt) || prompt.length < done) {
      throw new UserError(
        `chat template: the prompt before message ${i} (assistant) is not a prefix of the whole conversation, so the assistant's tokens cannot be found`,
      );
    }
    push('prompt', prompt.length);
    push('assistant', assistantTurnEnd(full, prompt, render(i + 1, false), message, i));
  });
  push('prompt', full.length);
  return segments;
}

/** Where assistant turn i, which starts at `prompt.length`, ends in `full`. */
function assistantTurnEnd(full: string, prompt: string, upToTurn: string, message: ChatMessage, i: number): number {
  if (full.startsWith(upToTurn)) return upToTurn.length;

  // The turn renders differently in the full conversation: find "content + end-of-turn" there,
  // taking the end-of-turn text from the rendering where this turn comes last.
  const fail = (why: string) =>
    new UserError(`chat template: cannot locate assistant message ${i} in the rendered conversation (${why})`);
  if (!upToTurn.startsWith(prompt)) throw fail('the template changes the prompt when the turn is added');
  if (message.content === '') throw fail('its content is empty');
  const turn = upToTurn.slice(prompt.length);
  const at = turn.lastIndexOf(message.content);
  if (at < 0) throw fail('the template rewrites its content');
  const tail = message.content + turn.slice(at + message.content.length);
  const found = full.indexOf(tail, prompt.length);
  if (found < 0) throw fail('its end-of-turn text was not found');
  return found + tail.length;
}
