/**
 * The command line end to end, through `main(argv)` as `tunekit` runs it: train from a YAML file
 * with `--key value` overrides, merge the adapter with `export`, and check that greedy `generate`
 * on the merged folder gives the same ids as the base model with `--adapter`. Bad data and bad
 * settings end with a non-zero exit and one message line that says where the problem is.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { main } from '../src/cli/main.js';
import { EXAMPLES_DATA, captureConsole, readTrainerLog, removeDir, shortRunSettings, tempDir, tinyModelDir } from './helpers/train-fixtures.js';

let root: string;
let model: string;

before(() => {
  root = tempDir('train-cli');
  model = tinyModelDir(root);
});
after(() => removeDir(root));

function writeConfig(name: string, settings: Record<string, unknown>): string {
  const file = path.join(root, name);
  fs.writeFileSync(file, `${Object.entries(settings).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join('\n')}\n`);
  return file;
}

async function cli(...argv: string[]) {
  const { value: code, stdout, stderr } = await captureConsole(() => main(argv));
  return { code, stdout, stderr };
}

/** A user-error exit: code 2, one `tunekit: error:` message, no stack trace. */
function assertUserError(r: { code: number; stderr: string }): string {
  assert.equal(r.code, 2, r.stderr);
  const errorLines = r.stderr.split('\n').filter((l) => l.startsWith('tunekit: error:'));
  assert.equal(errorLines.length, 1, r.stderr);
  assert.doesNotMatch(r.stderr, /\n\s+at .+:\d+:\d+/, 'no stack trace');
  return r.stderr.slice(r.stderr.indexOf('tunekit: error:'));
}

interface GenerateJson {
  text: string;
  finish_reason: string;
  completion_tokens: number;
  ids: number[];
}

describe('train → export → generate', () => {
  const out = () => path.join(root, 'run');
  const merged = () => path.join(root, 'merged');
  const prompt = '请告诉我你们的营业时间。';
  const greedy = ['--prompt', prompt, '--json', '--max-new-tokens', '12', '--temperature', '0'];

  it('trains from YAML with overrides; an ignored LLaMA-Factory key is a note, not an error', async () => {
    const yaml = writeConfig('sft.yaml', { ...shortRunSettings(model, out()), bf16: true, plot_loss: true, per_device_train_batch_size: 4 });
    const r = await cli('train', yaml, '--learning_rate', '2e-2', '--num_train_epochs', '10');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /note: bf16 is accepted and ignored/);
    assert.match(r.stderr, /note: plot_loss is accepted and ignored/);
    assert.match(r.stderr, /done: 20 steps/);
    const log = readTrainerLog(out());
    assert.equal(log.length, 20, 'the override --num_train_epochs 10 applied (8 examples / batch 4 × 10)');
    assert.equal(log[0].lr, 2e-2, 'the override --learning_rate 2e-2 applied');
    assert.ok((log[19].loss as number) < (log[0].loss as number) - 0.2, `loss ${log[0].loss} → ${log[19].loss}`);
    assert.ok(fs.existsSync(path.join(out(), 'adapter_model.safetensors')));
  });

  it('exports a merged Hugging Face folder', async () => {
    const r = await cli('export', '--model', model, '--adapter', out(), '--out', merged());
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /wrote /);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) assert.ok(fs.existsSync(path.join(merged(), f)), f);
    assert.ok(!fs.existsSync(path.join(merged(), 'adapter_config.json')));
  });

  it('greedy generate on the merged folder equals the base model with --adapter, and differs from the bare base', async () => {
    const run = async (...args: string[]): Promise<GenerateJson> => {
      const r = await cli('generate', ...args, ...greedy);
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.trim().split('\n');
      assert.equal(lines.length, 1, `--json prints one object: ${r.stdout}`);
      return JSON.parse(lines[0]) as GenerateJson;
    };
    const mergedOut = await run('--model', merged());
    const adapterOut = await run('--model', model, '--adapter', out());
    const baseOut = await run('--model', model);
    assert.equal(mergedOut.completion_tokens, 12);
    assert.deepEqual(mergedOut.ids, adapterOut.ids);
    assert.equal(mergedOut.text, adapterOut.text);
    // The adapter changed what the model says (so the equality above is about a trained adapter).
    assert.notDeepEqual(adapterOut.ids, baseOut.ids);
  });

  it('refuses to export over the base folder', async () => {
    const r = await cli('export', '--model', model, '--adapter', out(), '--out', model);
    assert.match(assertUserError(r), /--out must differ from --model/);
  });
});

