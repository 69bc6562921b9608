/**
 * `tunekit chat` as a process reading turns from stdin: the answers stream to stdout, each turn
 * sees the conversation so far, /reset starts over and /exit leaves.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';

import { generate } from '../src/infer/generate.js';
import { encodeChatPrompt, loadPipeline } from '../src/infer/pipeline.js';
import type { Pipeline } from '../src/infer/pipeline.js';
import { GREEDY } from '../src/infer/sampling.js';
import { initModel } from '../src/io/init-model.js';
import type { ChatMessage } from '../src/text/chat-template.js';
import { removeDir, tempDir } from './helpers/adapter-fixtures.js';

const MAIN = pathToFileURL(path.resolve('src/cli/main.ts')).href;

let root: string;
let modelDir: string;
let p: Pipeline;

before(() => {
  root = tempDir('cli-chat');
  modelDir = path.join(root, 'model');
  initModel({ preset: 'tiny-llama', out: modelDir, seed: 1 });
  p = loadPipeline(modelDir);
});

after(() => {
  if (root) removeDir(root);
});

function chat(argv: string[], input: string): { code: number | null; stdout: string; stderr: string } {
  const script = `const { main } = await import(${JSON.stringify(MAIN)}); process.exitCode = await main(${JSON.stringify(['chat', ...argv])});`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { input, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The answer the library gives to `messages`, with the chat command's per-turn seed. */
function answer(messages: ChatMessage[], seed: number): string {
  return generate(p.model, p.tokenizer, encodeChatPrompt(p, messages), {
    ...GREEDY,
    temperature: 0.9,
    maxNewTokens: 6,
    seed,
    stopTokenIds: p.stopTokenIds,
    stopStrings: [],
  }).text;
}

describe('tunekit chat', () => {
  it('answers each turn in context, /reset starts over, /exit leaves', () => {
    const r = chat(['--model', modelDir, '--max-new-tokens', '6', '--temperature', '0.9', '--seed', '3'], 'Hello\nHow are you?\n/reset\nHello\n/exit\nnever read\n');
    assert.equal(r.code, 0, r.stderr);
    // The seed of a turn is --seed plus the number of messages so far, this question included.
    const a1 = answer([{ role: 'user', content: 'Hello' }], 3 + 1);
    const a2 = answer([{ role: 'user', content: 'Hello' }, { role: 'assistant', content: a1 }, { role: 'user', content: 'How are you?' }], 3 + 3);
    // Without a TTY the prompt is readline's "> ".
    assert.equal(r.stdout, `> ${a1}\n> ${a2}\n> (conversation cleared)\n> ${a1}\n> `);
    // The second answer depends on the first turn: asked alone it would differ.
    assert.notEqual(a2, answer([{ role: 'user', content: 'How are you?' }], 3 + 3));
  });

  it('--system opens every conversation, and again after /reset', () => {
    const system = 'You are terse.';
    const r = chat(['--model', modelDir, '--max-new-tokens', '6', '--temperature', '0.9', '--system', system], 'Hi\n/reset\nHi\n');
    assert.equal(r.code, 0, r.stderr);
    const a = answer([{ role: 'system', content: system }, { role: 'user', content: 'Hi' }], 0 + 2);
    assert.equal(r.stdout, `> ${a}\n> (conversation cleared)\n> ${a}\n> `);
  });

  it('a bad sampling flag is refused before reading any input', () => {
    const r = chat(['--model', modelDir, '--top-p', '1.5'], 'Hi\n');
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, 'tunekit: error: chat: --top-p must be in (0, 1], got 1.5\n');
  });
});
