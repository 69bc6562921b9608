/**
 * Answers from the knowledge base, with sources.
 *
 * The relevant hits are grouped by document and numbered; a system message carries them into
 * the chat template with an instruction to cite them as [1], [2]; the answer is followed by the
 * list of sources it cited (all given, when it cited none). When nothing relevant is found the
 * answer says so and the model is not asked at all. The instruction is in Chinese for a
 * question with Chinese characters, in English otherwise.
 */
import type { GenerateOptions, GenerateResult } from '../infer/generate.js';
import { generateAsync } from '../infer/generate-async.js';
import { encodeChatPrompt } from '../infer/pipeline.js';
import type { Pipeline } from '../infer/pipeline.js';
import type { ChatMessage } from '../text/chat-template.js';
import { displayPath } from './indexer.js';
import { searchKnowledgeBase } from './search.js';
import type { SearchHit, SearchOptions } from './search.js';
import type { KnowledgeBase } from './store.js';

export type Language = 'zh' | 'en';

export interface Source {
  /** The number answers cite: [n]. */
  n: number;
  path: string;
  title: string;
  /** Headings or locators of the chunks used from it. */
  sections: string[];
  date: string;
  /** One line: path › section, date. */
  label: string;
}

export interface ContextOptions extends SearchOptions {
  /** Language of the instruction and the "not found" reply; default from the question. */
  language?: Language;
  /** The caller's own system prompt, put before the sources in the same message. */
  system?: string;
}

export interface RetrievedContext {
  /**
   * The system message to put first in the conversation (replacing any other system
   * message: it includes `system`), or null when nothing relevant was found.
   */
  message: ChatMessage | null;
  found: boolean;
  /** The relevant hits, best first. */
  hits: SearchHit[];
  sources: Source[];
  language: Language;
  /** What to reply when nothing was found. */
  notFound: string;
}

const TEXT = {
  en: {
    instruction:
      'Answer the question using the numbered sources below. Cite the sources you use by their numbers in square brackets, ' +
      'like [1] or [2]. If the sources do not contain the answer, say that you do not know; do not make one up. ' +
      'Where sources disagree, the most recent one is right.',
    sources: 'Sources',
    notFound: 'I could not find anything about this in the knowledge base, so I cannot answer it.',
  },
  zh: {
    instruction:
      '请根据下面编号的资料回答问题，并用方括号标注所引用资料的编号，例如 [1]、[2]。' +
      '如果资料中没有答案，请直接说明不知道，不要编造。资料之间有冲突时，以日期最新的为准。',
    sources: '来源',
    notFound: '抱歉，知识库中没有找到与这个问题相关的内容，所以无法回答。',
  },
} as const;

export function questionLanguage(text: string): Language {
  return /\p{Script=Han}/u.test(text) ? 'zh' : 'en';
}

/** Relevant hits grouped by document, numbered in order of each document's best hit. */
export function numberSources(hits: readonly SearchHit[]): { sources: Source[]; groups: SearchHit[][] } {
  const byPath = new Map<string, SearchHit[]>();
  for (const h of hits) byPath.set(h.path, [...(byPath.get(h.path) ?? []), h]);
  const sources: Source[] = [];
  const groups: SearchHit[][] = [];
  for (const [path, group] of byPath) {
    const sections = [...new Set(group.map((h) => [h.heading, h.locator].filter(Boolean).join(', ')).filter(Boolean))];
    const n = sources.length + 1;
    const where = sections.length ? ` › ${sections.join('; ')}` : '';
    sources.push({ n, path, title: group[0].title, sections, date: group[0].date, label: `${displayPath(path)}${where} (${group[0].date})` });
    groups.push(group);
  }
  return { sources, groups };
}

/** The system message text: instruction, then each source's label and chunks. */
export function formatContext(sources: readonly Source[], groups: readonly SearchHit[][], language: Language, system?: string): string {
  const blocks = sources.map((s, i) => `[${s.n}] ${s.label}\n${groups[i].map((h) => h.text).join('\n…\n')}`);
  return [system?.trim(), TEXT[language].instruction, blocks.join('\n\n')].filter(Boolean).join('\n\n');
}

