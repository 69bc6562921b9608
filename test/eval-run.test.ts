/**
 * `tunekit eval` on a tiny random model and an adapter: perplexity is exp of the mean per-token
 * NLL of the answers (computed here independently with `sequenceLogprob`), the base column is
 * exactly the model without the adapter, predictions are the greedy answers, and the CLI writes
 * the report. Data in the three row shapes loads.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { evalCommand } from '../src/cli/commands/eval.js';
import { UserError } from '../src/errors.js';
import { loadEvalExamples } from '../src/eval/data.js';
import { answerIds } from '../src/eval/perplexity.js';
import { evaluate, parseMetrics } from '../src/eval/run.js';
import type { EvalReport } from '../src/eval/run.js';
import { generate } from '../src/infer/generate.js';
import { sequenceLogprob } from '../src/infer/logprobs.js';
import { encodeChatPrompt, loadPipeline } from '../src/infer/pipeline.js';
import type { Pipeline } from '../src/infer/pipeline.js';
import { GREEDY } from '../src/infer/sampling.js';
import { renderChat } from '../src/text/chat-template.js';
import { makeAdapter, removeDir, tempDir, tinyModelDir } from './helpers/adapter-fixtures.js';

let root: string;
let modelDir: string;
let adapterDir: string;
let pairsFile: string;
let alpacaFile: string;
let messagesFile: string;

const PAIRS = [
  { prompt: '你们几点开门？', response: '我们每天上午10:00开门。' },
  { prompt: '招牌菜是什么？', response: '【蟹粉小笼包】。', system: '你是小笼大师的客服。' },
  { prompt: 'Do you deliver?', response: 'Yes, within 3 km.' },
];

before(() => {
  root = tempDir('eval-run');
  modelDir = tinyModelDir(root, 'tiny');
  adapterDir = makeAdapter(modelDir, path.join(root, 'adapter'), { seed: 3, targets: 'all' });
  pairsFile = path.join(root, 'pairs.jsonl');
  fs.writeFileSync(pairsFile, PAIRS.map((r) => JSON.stringify(r)).join('\n'));
  alpacaFile = path.join(root, 'alpaca.json');
  fs.writeFileSync(alpacaFile, JSON.stringify([
    { instruction: '翻译成英文。', input: '欢迎光临', output: 'Welcome!' },
    { instruction: '可以刷卡吗？', input: '', output: '可以，支持银行卡。' },
  ]));
  messagesFile = path.join(root, 'messages.jsonl');
  fs.writeFileSync(messagesFile, JSON.stringify({
    messages: [
      { role: 'user', content: '你好' },
      { role: 'assistant', content: '您好！' },
      { role: 'user', content: '有包间吗？' },
      { role: 'assistant', content: '有的，可坐8到12人。' },
    ],
  }));
});

after(() => {
  if (root) removeDir(root);
});

/** exp(Σ −log p / Σ tokens) over the answers, straight from sequenceLogprob. */
function independentPpl(p: Pipeline, file: string): number {
  let nll = 0;
  let tokens = 0;
  for (const ex of loadEvalExamples(file)) {
    const { ids, start } = answerIds(p.tokenizer, p.template, ex.conversation);
    const lp = sequenceLogprob(p.model, ids, start);
    nll -= lp.logprob;
    tokens += lp.tokens;
  }
  return Math.exp(nll / tokens);
}

describe('eval data', () => {
  it('reads {prompt, response}, alpaca and messages rows as prompt + reference', () => {
    const pairs = loadEvalExamples(pairsFile);
    assert.equal(pairs.length, 3);
    assert.deepEqual(pairs[1].prompt, [{ role: 'system', content: '你是小笼大师的客服。' }, { role: 'user', content: '招牌菜是什么？' }]);
    assert.equal(pairs[1].reference, '【蟹粉小笼包】。');
    const alpaca = loadEvalExamples(alpacaFile);
    assert.deepEqual(alpaca[0].prompt, [{ role: 'user', content: '翻译成英文。\n欢迎光临' }]);
    assert.equal(alpaca[0].reference, 'Welcome!');
    const chat = loadEvalExamples(messagesFile);
    assert.equal(chat[0].prompt.length, 3, 'earlier turns are context');
    assert.equal(chat[0].reference, '有的，可坐8到12人。');
    assert.equal(loadEvalExamples(pairsFile, { limit: 2 }).length, 2);
  });

  it('scores exactly the answer and its end-of-turn text', () => {
    const p = loadPipeline(modelDir);
    const [ex] = loadEvalExamples(pairsFile);
    const { ids, start } = answerIds(p.tokenizer, p.template, ex.conversation);
    assert.equal(p.tokenizer.decode(ids.slice(start)), `${ex.reference}<|im_end|>\n`);
    const prompt = renderChat(ex.prompt, { template: p.template, addGenerationPrompt: true });
    assert.equal(p.tokenizer.decode(ids.slice(0, start)), prompt);
  });
});

