/**
 * Stopping and continuing: a run resumed from checkpoint-k repeats the uninterrupted run's losses
 * and ends with the same weights (optimizer moments, schedule position, data order and dropout
 * masks all restored); Ctrl-C saves a checkpoint and returns; a NaN loss stops with a message that
 * names the step and the last checkpoint, which stays whole.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';

import { UserError } from '../src/errors.js';
import { loadModel } from '../src/io/model-folder.js';
import { readTrainerState } from '../src/train/checkpoint.js';
import {
  REPO_ROOT,
  losses,
  maxAbsDiff,
  readTensors,
  readTrainerLog,
  removeDir,
  runQuiet,
  shortRunSettings,
  tempDir,
  tinyModelDir,
  withoutTimes,
} from './helpers/train-fixtures.js';

let root: string;
let model: string;

before(() => {
  root = tempDir('train-resume');
  model = tinyModelDir(root);
});
after(() => removeDir(root));

/** History entries without the clock-dependent throughput. */
function stableHistory(h: Array<Record<string, number>>): Array<Record<string, number>> {
  return h.map((e) => withoutTimes(e) as Record<string, number>);
}

function assertSameTensors(a: string, b: string): void {
  const x = readTensors(a);
  const y = readTensors(b);
  assert.equal(maxAbsDiff(x, y), 0, `${a} and ${b} differ`);
}

