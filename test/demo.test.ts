/**
 * The demo end to end on the committed base model, shortened to one epoch: it answers before and
 * after, trains an adapter, merges it, and the merged model answers as the adapter does.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { BUILTIN_MODEL_DIR } from '../src/demo/base-model.js';
import { DEMO_QUESTIONS, runDemo, sparkline } from '../src/demo/run-demo.js';

test('the built-in base model is committed in Hugging Face format', () => {
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) {
    assert.ok(fs.existsSync(path.join(BUILTIN_MODEL_DIR, f)), `${f} is missing from ${BUILTIN_MODEL_DIR}`);
  }
  const config = JSON.parse(fs.readFileSync(path.join(BUILTIN_MODEL_DIR, 'config.json'), 'utf8'));
  assert.equal(config.model_type, 'qwen2');
  assert.ok(fs.statSync(path.join(BUILTIN_MODEL_DIR, 'model.safetensors')).size < 8 * 1024 * 1024, 'small enough to commit');
});

test('the demo answers, fine-tunes, answers again and merges', async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'tunekit-demo-'));
  try {
    const printed: string[] = [];
    const r = await runDemo({ out, epochs: 1, print: (l) => printed.push(l), log: () => {} });
    assert.equal(r.before.length, DEMO_QUESTIONS.length);
    assert.equal(r.after.length, DEMO_QUESTIONS.length);
    assert.equal(r.merged[0], r.after[0], 'the merged model answers exactly as base + adapter');
    assert.ok(fs.existsSync(path.join(out, 'adapter', 'adapter_model.safetensors')));
    assert.ok(fs.existsSync(path.join(out, 'merged', 'model.safetensors')));
    assert.ok(fs.existsSync(r.lossCurve));
    assert.ok(Number.isFinite(r.firstLoss) && Number.isFinite(r.lastLoss));
    assert.ok(printed.some((l) => l.includes('顾客')), 'the questions are printed');
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test('sparkline maps the range onto eight blocks', () => {
  assert.equal(sparkline([3, 2, 1]), '█▅▁');
  assert.equal(sparkline([]), '');
});
