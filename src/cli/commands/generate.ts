import { UserError } from '../../errors.js';
import { generate } from '../../infer/generate.js';
import { resolveModel } from '../../io/hub.js';
import type { GenerateOptions } from '../../infer/generate.js';
import { encodeChatPrompt, loadPipeline } from '../../infer/pipeline.js';
import type { Pipeline } from '../../infer/pipeline.js';
import type { ChatMessage } from '../../text/chat-template.js';
import { numberFlag, parseFlags, requireFlag } from '../args.js';
import type { Command } from '../main.js';

/** Flags shared by every command that generates text. */
export const SAMPLING_FLAGS = {
  'max-new-tokens': { type: 'string' },
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'repetition-penalty': { type: 'string' },
  seed: { type: 'string' },
  stop: { type: 'string', multiple: true },
  template: { type: 'string' },
} as const;

type SamplingValues = { [K in keyof typeof SAMPLING_FLAGS]?: K extends 'stop' ? string[] : string };

/** Command-line sampling flags over the model's generation_config.json, over tunekit's defaults. */
export function generateOptions(command: string, values: SamplingValues, p: Pipeline, fallbackTemperature: number): GenerateOptions {
  const d = p.defaults;
  const topP = numberFlag(command, values['top-p'], 'top-p', { min: 0 }) ?? d.topP ?? 1;
  if (topP > 1 || topP <= 0) throw new UserError(`${command}: --top-p must be in (0, 1], got ${topP}`);
  return {
    maxNewTokens: numberFlag(command, values['max-new-tokens'], 'max-new-tokens', { integer: true, min: 1 }) ?? 256,
    temperature: numberFlag(command, values.temperature, 'temperature', { min: 0 }) ?? d.temperature ?? fallbackTemperature,
    topK: numberFlag(command, values['top-k'], 'top-k', { integer: true, min: 0 }) ?? d.topK ?? 0,
    topP,
    repetitionPenalty: numberFlag(command, values['repetition-penalty'], 'repetition-penalty', { min: 0.01 }) ?? d.repetitionPenalty ?? 1,
    seed: numberFlag(command, values.seed, 'seed', { integer: true }) ?? 0,
    stopTokenIds: p.stopTokenIds,
    stopStrings: values.stop ?? [],
  };
}

const HELP = `usage: tunekit generate --model DIR --prompt TEXT [options]

  --model DIR              Hugging Face model folder
  --adapter DIR            a LoRA adapter (PEFT format) to apply
  --prompt TEXT            the user's message
  --system TEXT            a system prompt
  --raw                    continue the prompt as plain text, without the chat template
  --template NAME          built-in chat template (qwen, chatml, llama3, alpaca, default) instead of the model's
  --max-new-tokens N       default 256
  --temperature T          0 = greedy (the default unless generation_config.json says otherwise)
  --top-k K, --top-p P, --repetition-penalty R, --seed S, --stop STRING (repeatable)
  --json                   print one JSON object instead of streaming text`;

export const generateCommand: Command = {
  summary: 'continue a prompt (as a chat turn by default), streaming the answer',
  async run(argv) {
    const { values } = parseFlags('generate', argv, {
      ...SAMPLING_FLAGS,
      model: { type: 'string' },
      adapter: { type: 'string' },
      prompt: { type: 'string' },
      system: { type: 'string' },
      raw: { type: 'boolean' },
      json: { type: 'boolean' },
      help: { type: 'boolean' },
    });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const dir = await resolveModel(requireFlag('generate', values.model, 'model'));
    const prompt = requireFlag('generate', values.prompt, 'prompt');
    const p = loadPipeline(dir, { template: values.template, adapter: values.adapter });
    const messages: ChatMessage[] = [];
    if (values.system) messages.push({ role: 'system', content: values.system });
    messages.push({ role: 'user', content: prompt });
    const ids = values.raw ? p.tokenizer.encode(prompt) : encodeChatPrompt(p, messages);
    const opts = generateOptions('generate', values, p, 0);
    if (!values.json) opts.onText = (piece) => process.stdout.write(piece);
    const result = generate(p.model, p.tokenizer, ids, opts);
    if (values.json) {
      console.log(JSON.stringify({
        text: result.text,
        finish_reason: result.finishReason,
        prompt_tokens: result.promptTokens,
        completion_tokens: result.ids.length,
        ids: result.ids,
      }));
    } else {
      process.stdout.write('\n');
      const tps = result.ids.length / Math.max(result.decodeMs / 1000, 1e-9);
      console.error(`[${result.promptTokens} prompt tokens, ${result.ids.length} new, ${tps.toFixed(1)} tokens/s, ${result.finishReason}]`);
    }
    return 0;
  },
};
