import { resolveModel } from '../../io/hub.js';
import { parseAdapterFlag } from '../../serve/adapters.js';
import { openKnowledgeBaseRetriever } from '../../serve/retrieval.js';
import { startServer } from '../../serve/server.js';
import type { ServerEvent } from '../../serve/server.js';
import { numberFlag, parseFlags, requireFlag } from '../args.js';
import type { Command } from '../main.js';

const HELP = `usage: tunekit serve --model DIR [options]

An OpenAI-compatible HTTP server: /v1/chat/completions (stream: true as server-sent events),
/v1/completions, /v1/embeddings, /v1/models, and /health.

  --model DIR                Hugging Face model folder
  --adapter [NAME=]DIR       a LoRA adapter (PEFT format), served as model NAME (default: the
                             folder's name); repeatable, all over the one base model in memory
  --served-model-name ID     the base model's id (default: its folder's name)
  --kb NAME                  answer chat requests with context retrieved from knowledge base NAME
  --host HOST                default 127.0.0.1 (0.0.0.0 accepts other machines)
  --port P                   default 8000; 0 picks a free port
  --api-key KEY              require "Authorization: Bearer KEY" on /v1 (default: $TUNEKIT_API_KEY,
                             else no key)
  --max-queue N              requests that may wait behind the running one (default 16); more get 429
  --max-tokens N             max_tokens for requests that give none (default 512)
  --template NAME            built-in chat template (qwen, chatml, llama3, alpaca, default)
  --quiet                    no line per request on stderr

Stops on Ctrl-C (SIGINT) or SIGTERM.`;

export const serveCommand: Command = {
  summary: 'OpenAI-compatible HTTP server (chat, completions, embeddings), several adapters over one model',
  async run(argv) {
    const { values } = parseFlags('serve', argv, {
      model: { type: 'string' },
      adapter: { type: 'string', multiple: true },
      'served-model-name': { type: 'string' },
      kb: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      'api-key': { type: 'string' },
      'max-queue': { type: 'string' },
      'max-tokens': { type: 'string' },
      template: { type: 'string' },
      quiet: { type: 'boolean' },
      help: { type: 'boolean' },
    });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const model = await resolveModel(requireFlag('serve', values.model, 'model'));
    const port = numberFlag('serve', values.port, 'port', { integer: true, min: 0 }) ?? 8000;
    const maxQueue = numberFlag('serve', values['max-queue'], 'max-queue', { integer: true, min: 0 });
    const defaultMaxTokens = numberFlag('serve', values['max-tokens'], 'max-tokens', { integer: true, min: 1 });
    const apiKey = values['api-key'] ?? (process.env.TUNEKIT_API_KEY || null);
    const retriever = values.kb ? await openKnowledgeBaseRetriever(values.kb) : null;
    try {
      const server = await startServer({
        model,
        adapters: (values.adapter ?? []).map(parseAdapterFlag),
        baseId: values['served-model-name'],
        template: values.template,
        host: values.host,
        port,
        apiKey,
        maxQueue,
        defaultMaxTokens,
        retriever,
        onEvent: values.quiet ? undefined : logEvent,
      });
      const extras = [values.kb ? `knowledge base ${values.kb}` : '', apiKey ? 'API key required' : ''].filter(Boolean);
      console.error(`tunekit serve: listening on ${server.url}/v1 (models: ${server.models.ids.join(', ')}${extras.map((e) => `; ${e}`).join('')})`);
      await untilSignal();
      console.error('tunekit serve: stopping');
      await server.close();
    } finally {
      await retriever?.close?.();
    }
    return 0;
  },
};

/** Resolves on the first SIGINT or SIGTERM (and stops listening for both). */
function untilSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

function logEvent(e: ServerEvent): void {
  if (e.type === 'request') {
    console.error(`${new Date().toISOString()} ${e.method} ${e.path} ${e.status} ${e.ms.toFixed(0)} ms`);
    if (e.error !== undefined) console.error(e.error);
  } else {
    const tps = e.completionTokens / Math.max(e.ms / 1000, 1e-9);
    console.error(`  ${e.model}: ${e.promptTokens} prompt + ${e.completionTokens} new tokens, ${tps.toFixed(1)} tokens/s, ${e.finishReason}`);
  }
}