describe('preview', () => {
  it('shows the first example rendered, with the answer marked as trained and the question not', async () => {
    const yaml = writeConfig('preview.yaml', { ...shortRunSettings(model, path.join(root, 'unused')), cutoff_len: 256 });
    const r = await cli('preview', yaml, '--n', '1');
    assert.equal(r.code, 0, r.stderr);
    const rows = JSON.parse(fs.readFileSync(path.join(EXAMPLES_DATA, 'restaurant_task.json'), 'utf8')) as Array<{ instruction: string; output: string }>;
    const examples = r.stdout.split('\n').filter((l) => l.startsWith('=== example'));
    assert.equal(examples.length, 1);
    const marked = r.stdout.slice(r.stdout.indexOf('--- trained tokens'));
    assert.ok(marked.includes(`⟦${rows[0].output}`), marked);
    assert.ok(marked.includes(rows[0].instruction) && !marked.includes(`⟦${rows[0].instruction}`), 'the question is masked');
  });
});

describe('mistakes stop training with one clear line', () => {
  let dataDir: string;
  before(() => {
    dataDir = path.join(root, 'bad-data');
    fs.mkdirSync(dataDir);
    fs.writeFileSync(path.join(dataDir, 'dataset_info.json'), JSON.stringify({ shop: { file_name: 'shop.json' } }));
    const rows = [
      { instruction: '营业时间？', input: '', output: '每天10:00到21:30。' },
      { instruction: '地址在哪里？', input: '', output: '福州路88号。' },
      { instruction: '可以带宠物吗？', input: '' },
      { instruction: '有素食吗？', input: '', output: '有素三鲜小笼包。' },
    ];
    fs.writeFileSync(path.join(dataDir, 'shop.json'), JSON.stringify(rows, null, 2));
  });
  const settings = (out: string) => ({ ...shortRunSettings(model, out), dataset: 'shop', dataset_dir: dataDir, max_steps: 1 });

  it('a row without "output": non-zero exit naming the file, the row and the field; nothing trained', async () => {
    const out = path.join(root, 'bad-run');
    const r = await cli('train', writeConfig('bad.yaml', settings(out)));
    const message = assertUserError(r);
    assert.match(message, /shop\.json: row 3: "output" is missing/);
    assert.match(message, /1 row is invalid \(of 4\)/);
    assert.match(message, /skip_invalid/);
    assert.ok(!fs.existsSync(path.join(out, 'trainer_log.jsonl')), 'training did not start');
  });

  it('with --skip_invalid true it drops the row, says how many, and trains', async () => {
    const out = path.join(root, 'skip-run');
    const r = await cli('train', writeConfig('skip.yaml', settings(out)), '--skip_invalid', 'true');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /skipped 1 invalid row\(s\) of 4/);
    assert.match(r.stderr, /shop\.json: row 3/);
    assert.match(r.stderr, /data: 3 training example\(s\)/);
    assert.equal(readTrainerLog(out).length, 1);
    // The flag form the error message suggests works too.
    const again = await cli('train', writeConfig('skip2.yaml', settings(path.join(root, 'skip-run-2'))), '--skip-invalid');
    assert.equal(again.code, 0, again.stderr);
  });

  it('a typo in a key suggests the closest one', async () => {
    const r = await cli('train', writeConfig('typo.yaml', settings(path.join(root, 'typo-run'))), '--learnig_rate', '1e-3');
    assert.match(assertUserError(r), /unknown key "learnig_rate"; did you mean "learning_rate"\?/);
  });

  it('a bad value names the key', async () => {
    const r = await cli('train', writeConfig('bad-value.yaml', settings(path.join(root, 'bad-value-run'))), '--lr_scheduler_type', 'foo');
    assert.match(assertUserError(r), /"lr_scheduler_type" must be one of .*got "foo"/);
  });

  it('a NaN loss ends the run with exit 2 and the step in the message', async () => {
    const out = path.join(root, 'nan-run');
    const yaml = writeConfig('nan.yaml', { ...shortRunSettings(model, out), finetuning_type: 'full', learning_rate: 1e20, lr_scheduler_type: 'constant', save_steps: 1 });
    const message = assertUserError(await cli('train', yaml));
    assert.match(message, /loss became NaN at step 2/);
    assert.ok(message.includes(path.join(out, 'checkpoint-1')));
  });
});
