import { UserError } from '../../errors.js';
import { loadPipeline } from '../../infer/pipeline.js';
import { resolveModel } from '../../io/hub.js';
import { answerWithSources } from '../../rag/answer.js';
import type { Pooling } from '../../rag/embed.js';
import { evaluateRetrieval, readQaFile } from '../../rag/eval.js';
import type { EvalReport } from '../../rag/eval.js';
import { displayPath, indexKnowledgeBase, loadRecordedEmbedder, watchKnowledgeBase } from '../../rag/indexer.js';
import type { IndexOptions, IndexReport } from '../../rag/indexer.js';
import { Reranker } from '../../rag/rerank.js';
import { SEARCH_MODES, searchKnowledgeBase } from '../../rag/search.js';
import type { SearchHit, SearchMode, SearchOptions } from '../../rag/search.js';
import { KnowledgeBase } from '../../rag/store.js';
import { closest, numberFlag, parseFlags, requireFlag } from '../args.js';
import type { Command } from '../main.js';
import { SAMPLING_FLAGS, generateOptions } from './generate.js';

const KB_HELP = `  --kb NAME|DIR|URL        the knowledge base: a name (kept in .tunekit/kb/NAME), a folder, or a
                           postgres://user:pass@host/db[?schema=S] URL (pgvector); default "default"`;

