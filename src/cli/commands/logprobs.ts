import fs from 'node:fs';
import { FileFormatError, UserError } from '../../errors.js';
import { sequenceLogprob } from '../../infer/logprobs.js';
import { resolveModel } from '../../io/hub.js';
import { encodeChatPrompt, loadPipeline } from '../../infer/pipeline.js';
import type { Pipeline } from '../../infer/pipeline.js';
import { parseFlags, requireFlag } from '../args.js';
import type { Command } from '../main.js';

const HELP = `usage: tunekit logprobs --model DIR --data FILE.jsonl [--chat] [--template NAME]

Each line of FILE is {"prompt": "...", "response": "..."} or {"ids": [...], "start": K}.
For each, prints {"logprob": SUM, "tokens": N}: the summed log-probability of the response
tokens (of ids[K..]) given what precedes them. With --chat the prompt is rendered as a user turn
of the chat template.`;

/** Token ids and where the scored part begins, from one line of the data file. */
export function lineToIds(p: Pipeline, row: unknown, where: string, chat: boolean): { ids: number[]; start: number } {
  if (typeof row !== 'object' || row === null || Array.isArray(row)) throw new FileFormatError(where, 'expected a JSON object');
  const r = row as Record<string, unknown>;
  if ('ids' in r) {
    const ids = r.ids;
    if (!Array.isArray(ids) || ids.length === 0 || !ids.every((x) => Number.isInteger(x) && x >= 0 && x < p.model.config.vocabSize)) {
      throw new FileFormatError(where, `"ids" must be a non-empty array of token ids below ${p.model.config.vocabSize}`);
    }
    const start = r.start;
    if (!Number.isInteger(start) || (start as number) < 1 || (start as number) > ids.length) {
      throw new FileFormatError(where, `"start" must be an integer from 1 to ${ids.length}`);
    }
    return { ids: ids as number[], start: start as number };
  }
  if (typeof r.prompt !== 'string') throw new FileFormatError(where, 'missing "prompt" (a string), or "ids" and "start"');
  if (typeof r.response !== 'string') throw new FileFormatError(where, 'missing "response" (a string)');
  const prompt = chat ? encodeChatPrompt(p, [{ role: 'user', content: r.prompt }]) : p.tokenizer.encode(r.prompt);
  if (prompt.length === 0) throw new FileFormatError(where, '"prompt" encodes to no tokens; the response needs some context');
  const response = p.tokenizer.encode(r.response, { addSpecialTokens: false });
  return { ids: [...prompt, ...response], start: prompt.length };
}

export const logprobsCommand: Command = {
  summary: 'print the log-probability of each response given its prompt (JSON lines)',
  async run(argv) {
    const { values } = parseFlags('logprobs', argv, {
      model: { type: 'string' },
      adapter: { type: 'string' },
      data: { type: 'string' },
      chat: { type: 'boolean' },
      template: { type: 'string' },
      help: { type: 'boolean' },
    });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const file = requireFlag('logprobs', values.data, 'data');
    if (!fs.existsSync(file)) throw new UserError(`logprobs: ${file}: file not found`);
    const p = loadPipeline(await resolveModel(requireFlag('logprobs', values.model, 'model')), { template: values.template, adapter: values.adapter });
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    lines.forEach((line, i) => {
      if (!line.trim()) return;
      const where = `${file}:${i + 1}`;
      let row: unknown;
      try {
        row = JSON.parse(line);
      } catch (e) {
        throw new FileFormatError(where, `invalid JSON (${(e as Error).message})`);
      }
      const { ids, start } = lineToIds(p, row, where, values.chat ?? false);
      console.log(JSON.stringify(sequenceLogprob(p.model, ids, start)));
    });
    return 0;
  },
};
