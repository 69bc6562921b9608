/**
 * Training configs under LLaMA-Factory's keys: YAML files plus `--key value` overrides (read as
 * YAML scalars), defaults, a note for a LLaMA-Factory key with no meaning here, and a one-line
 * error naming the key for a typo (with the closest key) or a bad value.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { UserError } from '../src/errors.js';
import { IGNORED_KEYS, TRAIN_DEFAULTS, loadTrainConfig, parseOverrides } from '../src/train/config.js';
import { removeDir, tempDir } from './helpers/train-fixtures.js';

const REQUIRED = { model_name_or_path: 'models/tiny', dataset: 'restaurant_task', output_dir: 'out/run' };

let root: string;
before(() => {
  root = tempDir('train-config');
});
after(() => removeDir(root));

function writeYaml(name: string, text: string): string {
  const file = path.join(root, name);
  fs.writeFileSync(file, text);
  return file;
}

/** Asserts that loading fails with a one-line UserError matching every pattern. */
function rejects(settings: Record<string, unknown>, ...patterns: RegExp[]): string {
  let error: unknown;
  try {
    loadTrainConfig(null, settings);
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof UserError, `expected a UserError for ${JSON.stringify(settings)}, got ${String(error)}`);
  assert.ok(!error.message.includes('\n'), `one line: ${error.message}`);
  for (const p of patterns) assert.match(error.message, p);
  return error.message;
}

describe('loadTrainConfig', () => {
  it('reads a LLaMA-Factory YAML file and fills the defaults', () => {
    const file = writeYaml(
      'sft.yaml',
      [
        '### model',
        'model_name_or_path: models/tiny',
        '### method',
        'stage: sft',
        'finetuning_type: lora',
        'lora_target: all',
        'lora_rank: 4',
        '### dataset',
        'dataset: restaurant_persona,restaurant_task',
        'template: qwen',
        'cutoff_len: 512',
        '### output',
        'output_dir: saves/run',
        '### train',
        'learning_rate: 1.0e-4',
        'num_train_epochs: 3.0',
        'lr_scheduler_type: cosine',
        'warmup_ratio: 0.1',
      ].join('\n'),
    );
    const { config, notes } = loadTrainConfig(file, {});
    assert.deepEqual(notes, []);
    assert.equal(config.model_name_or_path, 'models/tiny');
    assert.equal(config.lora_target, 'all');
    assert.equal(config.lora_rank, 4);
    assert.equal(config.dataset, 'restaurant_persona,restaurant_task');
    assert.equal(config.template, 'qwen');
    assert.equal(config.learning_rate, 1e-4);
    assert.equal(config.num_train_epochs, 3);
    assert.equal(config.lr_scheduler_type, 'cosine');
    // Defaults where the file is silent.
    assert.equal(config.per_device_train_batch_size, TRAIN_DEFAULTS.per_device_train_batch_size);
    assert.equal(config.gradient_accumulation_steps, 1);
    assert.equal(config.lora_dropout, 0);
    assert.equal(config.lora_alpha, null, 'alpha defaults to 2·r at training time');
    assert.equal(config.max_steps, -1);
    assert.equal(config.resume_from_checkpoint, null);
  });

  it('lets command-line overrides win over the file', () => {
    const file = writeYaml('base.yaml', 'model_name_or_path: m\ndataset: d\noutput_dir: o\nlearning_rate: 1.0e-4\nseed: 1\n');
    const { file: parsedFile, overrides } = parseOverrides([file, '--learning_rate', '3e-4', '--seed=7']);
    assert.equal(parsedFile, file);
    const { config } = loadTrainConfig(parsedFile, overrides);
    assert.equal(config.learning_rate, 3e-4);
    assert.equal(config.seed, 7);
  });

  it('suggests the closest key for a typo', () => {
    rejects({ ...REQUIRED, learnig_rate: 1e-4 }, /unknown key "learnig_rate"/, /did you mean "learning_rate"\?/);
    rejects({ ...REQUIRED, lora_rnak: 8 }, /did you mean "lora_rank"\?/);
    rejects({ ...REQUIRED, num_train_epoch: 3 }, /did you mean "num_train_epochs"\?/);
    const far = rejects({ ...REQUIRED, completely_unrelated_setting: 1 }, /unknown key "completely_unrelated_setting"/);
    assert.doesNotMatch(far, /did you mean/, 'no far-fetched suggestion');
  });

  it('names the YAML file in an error from the file', () => {
    const file = writeYaml('typo.yaml', 'model_name_or_path: m\ndataset: d\noutput_dir: o\nlearnig_rate: 1.0e-4\n');
    assert.throws(() => loadTrainConfig(file, {}), (e: Error) => e instanceof UserError && e.message.startsWith(`${file}: unknown key "learnig_rate"`));
    const broken = writeYaml('broken.yaml', 'model_name_or_path: [m\n');
    assert.throws(() => loadTrainConfig(broken, {}), (e: Error) => e instanceof UserError && e.message.startsWith(`${broken}: not valid YAML`) && !e.message.includes('\n'));
    assert.throws(() => loadTrainConfig(path.join(root, 'absent.yaml'), {}), (e: Error) => e instanceof UserError && /config file not found/.test(e.message));
    const list = writeYaml('list.yaml', '- a\n- b\n');
    assert.throws(() => loadTrainConfig(list, {}), (e: Error) => e instanceof UserError && /expected a mapping/.test(e.message));
  });

  it('accepts an ignored LLaMA-Factory key with a one-line note', () => {
    const { config, notes } = loadTrainConfig(null, { ...REQUIRED, bf16: true, ddp_timeout: 180000000, plot_loss: true });
    assert.equal(notes.length, 3);
    assert.ok(notes.every((n) => !n.includes('\n')));
    assert.match(notes.find((n) => n.includes('bf16')) ?? '', /bf16 is accepted and ignored: .*float32/);
    assert.ok(notes.some((n) => n.includes('ddp_timeout')));
    assert.equal((config as unknown as Record<string, unknown>).bf16, undefined, 'an ignored key does not reach the config');
    for (const key of ['bf16', 'fp16', 'ddp_timeout', 'plot_loss', 'do_train', 'report_to']) assert.ok(key in IGNORED_KEYS, key);
  });

  it('rejects bad values with a one-line error naming the key, the expectation and the value', () => {
    rejects({ ...REQUIRED, learning_rate: -1e-4 }, /"learning_rate" must be a number/, /-0\.0001/);
    rejects({ ...REQUIRED, lr_scheduler_type: 'foo' }, /"lr_scheduler_type" must be one of cosine, linear, constant/, /"foo"/);
    rejects({ ...REQUIRED, finetuning_type: 'qlora' }, /"finetuning_type" must be one of lora, full/);
    rejects({ ...REQUIRED, per_device_train_batch_size: 0 }, /"per_device_train_batch_size" must be an integer ≥ 1, got 0/);
    rejects({ ...REQUIRED, gradient_accumulation_steps: 1.5 }, /"gradient_accumulation_steps" must be an integer/);
    rejects({ ...REQUIRED, lora_rank: 'eight' }, /"lora_rank" must be an integer ≥ 1, got "eight"/);
    rejects({ ...REQUIRED, lora_dropout: 1 }, /"lora_dropout" must be a number in \[0, 0\.999\]/);
    rejects({ ...REQUIRED, warmup_ratio: 2 }, /"warmup_ratio"/);
    rejects({ ...REQUIRED, learning_rate: 'fast' }, /"learning_rate" must be a number/, /"fast"/);
    rejects({ ...REQUIRED, cutoff_len: 1 }, /"cutoff_len"/);
    rejects({ ...REQUIRED, packing: 'yes' }, /"packing" must be true or false/);
    rejects({ ...REQUIRED, max_steps: 0 }, /"max_steps"/);
    rejects({ ...REQUIRED, stage: 'kto' }, /stage "kto" is not available yet/);
    rejects({ ...REQUIRED, stage: 'xyz' }, /"stage" must be one of pt, sft/);
    rejects({ ...REQUIRED, finetuning_type: 'freeze' }, /freeze.*not supported/);
    rejects({ dataset: 'd', output_dir: 'o' }, /"model_name_or_path" is required/);
    rejects({ ...REQUIRED, output_dir: '' }, /"output_dir" is required/);
  });

  it('reads a learning rate written as a string in scientific notation (PyYAML users write 1e-4)', () => {
    assert.equal(loadTrainConfig(null, { ...REQUIRED, learning_rate: '1e-4' }).config.learning_rate, 1e-4);
  });
});