const INDEX_FLAGS = {
  kb: { type: 'string' },
  'embed-model': { type: 'string' },
  pooling: { type: 'string' },
  'query-instruction': { type: 'string' },
  'chunk-tokens': { type: 'string' },
  overlap: { type: 'string' },
  'text-field': { type: 'string', multiple: true },
  'title-field': { type: 'string' },
  rebuild: { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean' },
} as const;

const INDEX_HELP = `${KB_HELP}
  --embed-model DIR|ID     embedding model folder or hub id (e.g. Qwen/Qwen3-Embedding-0.6B); recorded, later runs reuse it.
                           Without one the knowledge base is searched by BM25 only
  --pooling last|mean      last token (Qwen3-Embedding, the default) or mean of the hidden states
  --query-instruction TEXT instruction put before queries (default Qwen3-Embedding's for last pooling)
  --chunk-tokens N         chunk size in the embedding model's tokens (default 256)
  --overlap N              tokens shared by consecutive chunks (default 32)
  --text-field F           JSON/JSONL: the field(s) to index (repeatable or comma-separated; default every string field)
  --title-field F          JSON/JSONL: the field that titles each record
  --rebuild                drop the index first (to change the chunk size or the embedding model)
  --json                   print the report as JSON`;

const SEARCH_FLAGS = {
  kb: { type: 'string' },
  k: { type: 'string' },
  mode: { type: 'string' },
  'embed-model': { type: 'string' },
  'rerank-model': { type: 'string' },
  fresh: { type: 'boolean' },
  'min-lexical': { type: 'string' },
  'min-dense': { type: 'string' },
  'min-rerank': { type: 'string' },
} as const;

const SEARCH_HELP = `${KB_HELP}
  --k N                    hits to show (default 5)
  --mode hybrid|dense|bm25 default hybrid when the knowledge base has embeddings, else bm25
  --embed-model DIR|ID     the embedding model, when its recorded folder moved (must be the same model)
  --rerank-model DIR|ID    rerank the candidates with a yes/no judging model (Qwen3-Reranker style)
  --fresh                  of hits about the same thing from different documents, put the newer first
  --min-lexical X          relevance thresholds: lexical coverage (0.25), cosine (0.5), reranker P(yes) (0.5)
  --min-dense X, --min-rerank X`;

const HELP = `usage: tunekit rag <command> [options]

  index DIR|FILE… [--kb NAME]   add or update documents (Markdown, text, HTML, JSON/JSONL, PDF); incremental
  watch DIR|FILE… [--kb NAME]   index, then keep the index current as files change (Ctrl-C stops)
  search "query" [--kb NAME]    show the best chunks, their scores and sources
  ask "question" --model DIR    answer from the knowledge base, citing sources as [1], [2]
  eval --data QA.jsonl          hit@k and MRR for questions with known source documents
  list [--kb NAME]              the documents in a knowledge base

Run "tunekit rag <command> --help" for its options.`;

type Values<F> = ReturnType<typeof parseFlags<F & Parameters<typeof parseFlags>[2]>>['values'];

async function openKb(target: string | undefined, create = false): Promise<KnowledgeBase> {
  return KnowledgeBase.open(target ?? 'default', { create });
}

/** Search flags; an --embed-model is loaded as the knowledge base's embeddings were made. */
async function searchOptions(command: string, values: Values<typeof SEARCH_FLAGS>, kb: KnowledgeBase): Promise<SearchOptions> {
  const mode = values.mode as SearchMode | undefined;
  if (mode !== undefined && !SEARCH_MODES.includes(mode)) {
    throw new UserError(`${command}: --mode must be one of ${SEARCH_MODES.join(', ')}, got "${mode}"`);
  }
  return {
    k: numberFlag(command, values.k, 'k', { integer: true, min: 1 }),
    mode,
    embedder: values['embed-model'] ? loadRecordedEmbedder(await kb.meta(), await resolveModel(values['embed-model'])) : undefined,
    reranker: values['rerank-model'] ? Reranker.load(await resolveModel(values['rerank-model'])) : null,
    freshness: values.fresh ?? false,
    minLexical: numberFlag(command, values['min-lexical'], 'min-lexical', { min: 0 }),
    minDense: numberFlag(command, values['min-dense'], 'min-dense'),
    minRerank: numberFlag(command, values['min-rerank'], 'min-rerank', { min: 0 }),
  };
}

async function indexOptions(command: string, values: Values<typeof INDEX_FLAGS>, inputs: string[]): Promise<IndexOptions> {
  if (inputs.length === 0) throw new UserError(`${command}: name the folders or files to index`);
  const pooling = values.pooling as Pooling | undefined;
  if (pooling !== undefined && pooling !== 'last' && pooling !== 'mean') throw new UserError(`${command}: --pooling must be last or mean, got "${pooling}"`);
  if (pooling && !values['embed-model']) throw new UserError(`${command}: --pooling needs --embed-model`);
  const textFields = (values['text-field'] ?? []).flatMap((f) => f.split(',')).map((f) => f.trim()).filter(Boolean);
  return {
    inputs,
    embedModel: values['embed-model'] ? await resolveModel(values['embed-model']) : undefined,
    pooling,
    queryInstruction: values['query-instruction'],
    chunkTokens: numberFlag(command, values['chunk-tokens'], 'chunk-tokens', { integer: true, min: 16 }),
    overlapTokens: numberFlag(command, values.overlap, 'overlap', { integer: true, min: 0 }),
    load: { textFields: textFields.length ? textFields : null, titleField: values['title-field'] ?? null },
    rebuild: values.rebuild ?? false,
  };
}

function reportLine(kb: KnowledgeBase, r: IndexReport): string {
  const parts = [`${r.added.length} added`, `${r.updated.length} updated`, `${r.removed.length} removed`, `${r.unchanged} unchanged`];
  if (r.skipped.length) parts.push(`${r.skipped.length} skipped`);
  const backfill = r.backfilled ? `, ${r.backfilled} older chunks embedded` : '';
  return `knowledge base ${kb.name}: ${parts.join(', ')}; ${r.chunks} chunks written${backfill} (${(r.ms / 1000).toFixed(1)} s)`;
}

function reportJson(r: IndexReport): object {
  return { ...r, added: r.added.map(displayPath), updated: r.updated.map(displayPath), removed: r.removed.map(displayPath), ignored: r.ignored.map(displayPath), skipped: r.skipped.map((s) => ({ ...s, path: displayPath(s.path) })) };
}

async function runIndex(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags('rag index', argv, INDEX_FLAGS);
  if (values.help) {
    console.log(`usage: tunekit rag index DIR|FILE… [--kb NAME] [options]\n\n${INDEX_HELP}`);
    return 0;
  }
  const opts = await indexOptions('rag index', values, positionals);
  const kb = await openKb(values.kb, true);
  try {
    const report = await indexKnowledgeBase(kb, { ...opts, onFile: values.json ? undefined : (p, n) => console.error(`  ${displayPath(p)}: ${n} chunks`) });
    const stats = await kb.stats();
    if (values.json) console.log(JSON.stringify({ ...reportJson(report), total: stats }));
    else {
      console.log(reportLine(kb, report));
      console.log(`  now ${stats.documents} documents, ${stats.chunks} chunks${stats.dim ? `, ${stats.dim}-dimensional embeddings` : ', BM25 only (no --embed-model)'}`);
    }
    return 0;
  } finally {
    await kb.close();
  }
}

async function runWatch(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags('rag watch', argv, { ...INDEX_FLAGS, debounce: { type: 'string' } });
  if (values.help) {
    console.log(`usage: tunekit rag watch DIR|FILE… [--kb NAME] [options]\n\nIndexes, then re-indexes what changes until Ctrl-C.\n\n${INDEX_HELP}\n  --debounce MS            quiet time after a change before re-indexing (default 300)`);
    return 0;
  }
  const opts = await indexOptions('rag watch', values, positionals);
  const kb = await openKb(values.kb, true);
  let watcher;
  try {
    watcher = await watchKnowledgeBase(kb, {
      ...opts,
      debounceMs: numberFlag('rag watch', values.debounce, 'debounce', { min: 0 }),
      onIndexed: (r) => {
        const changed = r.added.length + r.updated.length + r.removed.length + r.skipped.length;
        if (values.json) console.log(JSON.stringify({ time: new Date().toISOString(), ...reportJson(r) }));
        else if (changed || r.backfilled) console.log(`[${new Date().toLocaleTimeString()}] ${reportLine(kb, r)}`);
      },
    });
  } catch (e) {
    await kb.close();
    throw e;
  }
  if (!values.json) console.log(`watching ${positionals.join(', ')} (Ctrl-C stops)`);
  await new Promise<void>((done) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      done();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await watcher.close();
  await kb.close();
  return 0;
}

function formatScores(h: SearchHit): string {
  const s = h.scores;
  const parts: string[] = [];
  if (s.rerank !== null) parts.push(`rerank ${s.rerank.toFixed(3)}`);
  if (s.rrf !== null) parts.push(`rrf ${s.rrf.toFixed(4)}`);
  if (s.bm25 !== null) parts.push(`bm25 ${s.bm25.toFixed(2)}`);
  if (s.dense !== null) parts.push(`cos ${s.dense.toFixed(3)}`);
  parts.push(`lexical ${s.lexical.toFixed(2)}`);
  return parts.join('  ');
}

function printHits(hits: readonly SearchHit[]): void {
  for (const h of hits) {
    const where = [h.heading, h.locator].filter(Boolean).join(', ');
    console.log(`${h.rank}. ${displayPath(h.path)}${where ? ` › ${where}` : ''} (${h.date})${h.relevant ? '' : '  [below relevance threshold]'}`);
    console.log(`   ${formatScores(h)}`);
    const body = h.text.split('\n').slice(1).join(' ').replace(/\s+/g, ' ').trim();
    console.log(`   ${body.length > 240 ? `${body.slice(0, 240)}…` : body}\n`);
  }
}

function hitJson(h: SearchHit): object {
  return { ...h, path: displayPath(h.path) };
}

async function runSearch(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags('rag search', argv, { ...SEARCH_FLAGS, json: { type: 'boolean' }, help: { type: 'boolean' } });
  if (values.help) {
    console.log(`usage: tunekit rag search "query" [--kb NAME] [options]\n\n${SEARCH_HELP}\n  --json                   print one JSON object`);
    return 0;
  }
  if (positionals.length !== 1) throw new UserError('rag search: give the query as one argument (quote it)');
  const kb = await openKb(values.kb);
  try {
    const opts = await searchOptions('rag search', values, kb);
    const hits = await searchKnowledgeBase(kb, positionals[0], opts);
    if (values.json) console.log(JSON.stringify({ query: positionals[0], hits: hits.map(hitJson) }));
    else if (hits.length === 0) console.log('no matches');
    else printHits(hits);
    return 0;
  } finally {
    await kb.close();
  }
}

async function runAsk(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags('rag ask', argv, {
    ...SEARCH_FLAGS,
    ...SAMPLING_FLAGS,
    model: { type: 'string' },
    adapter: { type: 'string' },
    system: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  });
  if (values.help) {
    console.log(`usage: tunekit rag ask "question" --model DIR [--adapter DIR] [--kb NAME] [options]

  --model DIR|ID           the chat model (folder or hub id); --adapter DIR applies a LoRA adapter
  --system TEXT            your own system prompt, put before the sources
${SEARCH_HELP}
  sampling: as for tunekit generate (default greedy, 256 new tokens)
  --json                   print one JSON object instead of streaming`);
    return 0;
  }
  if (positionals.length !== 1) throw new UserError('rag ask: give the question as one argument (quote it)');
  const question = positionals[0];
  const modelDir = requireFlag('rag ask', values.model, 'model');
  const kb = await openKb(values.kb);
  try {
    const opts = await searchOptions('rag ask', values, kb);
    const pipeline = loadPipeline(await resolveModel(modelDir), { template: values.template, adapter: values.adapter });
    const generation = generateOptions('rag ask', values, pipeline, 0);
    if (!values.json) generation.onText = (piece) => process.stdout.write(piece);
    const result = await answerWithSources(kb, pipeline, question, { ...opts, system: values.system, generation });
    if (values.json) {
      console.log(JSON.stringify({
        question, found: result.found, answer: result.answer, cited: result.cited,
        sources: result.sources.map((s) => ({ ...s, path: displayPath(s.path) })), text: result.text,
      }));
    } else if (!result.found) console.log(result.answer);
    else console.log(`\n\n${result.text.slice(result.answer.length).trim()}`);
    return 0;
  } finally {
    await kb.close();
  }
}

async function runEval(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags('rag eval', argv, {
    ...SEARCH_FLAGS,
    data: { type: 'string' },
    verbose: { type: 'boolean' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  });
  if (values.help) {
    console.log(`usage: tunekit rag eval --data QA.jsonl [--kb NAME] [options]

  --data FILE              JSON lines: {"question": "...", "source": "menu.md"} (or "sources": [...])
${SEARCH_HELP.replace('default hybrid when the knowledge base has embeddings, else bm25', 'default: every mode the knowledge base allows')}
  --verbose                list the questions whose source is not ranked first
  --json                   print the reports as JSON`);
    return 0;
  }
  if (positionals.length) throw new UserError(`rag eval: unexpected argument "${positionals[0]}"; the questions come from --data`);
  const items = readQaFile(requireFlag('rag eval', values.data, 'data'));
  const kb = await openKb(values.kb);
  try {
    const opts = await searchOptions('rag eval', values, kb);
    const k = opts.k ?? 5;
    const modes: SearchMode[] = opts.mode ? [opts.mode] : (await kb.stats()).dim !== null ? ['bm25', 'dense', 'hybrid'] : ['bm25'];
    const reports: EvalReport[] = [];
    for (const mode of modes) reports.push(await evaluateRetrieval(kb, items, { ...opts, k, mode }));
    if (values.json) {
      console.log(JSON.stringify(reports.map((r) => ({ ...r, results: r.results.map((q) => ({ ...q, top: q.top.map(displayPath) })) }))));
      return 0;
    }
    const extra = `${opts.reranker ? ' +rerank' : ''}${opts.freshness ? ' +fresh' : ''}`;
    console.log(`${items.length} questions, knowledge base ${kb.name}`);
    console.log(`${'mode'.padEnd(14)}${'hit@1'.padStart(7)}${`hit@${k}`.padStart(8)}${'MRR'.padStart(7)}`);
    for (const r of reports) {
      console.log(`${(r.mode + extra).padEnd(14)}${r.hitAt1.toFixed(3).padStart(7)}${r.hitAtK.toFixed(3).padStart(8)}${r.mrr.toFixed(3).padStart(7)}`);
    }
    if (values.verbose) {
      for (const r of reports) {
        for (const q of r.results.filter((x) => x.rank !== 1)) {
          console.log(`[${r.mode}] ${q.rank === null ? `not in top ${k}` : `rank ${q.rank}`}: ${q.question} (expected ${q.sources.join(', ')}; got ${q.top.slice(0, 3).map(displayPath).join(', ')})`);
        }
      }
    }
    return 0;
  } finally {
    await kb.close();
  }
}

async function runList(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags('rag list', argv, { kb: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean' } });
  if (values.help) {
    console.log(`usage: tunekit rag list [--kb NAME] [--json]\n\n${KB_HELP}`);
    return 0;
  }
  if (positionals.length) throw new UserError(`rag list: unexpected argument "${positionals[0]}"`);
  const kb = await openKb(values.kb);
  try {
    const docs = await kb.documents();
    const stats = await kb.stats();
    const meta = await kb.meta();
    if (values.json) {
      console.log(JSON.stringify({ ...stats, meta, documents: docs.map((d) => ({ ...d, path: displayPath(d.path), date: new Date(d.date).toISOString() })) }));
      return 0;
    }
    for (const d of docs) console.log(`${new Date(d.date).toISOString().slice(0, 10)}  ${String(d.chunks).padStart(4)} chunks  ${displayPath(d.path)}  (${d.title})`);
    const embedding = stats.dim ? `${stats.dim}-dimensional embeddings from ${meta.embed_model} (${meta.embed_pooling} pooling)` : 'no embeddings (BM25 only)';
    console.log(`${stats.documents} documents, ${stats.chunks} chunks; ${embedding}; chunks of ${meta.chunk_tokens} tokens, overlap ${meta.overlap_tokens}`);
    return 0;
  } finally {
    await kb.close();
  }
}

const SUBCOMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  index: runIndex,
  watch: runWatch,
  search: runSearch,
  ask: runAsk,
  eval: runEval,
  list: runList,
};

export const ragCommand: Command = {
  summary: 'knowledge base: index files, search (BM25 + dense), answer with cited sources, evaluate',
  async run(argv) {
    const [sub, ...rest] = argv;
    if (!sub || sub === '--help' || sub === '-h' || sub === 'help') {
      console.log(HELP);
      return sub ? 0 : 1;
    }
    const run = SUBCOMMANDS[sub];
    if (!run) {
      const hint = closest(sub, Object.keys(SUBCOMMANDS));
      throw new UserError(`unknown rag command "${sub}"${hint ? `; did you mean "${hint}"?` : ''}\n${HELP}`);
    }
    return run(rest);
  },
};
