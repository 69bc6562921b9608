import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';

import { loadConversations } from '../src/data/load.js';
import { resolveDatasets, type DatasetSpec } from '../src/data/registry.js';
import { FileFormatError, UserError } from '../src/errors.js';

const EXAMPLES = 'examples/data';
const scratch = mkdtempSync(join(tmpdir(), 'tunekit-data-registry-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

function folder(name: string, files: Record<string, unknown>): string {
  const dir = join(scratch, name);
  mkdirSync(dir, { recursive: true });
  for (const [file, content] of Object.entries(files)) {
    writeFileSync(join(dir, file), typeof content === 'string' ? content : JSON.stringify(content));
  }
  return dir;
}

/** The columns that decide how alpaca rows become turns. */
const alpacaColumns = (s: DatasetSpec) => ({ system: s.columns.system, prompt: s.columns.prompt, query: s.columns.query, response: s.columns.response });

describe('dataset_info.json', () => {
  test('the shipped entries: task by default, persona moves instruction to the system prompt', () => {
    const [persona, task] = resolveDatasets(['restaurant_persona', 'restaurant_task'], EXAMPLES);
    assert.deepEqual(persona.paths, [join(EXAMPLES, 'restaurant_persona.json')]);
    assert.equal(persona.formatting, 'alpaca');
    assert.equal(persona.layout, 'persona');
    assert.deepEqual(alpacaColumns(persona), { system: 'instruction', prompt: 'input', query: null, response: 'output' });
    assert.equal(task.layout, 'task');
    assert.deepEqual(alpacaColumns(task), { system: 'system', prompt: 'instruction', query: 'input', response: 'output' });
  });

  test("LLaMA-Factory's columns mapping reads the persona file the way layout: persona does", () => {
    const [viaLayout, viaColumns] = resolveDatasets('restaurant_persona, restaurant_persona_columns', EXAMPLES);
    assert.deepEqual(alpacaColumns(viaColumns), alpacaColumns(viaLayout));
    // Columns the entry does not name are unset, as in LLaMA-Factory.
    assert.equal(viaColumns.columns.history, null);
    assert.deepEqual(loadConversations([viaColumns]).items, loadConversations([viaLayout]).items);
  });

  test('sharegpt entry with tags, and a .txt entry', () => {
    const [sg, corpus] = resolveDatasets(['restaurant_sharegpt', 'restaurant_corpus'], EXAMPLES);
    assert.equal(sg.formatting, 'sharegpt');
    assert.equal(sg.tagsGiven, true);
    assert.deepEqual([sg.tags.roleTag, sg.tags.contentTag, sg.tags.userTag, sg.tags.assistantTag], ['from', 'value', 'human', 'gpt']);
    assert.deepEqual(corpus.paths, [join(EXAMPLES, 'restaurant_corpus.txt')]);
  });

  test('an unknown name is a user error listing the names there', () => {
    assert.throws(() => resolveDatasets('restaurant_menu', EXAMPLES), (err: unknown) => {
      assert.ok(err instanceof UserError);
      assert.match(err.message, /^unknown dataset "restaurant_menu": it is not in examples\/data\/dataset_info\.json/);
      assert.match(err.message, /restaurant_persona, restaurant_task, restaurant_persona_columns, restaurant_sharegpt, restaurant_corpus/);
      return true;
    });
    assert.throws(() => resolveDatasets('x', join(scratch, 'no-such-dir')), /unknown dataset "x": there is no .*dataset_info\.json/);
    assert.throws(() => resolveDatasets(' , ', EXAMPLES), /no dataset given/);
  });

  test('defaults.layout applies to alpaca entries that name none, not to the others', () => {
    const [task, sg, explicit] = resolveDatasets('restaurant_task,restaurant_sharegpt,restaurant_persona', EXAMPLES, { layout: 'persona' });
    assert.equal(task.layout, 'persona');
    assert.deepEqual(alpacaColumns(task), { system: 'instruction', prompt: 'input', query: null, response: 'output' });
    assert.equal(sg.layout, 'task');
    assert.equal(explicit.layout, 'persona');
    const [kept] = resolveDatasets('restaurant_persona', EXAMPLES, { layout: 'task' });
    assert.equal(kept.layout, 'persona', "an entry's own layout wins");
  });

  test('ranking entries keep chosen/rejected columns even when columns are given', () => {
    const dir = folder('ranking', {
      'dataset_info.json': { prefs: { file_name: 'p.json', ranking: true, columns: { prompt: 'instruction', query: 'input' } } },
      'p.json': [{ instruction: 'q', chosen: 'good', rejected: 'bad' }],
    });
    const [spec] = resolveDatasets('prefs', dir);
    assert.equal(spec.ranking, true);
    assert.equal(spec.columns.chosen, 'chosen');
    assert.equal(spec.columns.rejected, 'rejected');
  });

  test('bad entries name dataset_info.json and the entry', () => {
    const cases: [unknown, RegExp][] = [
      [{ file_name: 'a.json', formatting: 'csv' }, /"formatting" is "csv" \(expected one of alpaca, sharegpt, openai, text\)/],
      [{ hf_hub_url: 'org/data' }, /"hf_hub_url" is not supported: tunekit reads local files only/],
      [{ formatting: 'alpaca' }, /"file_name" is missing/],
      [{ file_name: 'a.json', columns: { answer: 'output' } }, /"columns\.answer" is not a column tunekit knows/],
      [{ file_name: 'a.json', tags: { speaker_tag: 'who' } }, /"tags\.speaker_tag" is not a tag tunekit knows/],
      [{ file_name: 'a.json', layout: 'chat' }, /"layout" is "chat" \(expected "task" or "persona"\)/],
      [{ file_name: 'a.json', formatting: 'sharegpt', layout: 'persona' }, /"layout" applies to alpaca datasets only/],
      [{ file_name: 'a.json', layout: 'persona', columns: { prompt: 'instruction', system: 'sys' } }, /layout "persona" takes the system prompt from the prompt column \("instruction"\), so "columns\.system" \("sys"\) cannot also be set/],
      [{ file_name: 'a.json', num_samples: 0 }, /"num_samples" must be a positive integer/],
    ];
    cases.push([{ file_name: 'missing.json' }, /"file_name": .*missing\.json does not exist/]);
    cases.forEach(([entry, message], i) => {
      const dir = folder(`bad-${i}`, { 'dataset_info.json': { d: entry }, 'a.json': '[]' });
      assert.throws(() => resolveDatasets('d', dir), (err: unknown) => {
        assert.ok(err instanceof FileFormatError, `case ${i}`);
        assert.equal(err.file, join(dir, 'dataset_info.json'));
        assert.match(err.message, /: dataset "d": /);
        assert.match(err.message, message);
        return true;
      });
    });
    const broken = folder('broken-info', { 'dataset_info.json': '{"d": ' });
    assert.throws(() => resolveDatasets('d', broken), /dataset_info\.json: not valid JSON/);
  });
});

describe('a file path as the dataset', () => {
  const dir = folder('direct', {
    'alpaca.json': [{ instruction: 'q', input: '', output: 'a' }],
    'sharegpt.jsonl': `${JSON.stringify({ conversations: [{ from: 'human', value: 'q' }, { from: 'gpt', value: 'a' }] })}\n`,
    'openai.jsonl': `${JSON.stringify({ messages: [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }] })}\n`,
    'text.jsonl': '{"text": "a document"}\n',
    'prefs.json': [{ instruction: 'q', chosen: 'good', rejected: 'bad' }],
    'odd.json': [{ question: 'q', answer: 'a' }],
    'notes.txt': 'a document\n',
  });

  test('the format is guessed from the first row', () => {
    const guess = (file: string) => resolveDatasets(join(dir, file), EXAMPLES)[0];
    assert.equal(guess('alpaca.json').formatting, 'alpaca');
    assert.equal(guess('sharegpt.jsonl').formatting, 'sharegpt');
    const openai = guess('openai.jsonl');
    assert.equal(openai.formatting, 'openai');
    assert.equal(openai.columns.messages, 'messages');
    assert.equal(openai.tags.roleTag, 'role');
    assert.equal(guess('text.jsonl').formatting, 'text');
    assert.equal(guess('notes.txt').formatting, 'text');
    const prefs = guess('prefs.json');
    assert.equal(prefs.ranking, true);
    assert.deepEqual(prefs.paths, [join(dir, 'prefs.json')]);
  });

  test('a path inside the dataset folder works too, and defaults.layout applies', () => {
    const [spec] = resolveDatasets('alpaca.json', dir, { layout: 'persona' });
    assert.deepEqual(spec.paths, [join(dir, 'alpaca.json')]);
    assert.deepEqual(alpacaColumns(spec), { system: 'instruction', prompt: 'input', query: null, response: 'output' });
  });

  test('unknown keys are a user error that says what is expected', () => {
    assert.throws(() => resolveDatasets(join(dir, 'odd.json'), EXAMPLES), (err: unknown) => {
      assert.ok(err instanceof UserError);
      assert.match(err.message, /odd\.json: cannot tell the data format from the first row's keys \(question, answer\)/);
      assert.match(err.message, /instruction\/input\/output \(alpaca\), conversations \(sharegpt\), messages \(OpenAI\) or text/);
      return true;
    });
  });
});

describe('num_samples', () => {
  test('a seeded subset, in file order', () => {
    const rows = Array.from({ length: 10 }, (_, i) => ({ instruction: `q${i}`, output: `a${i}` }));
    const dir = folder('samples', { 'dataset_info.json': { d: { file_name: 'd.json', num_samples: 4 }, big: { file_name: 'd.json', num_samples: 11 } }, 'd.json': rows });
    const first = loadConversations(resolveDatasets('d', dir)).items.map((c) => c.source.row);
    assert.equal(first.length, 4);
    assert.deepEqual([...first].sort((a, b) => a - b), first);
    assert.deepEqual(loadConversations(resolveDatasets('d', dir)).items.map((c) => c.source.row), first, 'same seed, same subset');
    assert.throws(() => loadConversations(resolveDatasets('big', dir)), /num_samples is 11 but it has only 10 rows/);
  });
});
