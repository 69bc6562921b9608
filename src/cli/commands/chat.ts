import readline from 'node:readline';
import { generate } from '../../infer/generate.js';
import { encodeChatPrompt, loadPipeline } from '../../infer/pipeline.js';
import type { ChatMessage } from '../../text/chat-template.js';
import { parseFlags, requireFlag } from '../args.js';
import type { Command } from '../main.js';
import { SAMPLING_FLAGS, generateOptions } from './generate.js';

const HELP = `usage: tunekit chat --model DIR [--system TEXT] [sampling options as for generate]

Type a message and press Enter; the answer streams back. /reset starts over, /exit leaves.`;

export const chatCommand: Command = {
  summary: 'talk with a model, several turns, streaming; /reset and /exit',
  async run(argv) {
    const { values } = parseFlags('chat', argv, {
      ...SAMPLING_FLAGS,
      model: { type: 'string' },
      adapter: { type: 'string' },
      system: { type: 'string' },
      help: { type: 'boolean' },
    });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const p = loadPipeline(requireFlag('chat', values.model, 'model'), { template: values.template, adapter: values.adapter });
    const opts = generateOptions('chat', values, p, 0.7);
    const fresh = (): ChatMessage[] => (values.system ? [{ role: 'system', content: values.system }] : []);
    let history = fresh();
    const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
    const interactive = process.stdin.isTTY;
    if (interactive) console.log('tunekit chat: /reset to start over, /exit to leave');
    const ask = (): void => {
      if (interactive) rl.setPrompt('you> ');
      rl.prompt();
    };
    ask();
    for await (const line of rl) {
      const text = line.trim();
      if (text === '/exit' || text === '/quit') break;
      if (text === '/reset') {
        history = fresh();
        console.log('(conversation cleared)');
        ask();
        continue;
      }
      if (!text) {
        ask();
        continue;
      }
      history.push({ role: 'user', content: text });
      if (interactive) process.stdout.write('assistant> ');
      const result = generate(p.model, p.tokenizer, encodeChatPrompt(p, history), {
        ...opts,
        seed: opts.seed + history.length,
        onText: (piece) => process.stdout.write(piece),
      });
      process.stdout.write('\n');
      history.push({ role: 'assistant', content: result.text });
      ask();
    }
    rl.close();
    return 0;
  },
};
