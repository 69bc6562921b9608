import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';

import { loadConversations, loadPreferencePairs, loadTextDocuments } from '../src/data/load.js';
import { resolveDatasets } from '../src/data/registry.js';
import type { Conversation } from '../src/data/types.js';
import { UserError } from '../src/errors.js';

const EXAMPLES = 'examples/data';
const PERSONA = '你是一个名为“小笼大师”的智能客服，负责热情、专业地回答顾客关于我们小笼包餐厅的各种问题。';

const scratch = mkdtempSync(join(tmpdir(), 'tunekit-data-convert-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** Writes `rows` (an array: .json; a string: as is) and returns its path. */
function dataFile(name: string, rows: unknown[] | string): string {
  const path = join(scratch, name);
  mkdirSync(scratch, { recursive: true });
  writeFileSync(path, typeof rows === 'string' ? rows : JSON.stringify(rows));
  return path;
}

const load = (path: string, layout?: 'task' | 'persona') => loadConversations(resolveDatasets(path, scratch, { layout }));
const turns = (c: Conversation) => ({ system: c.system, messages: c.messages });

describe('alpaca rows', () => {
  test('task layout (LLaMA-Factory): user turn = instruction + "\\n" + input, the input left out when empty', () => {
    const file = dataFile('task.json', [
      { instruction: '把下面这句翻译成英文。', input: '欢迎光临', output: 'Welcome!' },
      { instruction: '营业时间？', input: '', output: '10:00–21:30' },
      { instruction: '营业时间？', output: '10:00–21:30' },
    ]);
    const items = load(file).items;
    assert.deepEqual(items.map(turns), [
      { system: undefined, messages: [{ role: 'user', content: '把下面这句翻译成英文。\n欢迎光临' }, { role: 'assistant', content: 'Welcome!' }] },
      { system: undefined, messages: [{ role: 'user', content: '营业时间？' }, { role: 'assistant', content: '10:00–21:30' }] },
      { system: undefined, messages: [{ role: 'user', content: '营业时间？' }, { role: 'assistant', content: '10:00–21:30' }] },
    ]);
    assert.deepEqual(items[1].source, { file, row: 2 });
  });

  test('persona layout (the tutorial\'s method 1): instruction is the system prompt, input the user turn', () => {
    const [first] = loadConversations(resolveDatasets('restaurant_persona', EXAMPLES)).items;
    assert.deepEqual(turns(first), {
      system: PERSONA,
      messages: [
        { role: 'user', content: '你们店的招-牌-菜是-什么呀？' },
        { role: 'assistant', content: '您好！我们“小笼大师”非常自豪地向您推荐我们的两大王牌：【蟹粉小笼包】和【经典鲜肉小笼包】。每一颗都皮薄馅大，汤汁鲜美，保证让您回味无穷！' },
      ],
    });
    assert.deepEqual(first.source, { file: join(EXAMPLES, 'restaurant_persona.json'), row: 1 });
  });

  test('the same persona file read with the task layout puts both in the user turn', () => {
    const [first] = loadConversations(resolveDatasets('restaurant_persona.json', EXAMPLES, { layout: 'task' })).items;
    assert.equal(first.system, undefined);
    assert.equal(first.messages[0].content, `${PERSONA}\n你们店的招-牌-菜是-什么呀？`);
  });

  test('system and history columns: history pairs come first', () => {
    const file = dataFile('history.json', [
      {
        system: '你是小笼大师。',
        history: [['有素的吗？', '有【素三鲜小笼包】。'], ['多少钱？', '26元一笼。']],
        instruction: '几只？',
        input: '',
        output: '一笼8只。',
      },
    ]);
    assert.deepEqual(turns(load(file).items[0]), {
      system: '你是小笼大师。',
      messages: [
        { role: 'user', content: '有素的吗？' },
        { role: 'assistant', content: '有【素三鲜小笼包】。' },
        { role: 'user', content: '多少钱？' },
        { role: 'assistant', content: '26元一笼。' },
        { role: 'user', content: '几只？' },
        { role: 'assistant', content: '一笼8只。' },
      ],
    });
  });
});

describe('sharegpt and OpenAI messages', () => {
  const expected = {
    system: '你是小笼大师。',
    messages: [
      { role: 'user', content: '招牌是什么？' },
      { role: 'assistant', content: '蟹粉小笼包和经典鲜肉小笼包。' },
      { role: 'user', content: '几点关门？' },
      { role: 'assistant', content: '晚上9:30。' },
    ],
  };

  test('sharegpt conversations (from/value, human/gpt/system), multi-turn', () => {
    const file = dataFile('sg.json', [{
      conversations: [
        { from: 'system', value: '你是小笼大师。' },
        { from: 'human', value: '招牌是什么？' },
        { from: 'gpt', value: '蟹粉小笼包和经典鲜肉小笼包。' },
        { from: 'human', value: '几点关门？' },
        { from: 'gpt', value: '晚上9:30。' },
      ],
    }]);
    assert.deepEqual(turns(load(file).items[0]), expected);
  });

  test('OpenAI messages (role/content, user/assistant/system), multi-turn', () => {
    const file = dataFile('oa.jsonl', `${JSON.stringify({ messages: [{ role: 'system', content: '你是小笼大师。' }, ...expected.messages] })}\n`);
    const [conv] = load(file).items;
    assert.deepEqual(turns(conv), expected);
    assert.deepEqual(conv.source, { file, row: 1, line: 1 });
  });

  test('a sharegpt entry without tags reads role/content messages too; a system column is used', () => {
    const dir = join(scratch, 'tagless');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'dataset_info.json'), JSON.stringify({ d: { file_name: 'd.json', formatting: 'sharegpt', columns: { messages: 'conversations', system: 'system' } } }));
    writeFileSync(join(dir, 'd.json'), JSON.stringify([{ system: '你是小笼大师。', conversations: expected.messages }]));
    assert.deepEqual(turns(loadConversations(resolveDatasets('d', dir)).items[0]), expected);
  });

  test('the shipped sharegpt example', () => {
    const items = loadConversations(resolveDatasets('restaurant_sharegpt', EXAMPLES)).items;
    assert.equal(items.length, 4);
    assert.equal(items[0].system, PERSONA);
    assert.equal(items[0].messages.length, 6);
    assert.equal(items[2].system, undefined);
  });
});

