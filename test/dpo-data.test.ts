/**
 * Preference data for rm and dpo in LLaMA-Factory's forms (alpaca with chosen/rejected columns,
 * the persona layout, sharegpt and OpenAI messages with chosen/rejected messages, `ranking: true`
 * in dataset_info.json), how pairs are encoded and batched, the rows reported (identical or
 * empty answers), and the stage keys of the config.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { IGNORE_INDEX } from '../src/tensor/index.js';
import { initModel } from '../src/io/init-model.js';
import { loadTrainConfig } from '../src/train/config.js';
import type { TrainConfig } from '../src/train/config.js';
import { makePairBatches, preparePreferenceData } from '../src/train/preference-data.js';
import { resolveTemplate } from '../src/text/chat-template.js';
import { Tokenizer } from '../src/text/tokenizer.js';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tunekit-dpo-data-'));
const modelDir = path.join(scratch, 'tiny');
let tokenizer: Tokenizer;
let template: string;

const SYSTEM = 'You are the restaurant assistant.';
const files: Record<string, unknown> = {
  'alpaca.json': [
    { instruction: 'When do you open?', input: '', chosen: 'Hello! We open at ten.', rejected: 'Ten.' },
    { instruction: 'Price?', input: 'Crab dumplings', chosen: 'Hello! 48 yuan a basket.', rejected: '48.', history: [['Hi', 'Hello!']] },
  ],
  'persona.json': [{ instruction: SYSTEM, input: 'Parking?', chosen: 'Yes, there is a car park behind us.', rejected: 'Yes.' }],
  'sharegpt.json': [
    {
      conversations: [{ from: 'system', value: SYSTEM }, { from: 'human', value: 'Do you deliver?' }],
      chosen: { from: 'gpt', value: 'Yes, within three kilometres!' },
      rejected: { from: 'gpt', value: 'Yes.' },
    },
  ],
  'openai.jsonl': `${JSON.stringify({
    messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }, { role: 'user', content: 'Spicy?' }],
    chosen: { role: 'assistant', content: 'A little, we can make it mild.' },
    rejected: { role: 'assistant', content: 'Yes.' },
  })}\n`,
  'same.json': [
    { instruction: 'A?', input: '', chosen: 'Good answer.', rejected: 'Bad.' },
    { instruction: 'B?', input: '', chosen: 'Same text.', rejected: 'Same text.' },
  ],
  'empty.json': [{ instruction: 'A?', input: '', chosen: 'Good answer.', rejected: '' }],
};

before(() => {
  initModel({ preset: 'tiny', out: modelDir, seed: 1 });
  tokenizer = Tokenizer.fromFolder(modelDir);
  template = resolveTemplate(null, tokenizer);
  const data = path.join(scratch, 'data');
  fs.mkdirSync(data);
  for (const [name, value] of Object.entries(files)) fs.writeFileSync(path.join(data, name), typeof value === 'string' ? value : JSON.stringify(value));
  fs.writeFileSync(
    path.join(data, 'dataset_info.json'),
    JSON.stringify({
      alpaca: { file_name: 'alpaca.json', ranking: true },
      persona: { file_name: 'persona.json', ranking: true, layout: 'persona' },
      sharegpt: { file_name: 'sharegpt.json', formatting: 'sharegpt', ranking: true, columns: { messages: 'conversations', chosen: 'chosen', rejected: 'rejected' } },
      openai: { file_name: 'openai.jsonl', formatting: 'openai', ranking: true },
      same: { file_name: 'same.json', ranking: true },
      empty: { file_name: 'empty.json', ranking: true },
      not_ranking: { file_name: 'alpaca.json' },
    }),
  );
});

after(() => fs.rmSync(scratch, { recursive: true, force: true }));

function config(extra: Record<string, unknown>): TrainConfig {
  return loadTrainConfig(null, {
    model_name_or_path: modelDir, stage: 'dpo', dataset_dir: path.join(scratch, 'data'), output_dir: path.join(scratch, 'out'), ...extra,
  }).config;
}

const decode = (ids: Int32Array) => tokenizer.decode(Array.from(ids));
const answerText = (ids: Int32Array, labels: Int32Array) => decode(ids.filter((_, i) => labels[i] !== IGNORE_INDEX));

describe('preference pairs in every LLaMA-Factory form', () => {
  it('alpaca rows: prompt (with history) then each answer; only the answer and its end-of-turn are labelled', () => {
    const { train, notes } = preparePreferenceData(config({ dataset: 'alpaca' }), tokenizer, template);
    assert.equal(train.length, 2);
    assert.deepEqual(notes, []);
    const second = train[1];
    assert.equal(answerText(second.chosen.inputIds, second.chosen.labels), 'Hello! 48 yuan a basket.<|im_end|>\n');
    assert.equal(answerText(second.rejected.inputIds, second.rejected.labels), '48.<|im_end|>\n');
    const full = decode(second.chosen.inputIds);
    assert.ok(full.includes('<|im_start|>user\nPrice?\nCrab dumplings<|im_end|>'), full);
    assert.ok(full.includes('<|im_start|>assistant\nHello!<|im_end|>'), 'history comes first');
    // The earlier assistant turn (history) is not trained.
    assert.ok(!answerText(second.chosen.inputIds, second.chosen.labels).includes('Hello!<|im_end|>\n48'));
  });

  it('the persona layout puts the instruction in the system prompt', () => {
    const [pair] = preparePreferenceData(config({ dataset: 'persona' }), tokenizer, template).train;
    assert.ok(decode(pair.chosen.inputIds).startsWith(`<|im_start|>system\n${SYSTEM}<|im_end|>\n<|im_start|>user\nParking?`));
  });

  it('sharegpt and OpenAI rows: messages ending with the user, chosen/rejected as messages', () => {
    const { train } = preparePreferenceData(config({ dataset: 'sharegpt,openai' }), tokenizer, template);
    assert.equal(train.length, 2);
    assert.equal(answerText(train[0].chosen.inputIds, train[0].chosen.labels), 'Yes, within three kilometres!<|im_end|>\n');
    assert.ok(decode(train[0].chosen.inputIds).startsWith(`<|im_start|>system\n${SYSTEM}`));
    assert.equal(answerText(train[1].rejected.inputIds, train[1].rejected.labels), 'Yes.<|im_end|>\n');
  });

  it('a file named directly with chosen/rejected keys is read as preference data', () => {
    const { train } = preparePreferenceData(config({ dataset: path.join(scratch, 'data', 'alpaca.json') }), tokenizer, template);
    assert.equal(train.length, 2);
  });

  it('a dataset without ranking: true is refused with the fix', () => {
    assert.throws(() => preparePreferenceData(config({ dataset: 'not_ranking' }), tokenizer, template), /not preference data; set "ranking": true/);
  });
});

describe('problem rows are reported', () => {
  it('identical chosen and rejected: the file and row, or dropped with a note under skip_invalid', () => {
    assert.throws(
      () => preparePreferenceData(config({ dataset: 'same' }), tokenizer, template),
      (e: Error) => /1 row is invalid/.test(e.message) && /same\.json: row 2: "chosen" and "rejected" are the same answer/.test(e.message),
    );
    const { train, notes } = preparePreferenceData(config({ dataset: 'same', skip_invalid: true }), tokenizer, template);
    assert.equal(train.length, 1);
    assert.ok(notes.some((n) => /1 pair\(s\) whose chosen and rejected answers are identical; first: .*same\.json: row 2/.test(n)), notes.join('\n'));
  });

  it('an empty answer names the row and the field', () => {
    assert.throws(() => preparePreferenceData(config({ dataset: 'empty' }), tokenizer, template), /empty\.json: row 1: "rejected" is empty/);
  });

  it('a pair whose answers vanish under cutoff_len is left out with a note', () => {
    const { train, notes } = preparePreferenceData(config({ dataset: 'alpaca,persona', cutoff_len: 30 }), tokenizer, template);
    assert.ok(train.length < 3);
    assert.ok(notes.some((n) => /left out after cutting to cutoff_len/.test(n)), notes.join('\n'));
  });
});

describe('pair batches', () => {
  it('hold the chosen answers first, then the rejected, right-padded and masked', () => {
    const { train } = preparePreferenceData(config({ dataset: 'alpaca' }), tokenizer, template);
    const [batch] = makePairBatches(train, 2, 7);
    assert.equal(batch.pairs, 2);
    assert.equal(batch.batch, 4);
    const row = (r: number) => batch.ids.subarray(r * batch.length, (r + 1) * batch.length);
    assert.deepEqual(Array.from(row(0).subarray(0, train[0].chosen.inputIds.length)), Array.from(train[0].chosen.inputIds));
    assert.deepEqual(Array.from(row(3).subarray(0, train[1].rejected.inputIds.length)), Array.from(train[1].rejected.inputIds));
    const shortest = train[0].rejected.inputIds.length;
    assert.equal(batch.ids[2 * batch.length + shortest], 7, 'padding uses the pad id');
    assert.equal(batch.keyMask[2 * batch.length + shortest], 0);
    assert.equal(batch.labels[2 * batch.length + shortest], IGNORE_INDEX);
  });
});

describe('stage keys in the config', () => {
  it('accepts rm, dpo and ppo with their defaults', () => {
    const c = config({ dataset: 'alpaca' });
    assert.equal(c.stage, 'dpo');
    assert.equal(c.pref_beta, 0.1);
    assert.equal(c.pref_loss, 'sigmoid');
    assert.equal(c.pref_ftx, 0);
    assert.equal(config({ dataset: 'alpaca', stage: 'rm' }).stage, 'rm');
  });

  it('rejects unknown losses and bad values with the key named', () => {
    assert.throws(() => config({ dataset: 'a', pref_loss: 'hinge' }), /pref_loss "hinge" is not supported; use one of sigmoid, ipo, orpo, simpo/);
    assert.throws(() => config({ dataset: 'a', pref_loss: 'dpo' }), /"pref_loss" must be one of sigmoid, ipo, orpo, simpo/);
    assert.throws(() => config({ dataset: 'a', pref_beta: 0 }), /"pref_beta" must be a number above 0/);
    assert.throws(() => config({ dataset: 'a', pref_ftx: -1 }), /"pref_ftx" must be a number/);
  });

  it('stage ppo needs exactly one reward source', () => {
    assert.throws(() => config({ dataset: 'a', stage: 'ppo' }), /stage ppo needs a reward: set either reward_model .* or reward_function .*, not neither/);
    assert.throws(
      () => config({ dataset: 'a', stage: 'ppo', reward_model: 'rm', reward_function: { contains: 'x' } }),
      /not both/,
    );
    assert.equal(config({ dataset: 'a', stage: 'ppo', reward_model: 'rm' }).reward_model, 'rm');
  });
});