/**
 * Retrieval for one turn of a conversation: the system message with numbered sources for
 * `query`. `tunekit chat --kb` calls this on every user message.
 */
export async function retrieveContext(kb: KnowledgeBase, query: string, opts: ContextOptions = {}): Promise<RetrievedContext> {
  const language = opts.language ?? questionLanguage(query);
  const hits = (await searchKnowledgeBase(kb, query, { k: 4, ...opts })).filter((h) => h.relevant);
  const { sources, groups } = numberSources(hits);
  return {
    message: hits.length ? { role: 'system', content: formatContext(sources, groups, language, opts.system) } : null,
    found: hits.length > 0,
    hits,
    sources,
    language,
    notFound: TEXT[language].notFound,
  };
}

/** The source numbers an answer cites, in order of first citation ([1], [1, 2], [1][3]). */
export function citedSources(answer: string, count: number): number[] {
  const cited: number[] = [];
  for (const m of answer.matchAll(/\[(\d+(?:\s*[,，、]\s*\d+)*)\]/g)) {
    for (const part of m[1].split(/[,，、]/)) {
      const n = Number(part.trim());
      if (n >= 1 && n <= count && !cited.includes(n)) cited.push(n);
    }
  }
  return cited;
}

export function formatSourceList(sources: readonly Source[], language: Language): string {
  return `${TEXT[language].sources}:\n${sources.map((s) => `[${s.n}] ${s.label}`).join('\n')}`;
}

export interface AnswerOptions extends ContextOptions {
  /** Sampling and stopping; default greedy, 512 new tokens, the pipeline's stop tokens. */
  generation?: Partial<GenerateOptions>;
  /** Earlier turns, before the question. */
  history?: readonly ChatMessage[];
}

export interface AnswerResult {
  question: string;
  found: boolean;
  /** The model's answer, or the "not found" reply. */
  answer: string;
  /** Every source given to the model. */
  sources: Source[];
  /** The numbers the answer cites. */
  cited: number[];
  /** The answer, a blank line and the sources it cited (all given, when it cited none). */
  text: string;
  hits: SearchHit[];
  language: Language;
  generation: GenerateResult | null;
}

/**
 * Retrieves, asks the model with the sources in its context, and lists the sources. Stream the
 * answer with `generation.onText`, stop it with `generation.signal`. The server exposes this
 * as it is.
 */
export async function answerWithSources(
  kb: KnowledgeBase,
  pipeline: Pipeline,
  question: string,
  opts: AnswerOptions = {},
): Promise<AnswerResult> {
  const ctx = await retrieveContext(kb, question, opts);
  const base = { question, sources: ctx.sources, hits: ctx.hits, language: ctx.language };
  if (!ctx.found || !ctx.message) {
    return { ...base, found: false, answer: ctx.notFound, cited: [], text: ctx.notFound, generation: null };
  }
  const messages: ChatMessage[] = [ctx.message, ...(opts.history ?? []).filter((m) => m.role !== 'system'), { role: 'user', content: question }];
  const ids = encodeChatPrompt(pipeline, messages);
  const d = pipeline.defaults;
  // Yields to the event loop between tokens, so a server stays responsive and sees aborts.
  const generation = await generateAsync(pipeline.model, pipeline.tokenizer, ids, {
    maxNewTokens: 512,
    temperature: 0,
    topK: d.topK ?? 0,
    topP: d.topP ?? 1,
    repetitionPenalty: d.repetitionPenalty ?? 1,
    seed: 0,
    stopTokenIds: pipeline.stopTokenIds,
    stopStrings: [],
    ...opts.generation,
  });
  const answer = generation.text.trim();
  const cited = citedSources(answer, ctx.sources.length);
  const listed = cited.length ? cited.map((n) => ctx.sources[n - 1]) : ctx.sources;
  const text = `${answer}\n\n${formatSourceList(listed, ctx.language)}`;
  return { ...base, found: true, answer, cited, text, generation };
}