describe('parseOverrides', () => {
  it('reads --key value pairs as YAML scalars', () => {
    const { file, overrides } = parseOverrides([
      'cfg.yaml',
      '--learning_rate', '1e-4',
      '--num_train_epochs', '2.5',
      '--lora_rank', '16',
      '--lora_target', 'q_proj,v_proj',
      '--packing', 'true',
      '--skip_invalid', 'false',
      '--seed=7',
      '--output_dir', 'saves/run-2',
      '--dataset', '[a, b]',
      '--template', 'null',
    ]);
    assert.equal(file, 'cfg.yaml');
    assert.deepEqual(overrides, {
      learning_rate: 1e-4,
      num_train_epochs: 2.5,
      lora_rank: 16,
      lora_target: 'q_proj,v_proj',
      packing: true,
      skip_invalid: false,
      seed: 7,
      output_dir: 'saves/run-2',
      dataset: ['a', 'b'],
      template: null,
    });
  });

  it('treats a flag without a value as true and turns dashes into underscores', () => {
    const { file, overrides } = parseOverrides(['--skip-invalid', '--train-on-prompt', '--cutoff-len', '64']);
    assert.equal(file, null);
    assert.deepEqual(overrides, { skip_invalid: true, train_on_prompt: true, cutoff_len: 64 });
  });

  it('keeps a value YAML cannot read, or reads as a mapping, as the text typed', () => {
    const { overrides } = parseOverrides(['--output_dir', '[unclosed', '--dataset_dir', '*data', '--template', 'a: b', '--model_name_or_path', '@org/model']);
    assert.deepEqual(overrides, { output_dir: '[unclosed', dataset_dir: '*data', template: 'a: b', model_name_or_path: '@org/model' });
  });

  it('refuses a second config file', () => {
    assert.throws(() => parseOverrides(['a.yaml', 'b.yaml']), (e: Error) => e instanceof UserError && /unexpected argument "b\.yaml"/.test(e.message));
  });

  it('gives overrides that pass validation with their intended types', () => {
    const { overrides } = parseOverrides(['--model_name_or_path', 'm', '--dataset', 'd', '--output_dir', 'o', '--learning_rate', '5e-5', '--max_steps', '10', '--val_size', '0.1']);
    const { config } = loadTrainConfig(null, overrides);
    assert.equal(config.learning_rate, 5e-5);
    assert.equal(config.max_steps, 10);
    assert.equal(config.val_size, 0.1);
  });
});
