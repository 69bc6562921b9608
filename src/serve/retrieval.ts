/**
 * Retrieval for `serve --kb NAME`: before a chat request is answered, its last user message is
 * looked up in the knowledge base (`retrieveContext` of `src/rag/`), and the numbered sources
 * found replace the system message (which keeps the client's own system prompt first), so the
 * model answers from them and cites them as [1], [2]. The response carries the `sources`. When
 * nothing relevant is found the server answers the knowledge base's "not found" reply without
 * asking the model, as `tunekit rag ask` does.
 *
 * The server itself only knows the {@link Retriever} interface.
 */
import { UserError } from '../errors.js';
import { retrieveContext } from '../rag/answer.js';
import type { ContextOptions } from '../rag/answer.js';
import { displayPath } from '../rag/indexer.js';
import { KnowledgeBase } from '../rag/store.js';
import type { ChatMessage } from '../text/chat-template.js';

export interface Retrieval {
  /** The conversation to answer, with the retrieved context in it. */
  messages: ChatMessage[];
  /** Where the context came from; returned to the client as `sources`. */
  sources: unknown[];
  /** When set, the answer to give without running the model (nothing relevant was found). */
  reply: string | null;
}

export interface Retriever {
  /** Adds context to a conversation; `signal` aborts when the client goes away. */
  retrieve(messages: readonly ChatMessage[], signal: AbortSignal): Promise<Retrieval>;
  close?(): Promise<void>;
}

/** The text to look up: the last user message. */
export function retrievalQuery(messages: readonly ChatMessage[]): string | null {
  for (let i = messages.length - 1; i >= 0; i--) if (messages[i].role === 'user') return messages[i].content;
  return null;
}

/** Retrieval from an open knowledge base; `close()` closes it. */
export function knowledgeBaseRetriever(kb: KnowledgeBase, opts: Omit<ContextOptions, 'system'> = {}): Retriever {
  return {
    async retrieve(messages, signal) {
      const query = retrievalQuery(messages);
      if (query === null || query.trim() === '') return { messages: [...messages], sources: [], reply: null };
      const system = messages[0]?.role === 'system' ? messages[0].content : undefined;
      const found = await retrieveContext(kb, query, { ...opts, system });
      signal.throwIfAborted();
      if (!found.found || !found.message) return { messages: [...messages], sources: [], reply: found.notFound };
      const sources = found.sources.map((s) => ({ n: s.n, path: displayPath(s.path), title: s.title, sections: s.sections, date: s.date }));
      return { messages: [found.message, ...messages.filter((m) => m.role !== 'system')], sources, reply: null };
    },
    close: () => kb.close(),
  };
}

/** `--kb NAME|DIR|URL`: opens the knowledge base (it must exist and hold documents). */
export async function openKnowledgeBaseRetriever(target: string): Promise<Retriever> {
  const kb = await KnowledgeBase.open(target);
  const stats = await kb.stats();
  if (stats.chunks === 0) {
    await kb.close();
    throw new UserError(`knowledge base ${kb.name} is empty; add documents with: tunekit rag index DIR --kb ${target}`);
  }
  return knowledgeBaseRetriever(kb);
}