describe('preference pairs and plain text', () => {
  test('alpaca and sharegpt ranking rows become pairs', () => {
    const alpaca = dataFile('pairs.json', [{ instruction: '招牌？', input: '', chosen: '蟹粉小笼包！', rejected: '不知道。' }]);
    const [pair] = loadPreferencePairs(resolveDatasets(alpaca, scratch)).items;
    assert.deepEqual({ messages: pair.messages, chosen: pair.chosen, rejected: pair.rejected }, {
      messages: [{ role: 'user', content: '招牌？' }], chosen: '蟹粉小笼包！', rejected: '不知道。',
    });
    const sg = dataFile('sg-pairs.json', [{
      conversations: [{ from: 'human', value: '招牌？' }],
      chosen: { from: 'gpt', value: '蟹粉小笼包！' },
      rejected: { from: 'gpt', value: '不知道。' },
    }]);
    const [sgPair] = loadPreferencePairs(resolveDatasets(sg, scratch)).items;
    assert.deepEqual([sgPair.messages, sgPair.chosen, sgPair.rejected], [[{ role: 'user', content: '招牌？' }], '蟹粉小笼包！', '不知道。']);
  });

  test('stages refuse data of the wrong kind', () => {
    const pairs = resolveDatasets(dataFile('p2.json', [{ instruction: 'q', chosen: 'a', rejected: 'b' }]), scratch);
    assert.throws(() => loadConversations(pairs), /is preference data \(ranking\); use it for reward modelling or DPO/);
    assert.throws(() => loadPreferencePairs(resolveDatasets('restaurant_task', EXAMPLES)), /is not preference data/);
    assert.throws(() => loadConversations(resolveDatasets('restaurant_corpus', EXAMPLES)), /is plain text, for pre-training/);
    assert.throws(() => loadTextDocuments(resolveDatasets('restaurant_sharegpt', EXAMPLES)), /holds conversations; pre-training reads plain text/);
  });

  test('pre-training text: .txt paragraphs, {"text"} rows, alpaca rows (instruction + input)', () => {
    const corpus = loadTextDocuments(resolveDatasets('restaurant_corpus', EXAMPLES));
    assert.equal(corpus.items.length, 6);
    assert.match(corpus.items[0].text, /^小笼大师是一家开在上海市黄浦区福州路88号的小笼包餐厅/);
    assert.deepEqual(corpus.items[1].source, { file: join(EXAMPLES, 'restaurant_corpus.txt'), row: 2, line: 3 });
    const jsonl = dataFile('docs.jsonl', '{"text": "doc one"}\n{"text": "doc two"}\n');
    assert.deepEqual(loadTextDocuments(resolveDatasets(jsonl, scratch)).items.map((d) => d.text), ['doc one', 'doc two']);
    const alpaca = dataFile('docs.json', [{ instruction: 'title', input: 'body', output: 'ignored' }, { text: 'plain' }]);
    assert.deepEqual(loadTextDocuments(resolveDatasets(alpaca, scratch)).items.map((d) => d.text), ['title\nbody', 'plain']);
  });
});