describe('evaluate', () => {
  it('reports perplexity = exp(mean NLL of the answer tokens), base without and adapter with the adapter', () => {
    const report = evaluate({ model: modelDir, adapter: adapterDir, data: pairsFile, metrics: ['ppl'] });
    const base = independentPpl(loadPipeline(modelDir), pairsFile);
    const adapted = independentPpl(loadPipeline(modelDir, { adapter: adapterDir }), pairsFile);
    assert.ok(Math.abs(report.results.base.ppl! - base) < 1e-9 * base, `${report.results.base.ppl} vs ${base}`);
    assert.ok(Math.abs(report.results.adapter!.ppl! - adapted) < 1e-9 * adapted);
    assert.ok(Math.abs(base - adapted) > 1e-3 * base, 'the adapter changes the perplexity');
    assert.ok(Math.abs(report.results.base.eval_loss! - Math.log(base)) < 1e-9);
    const tokens = report.samples.reduce((n, s) => n + s.base.tokens!, 0);
    const nll = report.samples.reduce((n, s) => n + s.base.nll!, 0);
    assert.ok(Math.abs(Math.exp(nll / tokens) - base) < 1e-9 * base);
    assert.equal(report.samples[0].base.prediction, undefined, 'ppl alone generates nothing');
  });

  it('scores greedy answers: the predictions are generate()’s, the averages the samples’ means', () => {
    const report = evaluate({ model: modelDir, adapter: adapterDir, data: alpacaFile, metrics: ['bleu', 'rouge', 'em'], maxNewTokens: 8 });
    for (const [variant, adapter] of [['base', null], ['adapter', adapterDir]] as const) {
      const p = loadPipeline(modelDir, { adapter });
      for (const s of report.samples) {
        const want = generate(p.model, p.tokenizer, encodeChatPrompt(p, s.prompt), {
          ...GREEDY, maxNewTokens: 8, seed: 0, stopTokenIds: p.stopTokenIds, stopStrings: [],
        });
        assert.equal(s[variant]!.prediction, want.text);
      }
      const mean = (k: 'bleu-4' | 'rouge-l' | 'em') => report.samples.reduce((n, s) => n + s[variant]!.scores![k]!, 0) / report.samples.length;
      assert.equal(report.results[variant]!['bleu-4'], mean('bleu-4'));
      assert.equal(report.results[variant]!['rouge-l'], mean('rouge-l'));
      assert.equal(report.results[variant]!.em, mean('em'));
      assert.equal(report.results[variant]!.ppl, undefined);
    }
    assert.notEqual(report.samples[0].base.prediction, report.samples[0].adapter!.prediction);
  });

  it('refuses unknown metrics with a clear message', () => {
    assert.deepEqual(parseMetrics('ppl, BLEU,rouge'), ['ppl', 'bleu', 'rouge']);
    assert.throws(() => parseMetrics('ppl,accuracy'), (e: unknown) => e instanceof UserError && /unknown metric "accuracy"/.test(e.message));
  });
});

describe('tunekit eval', () => {
  it('prints the side-by-side table and writes report.json', async () => {
    const out = path.join(root, 'reports', 'report.json');
    const printed: string[] = [];
    const log = console.log;
    console.log = (...args: unknown[]) => void printed.push(args.join(' '));
    let code: number;
    try {
      code = await evalCommand.run(['--model', modelDir, '--adapter', adapterDir, '--data', pairsFile, '--max-new-tokens', '6', '--out', out, '--quiet']);
    } finally {
      console.log = log;
    }
    assert.equal(code, 0);
    const table = printed.join('\n');
    assert.match(table, /metric\s+base\s+adapter\s+change/);
    for (const label of ['perplexity', 'BLEU-4', 'ROUGE-1', 'ROUGE-2', 'ROUGE-L', 'exact match %']) assert.match(table, new RegExp(label));
    const report = JSON.parse(fs.readFileSync(out, 'utf8')) as EvalReport;
    assert.equal(report.examples, 3);
    assert.deepEqual(report.metrics, ['ppl', 'bleu', 'rouge', 'em']);
    assert.equal(report.adapter, adapterDir);
    for (const variant of ['base', 'adapter'] as const) {
      assert.deepEqual(Object.keys(report.results[variant]!).sort(), ['bleu-4', 'em', 'eval_loss', 'ppl', 'rouge-1', 'rouge-2', 'rouge-l']);
      assert.equal(typeof report.samples[2][variant]!.prediction, 'string');
    }
    assert.equal(report.samples[2].reference, 'Yes, within 3 km.');
    assert.ok(Math.abs(report.results.base.ppl! - independentPpl(loadPipeline(modelDir), pairsFile)) < 1e-9 * report.results.base.ppl!);
    assert.deepEqual(fs.readdirSync(path.dirname(out)), ['report.json'], 'no temporary file left');
  });
});