describe('resume_from_checkpoint', () => {
  it('LoRA with dropout 0.1 and accumulation 2: the resumed run repeats the losses and ends with identical weights', async () => {
    // 8 examples, batch 2 × accumulation 2 = 2 steps per epoch, 3 epochs = 6 steps; checkpoint-3
    // falls in the middle of epoch 2, and the cosine schedule with warm-up is at neither end.
    const settings = (out: string) => ({
      ...shortRunSettings(model, out),
      gradient_accumulation_steps: 2,
      lora_dropout: 0.1,
      num_train_epochs: 3,
      save_steps: 3,
      lr_scheduler_type: 'cosine',
      warmup_ratio: 0.2,
      weight_decay: 0.01,
    });
    const a = path.join(root, 'lora-A');
    const A = await runQuiet(settings(a));
    assert.equal(A.result.globalStep, 6);
    assert.ok(fs.existsSync(path.join(a, 'checkpoint-3', 'optimizer.safetensors')));
    assert.ok(fs.existsSync(path.join(a, 'checkpoint-3', 'adapter_model.safetensors')));
    assert.equal(readTrainerState(path.join(a, 'checkpoint-3')).global_step, 3);

    // B: a copy of A's whole output folder (its log runs to step 6), resumed from its checkpoint-3.
    const b = path.join(root, 'lora-B');
    fs.cpSync(a, b, { recursive: true });
    fs.rmSync(path.join(b, 'adapter_model.safetensors'));
    const B = await runQuiet({ ...settings(b), resume_from_checkpoint: path.join(b, 'checkpoint-3') });
    assert.ok(B.lines.some((l) => l.includes('resuming from') && l.includes('at step 3')));
    assert.equal(B.result.globalStep, 6);
    assert.deepEqual(stableHistory(B.result.history), stableHistory(A.result.history));
    assert.deepEqual(losses(B.result).slice(3), losses(A.result).slice(3));
    // The log reads as one run: steps 1…6 once each, the same entries as A's.
    const logA = readTrainerLog(a).map(withoutTimes);
    const logB = readTrainerLog(b).map(withoutTimes);
    assert.deepEqual(logB.map((e) => e.current_steps), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(logB, logA);
    // Exactly the same adapter, not just the same rounded losses.
    assertSameTensors(path.join(a, 'adapter_model.safetensors'), path.join(b, 'adapter_model.safetensors'));

    // Dropout really acts (so repeating its masks is part of what was tested): without it the
    // losses after step 1 (where B is still zero and dropout cannot show) and the weights differ.
    const c = path.join(root, 'lora-nodrop');
    const noDropout = await runQuiet({ ...settings(c), lora_dropout: 0 });
    assert.equal(losses(noDropout.result)[0], losses(A.result)[0]);
    assert.notDeepEqual(losses(noDropout.result).slice(1), losses(A.result).slice(1));
    assert.ok(maxAbsDiff(readTensors(path.join(c, 'adapter_model.safetensors')), readTensors(path.join(a, 'adapter_model.safetensors'))) > 1e-4);
  });

  it('full fine-tuning with resume_from_checkpoint: true continues from the newest checkpoint in output_dir', async () => {
    const settings = (out: string) => ({
      ...shortRunSettings(model, out),
      finetuning_type: 'full',
      learning_rate: 3e-3,
      num_train_epochs: 2,
      save_steps: 5,
      weight_decay: 0.1,
      warmup_steps: 2,
    });
    const a = path.join(root, 'full-A');
    const A = await runQuiet(settings(a));
    assert.equal(A.result.globalStep, 8);
    const b = path.join(root, 'full-B');
    fs.mkdirSync(b);
    fs.cpSync(path.join(a, 'checkpoint-5'), path.join(b, 'checkpoint-5'), { recursive: true });
    const B = await runQuiet({ ...settings(b), resume_from_checkpoint: true });
    assert.deepEqual(losses(B.result), losses(A.result));
    assert.deepEqual(readTrainerLog(b).map((e) => e.current_steps), [6, 7, 8], 'a fresh folder logs the steps it ran');
    assertSameTensors(path.join(a, 'model.safetensors'), path.join(b, 'model.safetensors'));
  });

  it('names what is wrong when there is nothing to resume from', async () => {
    const out = path.join(root, 'empty');
    await assert.rejects(runQuiet({ ...shortRunSettings(model, out), resume_from_checkpoint: true }), (e: Error) => e instanceof UserError && /no checkpoint-N folder/.test(e.message));
    await assert.rejects(
      () => runQuiet({ ...shortRunSettings(model, out), resume_from_checkpoint: path.join(root, 'nowhere') }),
      (e: Error) => e instanceof UserError && /is not a checkpoint/.test(e.message),
    );
  });
});

describe('SIGINT', () => {
  it('stops after the step in progress, saves checkpoint-2, and resuming finishes with the uninterrupted losses', async () => {
    const settings = (out: string) => ({ ...shortRunSettings(model, out), lora_dropout: 0.1, num_train_epochs: 2, save_steps: 100 });
    const listenersBefore = process.listenerCount('SIGINT');
    const out = path.join(root, 'sigint');
    const stopped = await runQuiet(settings(out), (line) => {
      if (line.startsWith('step 2/')) process.emit('SIGINT');
    });
    assert.equal(stopped.result.stoppedEarly, true);
    assert.equal(stopped.result.globalStep, 2);
    assert.equal(process.listenerCount('SIGINT'), listenersBefore, 'the trainer removes its handler');
    assert.ok(stopped.lines.some((l) => l.startsWith('interrupted: saved') && l.includes('checkpoint-2')));
    const ckpt = path.join(out, 'checkpoint-2');
    assert.equal(readTrainerState(ckpt).global_step, 2);
    assert.ok(fs.existsSync(path.join(ckpt, 'adapter_model.safetensors')));
    assert.ok(!fs.existsSync(path.join(out, 'adapter_model.safetensors')), 'no final adapter for an interrupted run');
    assert.deepEqual(fs.readdirSync(out).filter((n) => n.includes('.tmp-') || n.includes('.old-')), [], 'no temporary folders left');

    const resumed = await runQuiet({ ...settings(out), resume_from_checkpoint: true });
    const straight = await runQuiet(settings(path.join(root, 'sigint-straight')));
    assert.equal(resumed.result.stoppedEarly, false);
    assert.deepEqual(losses(resumed.result), losses(straight.result));
    assert.equal(losses(straight.result).length, 8);
    assert.deepEqual(readTrainerLog(out).map(withoutTimes), readTrainerLog(path.join(root, 'sigint-straight')).map(withoutTimes));
    assertSameTensors(path.join(out, 'adapter_model.safetensors'), path.join(root, 'sigint-straight', 'adapter_model.safetensors'));
  });

  it(
    'a real SIGINT sent to a `tunekit train` process saves a checkpoint and exits 130',
    async () => {
      const out = path.join(root, 'real-sigint');
      const yaml = path.join(root, 'real-sigint.yaml');
      const s = { ...shortRunSettings(model, out), finetuning_type: 'lora', lora_target: 'q_proj,v_proj', num_train_epochs: 50, logging_steps: 10 };
      fs.writeFileSync(yaml, Object.entries(s).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join('\n'));
      const mainUrl = pathToFileURL(path.join(REPO_ROOT, 'src', 'cli', 'main.ts')).href;
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', '-e', `import(${JSON.stringify(mainUrl)}).then((m) => m.main(['train', ${JSON.stringify(yaml)}])).then((c) => { process.exitCode = c; })`],
        { cwd: REPO_ROOT, stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let stderr = '';
      let sent = false;
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (chunk: string) => {
        stderr += chunk;
        if (!sent && /step \d+\/\d+/.test(stderr)) {
          sent = true;
          child.kill('SIGINT');
        }
      });
      const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
      clearTimeout(killer);
      assert.ok(sent, `training never logged a step:\n${stderr}`);
      assert.equal(code, 130, `exit code ${code}; stderr:\n${stderr.slice(-2000)}`);
      const ckpts = fs.readdirSync(out).filter((n) => /^checkpoint-\d+$/.test(n));
      assert.equal(ckpts.length, 1);
      assert.ok(readTrainerState(path.join(out, ckpts[0])).global_step < 200);
    },
  );
});

describe('a NaN loss', () => {
  it('stops with a UserError naming the step and the last checkpoint, which stays whole and loadable', async () => {
    // lr 1e6 only inflates the loss (RMSNorm keeps it finite, ~1e13); 1e20 overflows float32 in
    // the second forward pass, whose loss is NaN.
    const out = path.join(root, 'nan');
    const listenersBefore = process.listenerCount('SIGINT');
    let error: unknown;
    try {
      await runQuiet({ ...shortRunSettings(model, out), finetuning_type: 'full', learning_rate: 1e20, lr_scheduler_type: 'constant', save_steps: 1, num_train_epochs: 2 });
    } catch (e) {
      error = e;
    }
    assert.ok(error instanceof UserError, `expected a UserError, got ${String(error)}`);
    const ckpt = path.join(out, 'checkpoint-1');
    assert.match(error.message, /loss became (NaN|-?Infinity) at step 2/);
    assert.ok(error.message.includes(ckpt), error.message);
    assert.ok(!error.message.includes('\n'), 'one line');
    assert.equal(process.listenerCount('SIGINT'), listenersBefore, 'the trainer removes its handler on error too');

    assert.deepEqual(fs.readdirSync(out).filter((n) => n.startsWith('checkpoint-')), ['checkpoint-1'], 'no checkpoint after the bad step');
    assert.deepEqual(fs.readdirSync(out).filter((n) => n.includes('.tmp-') || n.includes('.old-')), []);
    assert.equal(readTrainerState(ckpt).global_step, 1);
    assert.ok(fs.existsSync(path.join(ckpt, 'optimizer.safetensors')));
    const loaded = loadModel(ckpt);
    assert.ok([...loaded.namedParameters()].length > 0);
    assert.ok(!fs.existsSync(path.join(out, 'model.safetensors')), 'no final model for a failed run');
    assert.deepEqual(readTrainerLog(out).map((e) => e.current_steps), [1], 'the NaN step is not logged');
  });
});