describe('bad rows', () => {
  const rows: unknown[] = [
    { instruction: 'q', input: '', output: 'fine' },
    { instruction: 'q', input: '' },
    { instruction: 'q', input: 3, output: 'a' },
    'just a string',
    { instruction: 'q', input: '', output: '   ' },
    { instruction: '', input: '', output: 'a' },
    { instruction: 'q', output: 'a', history: [['only one']] },
    { instruction: 'q', output: 'a', tools: '[{"name": "book"}]' },
  ];
  const problems = (file: string) => [
    `${file}: row 2: "output" is missing (expected a string)`,
    `${file}: row 3: "input" is a number (expected a string)`,
    `${file}: row 4: expected an object, got a string`,
    `${file}: row 5: "output" is empty`,
    `${file}: row 6: the user turn is empty ("instruction" and "input" are both empty)`,
    `${file}: row 7: "history[0]" is an array (expected a [user, assistant] pair of strings)`,
    `${file}: row 8: "tools" is set, but tool calling is not supported yet`,
  ];

  test('without skip_invalid: a user error listing 5 problems and how many in all', () => {
    const file = dataFile('bad.json', rows);
    assert.throws(() => load(file), (err: unknown) => {
      assert.ok(err instanceof UserError);
      assert.deepEqual(err.message.split('\n'), [
        '7 rows are invalid (of 8); fix them, or set skip_invalid: true (--skip-invalid) to drop them:',
        ...problems(file).slice(0, 5).map((p) => `  ${p}`),
        '  … and 2 more',
      ]);
      return true;
    });
  });

  test('with skip_invalid: bad rows are dropped and counted', () => {
    const file = dataFile('bad.json', rows);
    const result = loadConversations(resolveDatasets(file, scratch), { skipInvalid: true });
    assert.equal(result.items.length, 1);
    assert.equal(result.items[0].messages[1].content, 'fine');
    assert.equal(result.total, 8);
    assert.equal(result.skipped, 7);
    assert.deepEqual(result.problems, problems(file).slice(0, 5));
  });

  test('every row bad, even with skip_invalid: nothing to train on is an error', () => {
    const file = dataFile('all-bad.json', [{ instruction: 'q' }]);
    assert.throws(() => loadConversations(resolveDatasets(file, scratch), { skipInvalid: true }), /no examples in .*every row was invalid, e\.g\. .*row 1: "output" is missing/);
  });

  test('sharegpt/OpenAI problems: empty, order, unknown role, ending, system placement; jsonl gives lines', () => {
    const lines = [
      { conversations: [] },
      { conversations: [{ from: 'gpt', value: 'hi' }, { from: 'human', value: 'q' }] },
      { conversations: [{ from: 'human', value: 'q' }, { from: 'bot', value: 'a' }] },
      { conversations: [{ from: 'human', value: 'q' }, { from: 'gpt', value: 'a' }, { from: 'human', value: 'q2' }] },
      { conversations: [{ from: 'human', value: 'q' }, { from: 'system', value: 's' }, { from: 'gpt', value: 'a' }] },
      { conversations: [{ from: 'human', value: 'q' }, { from: 'gpt', value: 7 }] },
      { conversations: [{ from: 'human', value: 'q' }, { from: 'function_call', value: '{}' }] },
      { conversations: 'q' },
      { messages: [{ role: 'user', content: 'q' }, { role: 'user', content: 'q again' }] },
      { messages: [{ role: 'user', content: 'q' }, { role: 'assistant', content: '' }] },
    ];
    const good = { conversations: [{ from: 'human', value: 'q' }, { from: 'gpt', value: 'a' }] };
    const sg = dataFile('bad-sg.jsonl', `\n${[...lines.slice(0, 8), good].map((l) => JSON.stringify(l)).join('\n')}\n`);
    const sgResult = loadConversations(resolveDatasets(sg, scratch), { skipInvalid: true });
    assert.equal(sgResult.skipped, 8);
    assert.equal(sgResult.items.length, 1);
    assert.deepEqual(sgResult.items[0].source, { file: sg, row: 9, line: 10 });
    assert.deepEqual(sgResult.problems, [
      `${sg}: line 2: "conversations" is empty`,
      `${sg}: line 3: "conversations[0].from" is "gpt" where "human" was expected (turns alternate human, gpt)`,
      `${sg}: line 4: "conversations[1].from" is "bot", an unknown role (expected human, gpt or system)`,
      `${sg}: line 5: "conversations" ends with a human message (the last must be gpt)`,
      `${sg}: line 6: "conversations[1].from" is "system": a system message may only come first`,
    ]);
    assert.throws(() => loadConversations(resolveDatasets(sg, scratch)), (err: unknown) => {
      assert.ok(err instanceof UserError);
      assert.match(err.message, /^8 rows are invalid \(of 9\)/);
      assert.match(err.message, /… and 3 more$/);
      return true;
    });
    // The rest, one at a time.
    const one = (row: unknown) => {
      const file = dataFile('one.json', [{ conversations: [{ from: 'human', value: 'ok' }, { from: 'gpt', value: 'ok' }] }, row]);
      return loadConversations(resolveDatasets(file, scratch), { skipInvalid: true }).problems[0].replace(`${file}: `, '');
    };
    assert.equal(one(lines[5]), 'row 2: "conversations[1].value" is a number (expected a string)');
    assert.equal(one(lines[6]), 'row 2: "conversations[1].from" is "function_call": tool calls and tool results are not supported yet');
    assert.equal(one(lines[7]), 'row 2: "conversations" is a string (expected an array of messages)');
    const oa = dataFile('bad-oa.json', [...lines.slice(8), { messages: good.conversations.map((m) => ({ role: m.from === 'human' ? 'user' : 'assistant', content: m.value })) }]);
    assert.deepEqual(loadConversations(resolveDatasets(oa, scratch), { skipInvalid: true }).problems, [
      `${oa}: row 1: "messages[1].role" is "user" where "assistant" was expected (turns alternate user, assistant)`,
      `${oa}: row 2: "messages[1].content" is empty`,
    ]);
  });
});
