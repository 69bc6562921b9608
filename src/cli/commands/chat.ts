import readline from 'node:readline';
import { generate } from '../../infer/generate.js';
import { resolveModel } from '../../io/hub.js';
import { retrieveContext } from '../../rag/answer.js';
import { KnowledgeBase } from '../../rag/store.js';
import { encodeChatPrompt, loadPipeline } from '../../infer/pipeline.js';
import type { ChatMessage } from '../../text/chat-template.js';
import { parseFlags, requireFlag } from '../args.js';
import type { Command } from '../main.js';
import { SAMPLING_FLAGS, generateOptions } from './generate.js';

const HELP = `usage: tunekit chat --model DIR [--adapter DIR] [--system TEXT] [--kb NAME] [sampling options as for generate]

With --kb, every question first searches the knowledge base; the answer cites its sources as [1], [2],
and when nothing relevant is found it says so instead of inventing.

Type a message and press Enter; the answer streams back. /reset starts over, /exit leaves.`;

export const chatCommand: Command = {
  summary: 'talk with a model, several turns, streaming; /reset and /exit',
  async run(argv) {
    const { values } = parseFlags('chat', argv, {
      ...SAMPLING_FLAGS,
      model: { type: 'string' },
      adapter: { type: 'string' },
      system: { type: 'string' },
      kb: { type: 'string' },
      help: { type: 'boolean' },
    });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const p = loadPipeline(await resolveModel(requireFlag('chat', values.model, 'model')), { template: values.template, adapter: values.adapter });
    const opts = generateOptions('chat', values, p, 0.7);
    const kb = values.kb ? await KnowledgeBase.open(values.kb) : null;
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
      let conversation: ChatMessage[] = history;
      if (kb) {
        const ctx = await retrieveContext(kb, text, { system: values.system });
        if (!ctx.message) {
          console.log(ctx.notFound);
          history.push({ role: 'assistant', content: ctx.notFound });
          ask();
          continue;
        }
        conversation = [ctx.message, ...history.filter((m) => m.role !== 'system')];
        console.error(`(sources: ${ctx.sources.map((s) => `[${s.n}] ${s.label}`).join('; ')})`);
      }
      const result = generate(p.model, p.tokenizer, encodeChatPrompt(p, conversation), {
        ...opts,
        seed: opts.seed + history.length,
        onText: (piece) => process.stdout.write(piece),
      });
      process.stdout.write('\n');
      history.push({ role: 'assistant', content: result.text });
      ask();
    }
    rl.close();
    await kb?.close();
    return 0;
  },
};
