import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';

import { loadConversations, loadPreferencePairs, loadTextDocuments } from '../src/data/load.js';
import { readDatasetInfo, resolveDatasets } from '../src/data/registry.js';

const DIR = 'examples/data';
const PERSONA = '你是一个名为“小笼大师”的智能客服，负责热情、专业地回答顾客关于我们小笼包餐厅的各种问题。';
type Row = { instruction: string; input: string; output: string };
const rows = (file: string) => JSON.parse(readFileSync(`${DIR}/${file}`, 'utf8')) as Row[];

describe('shipped example data', () => {
  test("the tutorial's rows open both restaurant files", () => {
    const persona = rows('restaurant_persona.json');
    const task = rows('restaurant_task.json');
    assert.deepEqual(persona.slice(0, 3).map((r) => r.input), ['你们店的招-牌-菜是-什么呀？', '营业时间？', '我一个人去吃，大概多少钱？']);
    assert.deepEqual(task.slice(0, 3).map((r) => r.instruction), ['你们餐厅的招牌菜是什么？', '请告诉我你们的营业时间。', '在你们餐厅，一个人吃饭大概要花多少钱？']);
    assert.equal(task[1].output, '我们每天的营业时间是上午10:00到晚上9:30，全天恭候您的光临！');
  });

  test('method 1 keeps one persona instruction; method 2 asks a different question each row', () => {
    const persona = rows('restaurant_persona.json');
    const task = rows('restaurant_task.json');
    for (const file of [persona, task]) assert.ok(file.length >= 20 && file.length <= 30, `${file.length} rows`);
    assert.ok(persona.every((r) => r.instruction === PERSONA && r.input !== ''));
    assert.equal(new Set(task.map((r) => r.instruction)).size, task.length);
    assert.ok(task.filter((r) => r.input === '').length >= task.length - 5, 'input is mostly empty in method 2');
  });

  test('the facts agree everywhere', () => {
    const corpus = readFileSync(`${DIR}/restaurant_corpus.txt`, 'utf8');
    const texts = [...rows('restaurant_persona.json'), ...rows('restaurant_task.json')].map((r) => r.output);
    texts.push(...JSON.parse(readFileSync(`${DIR}/restaurant_sharegpt.json`, 'utf8')).flatMap((c: { conversations: { value: string }[] }) => c.conversations.map((m) => m.value)), corpus);
    for (const t of texts) {
      for (const [, time] of t.matchAll(/上午(\d+:\d+)/g)) assert.equal(time, '10:00', t);
      for (const [, time] of t.matchAll(/晚上(\d+:\d+)/g)) assert.equal(time, '9:30', t);
      for (const [, price] of t.matchAll(/蟹粉小笼包】?[^元+；]{0,10}?(\d+)元/g)) assert.equal(price, '48', t);
      for (const [, price] of t.matchAll(/鲜肉小笼包】?[^元+；]{0,10}?(\d+)元/g)) assert.equal(price, '28', t);
      for (const phone of t.match(/0\d\d-\d{4}-\d{4}/g) ?? []) assert.equal(phone, '021-5555-8888');
    }
  });

  test('every dataset_info.json entry loads without a bad row', () => {
    const names = Object.keys(readDatasetInfo(`${DIR}/dataset_info.json`));
    assert.deepEqual(names, ['restaurant_persona', 'restaurant_task', 'restaurant_persona_columns', 'restaurant_sharegpt', 'restaurant_corpus', 'restaurant_preference']);
    for (const spec of resolveDatasets(names, DIR)) {
      const result =
        spec.name === 'restaurant_corpus' ? loadTextDocuments([spec]) : spec.ranking ? loadPreferencePairs([spec]) : loadConversations([spec]);
      assert.equal(result.skipped, 0, spec.name);
      assert.ok(result.items.length > 0, spec.name);
    }
  });
});
