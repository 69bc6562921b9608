/**
 * The CLI through `main(argv)`: env, init-model, generate and logprobs, and how it answers a
 * mistyped command, flag or value (exit 2, one line, a suggestion where one is near).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { generate } from '../src/infer/generate.js';
import { sequenceLogprob } from '../src/infer/logprobs.js';
import { encodeChatPrompt, loadPipeline } from '../src/infer/pipeline.js';
import type { Pipeline } from '../src/infer/pipeline.js';
import { GREEDY } from '../src/infer/sampling.js';
import { PRESET_NAMES } from '../src/models/presets.js';
import { removeDir, tempDir } from './helpers/adapter-fixtures.js';
import { cli, type CliRun } from './helpers/cli-run.js';



/** A user's mistake: exit 2, nothing on stdout, one line on stderr, no stack trace. */
function assertOneLineError(r: CliRun, pattern: RegExp): void {
  assert.equal(r.code, 2, `exit code; stderr: ${r.stderr}`);
  assert.equal(r.stdout, '');
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${r.stderr}`);
  assert.match(lines[0], /^tunekit: error: /);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
}

let root: string;
let modelDir: string;
let pipeline: Pipeline;

before(async () => {
  root = tempDir('cli-commands');
  modelDir = path.join(root, 'model');
  const r = await cli('init-model', '--preset', 'tiny-llama', '--out', modelDir, '--seed', '1');
  assert.equal(r.code, 0, r.stderr);
  pipeline = loadPipeline(modelDir);
});

after(() => {
  if (root) removeDir(root);
});

describe('tunekit env', () => {
  it('--json prints one object with the backend, the BLAS library and threads, Node and the cores', async () => {
    const r = await cli('env', '--json');
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trimEnd().split('\n').length, 1);
    const facts = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.deepEqual(Object.keys(facts).sort(), ['allocator', 'backend', 'blas_config', 'blas_library', 'blas_spin', 'blas_threads', 'cores', 'helper_thread', 'memory_gb', 'node', 'platform', 'simd']);
    assert.ok(facts.backend === 'js' || facts.backend === 'blas', `backend ${facts.backend}`);
    if (facts.backend === 'blas') {
      assert.equal(typeof facts.blas_library, 'string');
      assert.ok(Number.isInteger(facts.blas_threads) && (facts.blas_threads as number) >= 1, `threads ${facts.blas_threads}`);
    } else {
      assert.equal(facts.blas_library, null);
      assert.equal(facts.blas_threads, null);
    }
    assert.equal(facts.node, process.version);
    assert.equal(facts.cores, os.availableParallelism());
    assert.equal(facts.platform, `${process.platform}-${process.arch}`);
    assert.ok(typeof facts.memory_gb === 'number' && facts.memory_gb > 0);
  });

  it('prints the same facts as text, one per line', async () => {
    const facts = JSON.parse((await cli('env', '--json')).stdout) as Record<string, unknown>;
    const r = await cli('env');
    assert.equal(r.code, 0);
    for (const key of ['backend', 'blas_library', 'blas_threads', 'node', 'cores']) {
      const line = r.stdout.split('\n').find((l) => l.startsWith(`${key} `));
      assert.ok(line, `no ${key} line in:\n${r.stdout}`);
      assert.equal(line.slice(key.length).trim(), String(facts[key] ?? '-'));
    }
  });

  it('refuses an unknown flag', async () => {
    assertOneLineError(await cli('env', '--jsn'), /unknown option --jsn; did you mean --json\?/);
  });
});

describe('tunekit init-model', () => {
  const files = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json'];

  it('writes a Hugging Face folder; the same seed gives identical weights, another seed different ones', async () => {
    const dirs = ['a', 'b', 'c'].map((n) => path.join(root, `init-${n}`));
    const seeds = ['3', '3', '4'];
    for (let i = 0; i < 3; i++) {
      const r = await cli('init-model', '--preset', 'tiny', '--out', dirs[i], '--seed', seeds[i]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^wrote ${dirs[i].replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: qwen2, [\\d.]+M parameters\\n$`));
    }
    for (const f of files) assert.ok(fs.existsSync(path.join(dirs[0], f)), `${f} missing`);
    const config = JSON.parse(fs.readFileSync(path.join(dirs[0], 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(config.model_type, 'qwen2');
    assert.equal(config.hidden_size, 64);
    const weights = dirs.map((d) => fs.readFileSync(path.join(d, 'model.safetensors')));
    assert.ok(weights[0].equals(weights[1]), 'seed 3 twice gave different weights');
    assert.equal(weights[0].length, weights[2].length);
    assert.ok(!weights[0].equals(weights[2]), 'seeds 3 and 4 gave the same weights');
    for (const f of files.filter((n) => n !== 'model.safetensors')) {
      assert.equal(fs.readFileSync(path.join(dirs[0], f), 'utf8'), fs.readFileSync(path.join(dirs[2], f), 'utf8'), `${f} depends on the seed`);
    }
  });

  it('an unknown preset: exit 2 and one line listing the presets', async () => {
    const out = path.join(root, 'init-nope');
    const r = await cli('init-model', '--preset', 'nope', '--out', out);
    assertOneLineError(r, /unknown preset "nope"/);
    for (const name of PRESET_NAMES) assert.ok(r.stderr.includes(name), `${name} not listed: ${r.stderr}`);
  });

  it('a bad --dtype, --seed or a missing --out: exit 2, one line', async () => {
    const out = path.join(root, 'init-bad');
    assertOneLineError(await cli('init-model', '--preset', 'tiny', '--out', out, '--dtype', 'f8'), /--dtype must be f32, bf16 or f16/);
    assertOneLineError(await cli('init-model', '--preset', 'tiny', '--out', out, '--seed', 'x'), /--seed must be an integer/);
    assertOneLineError(await cli('init-model', '--preset', 'tiny'), /--out is required/);
  });
});

describe('tunekit generate', () => {
  const chatIds = (prompt: string, system?: string): number[] =>
    encodeChatPrompt(pipeline, system ? [{ role: 'system', content: system }, { role: 'user', content: prompt }] : [{ role: 'user', content: prompt }]);

  it('--json prints one JSON object with text, ids and finish_reason, equal to the library\'s generate', async () => {
    const r = await cli('generate', '--model', modelDir, '--prompt', 'Hello there', '--max-new-tokens', '12', '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trimEnd().split('\n').length, 1, r.stdout);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.deepEqual(Object.keys(out).sort(), ['completion_tokens', 'finish_reason', 'ids', 'prompt_tokens', 'text']);
    const ids = chatIds('Hello there');
    // generation_config.json says do_sample: false, so the default is greedy.
    const want = generate(pipeline.model, pipeline.tokenizer, ids, { ...GREEDY, maxNewTokens: 12, seed: 0, stopTokenIds: pipeline.stopTokenIds, stopStrings: [] });
    assert.deepEqual(out.ids, want.ids);
    assert.equal(out.text, want.text);
    assert.equal(out.finish_reason, want.finishReason);
    assert.equal(out.prompt_tokens, ids.length);
    assert.equal(out.completion_tokens, want.ids.length);
  });

  it('--system puts a system turn before the prompt', async () => {
    const r = await cli('generate', '--model', modelDir, '--prompt', 'Hi', '--system', 'Be brief.', '--max-new-tokens', '3', '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { prompt_tokens: number }).prompt_tokens, chatIds('Hi', 'Be brief.').length);
  });

  it('streams the text to stdout and a one-line summary to stderr', async () => {
    const json = JSON.parse((await cli('generate', '--model', modelDir, '--prompt', 'Hello there', '--max-new-tokens', '12', '--json')).stdout) as { text: string; finish_reason: string };
    const r = await cli('generate', '--model', modelDir, '--prompt', 'Hello there', '--max-new-tokens', '12');
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `${json.text}\n`);
    assert.match(r.stderr.trimEnd(), new RegExp(`^\\[\\d+ prompt tokens, \\d+ new, [\\d.]+ tokens/s, ${json.finish_reason}\\]$`));
  });

  it('--temperature with --seed repeats; another seed differs; --stop cuts', async () => {
    const run = async (...extra: string[]) => {
      const r = await cli('generate', '--model', modelDir, '--prompt', 'Tell me', '--max-new-tokens', '16', '--json', ...extra);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout) as { text: string; ids: number[]; finish_reason: string };
    };
    const a = await run('--temperature', '0.8', '--seed', '5');
    const b = await run('--temperature', '0.8', '--seed', '5');
    const c = await run('--temperature', '0.8', '--seed', '6');
    assert.deepEqual(a, b);
    assert.notDeepEqual(a.ids, c.ids);
    const stop = /[a-z]{2,3}/.exec(a.text.slice(4))?.[0];
    assert.ok(stop, `no plain text in ${JSON.stringify(a.text)}`);
    const cut = await run('--temperature', '0.8', '--seed', '5', '--stop', stop);
    assert.equal(cut.text, a.text.slice(0, a.text.indexOf(stop)));
    assert.equal(cut.finish_reason, 'stop');
  });

  it('bad values: exit 2 and one line naming the flag', async () => {
    const base = ['generate', '--model', modelDir, '--prompt', 'x'];
    assertOneLineError(await cli(...base, '--max-new-tokens', '0'), /--max-new-tokens must be an integer ≥ 1, got "0"/);
    assertOneLineError(await cli(...base, '--max-new-tokens', '2.5'), /--max-new-tokens must be an integer/);
    assertOneLineError(await cli(...base, '--top-p', '2'), /--top-p must be in \(0, 1\], got 2/);
    assertOneLineError(await cli(...base, '--top-p', '0'), /--top-p must be in \(0, 1\]/);
    assertOneLineError(await cli(...base, '--temperature', '-1'), /--temperature must be a number ≥ 0, got "-1"/);
    assertOneLineError(await cli(...base, '--temperature=-1'), /--temperature must be a number ≥ 0, got "-1"/);
    assertOneLineError(await cli(...base, '--temperature', 'hot'), /--temperature must be a number/);
    assertOneLineError(await cli(...base, '--top-k', '-3'), /--top-k must be an integer ≥ 0, got "-3"/);
    assertOneLineError(await cli(...base, '--seed', 'abc'), /--seed must be an integer/);
  });

  it('a negative value for a flag that allows one is accepted', async () => {
    const r = await cli('generate', '--model', modelDir, '--prompt', 'x', '--seed', '-4', '--max-new-tokens', '2', '--json');
    assert.equal(r.code, 0, r.stderr);
  });

  it('an option that takes a value but got none: one line', async () => {
    assertOneLineError(await cli('generate', '--model', modelDir, '--prompt'), /generate: .*--prompt/);
  });

  it('a mistyped flag suggests the right one', async () => {
    assertOneLineError(
      await cli('generate', '--model', modelDir, '--prompt', 'x', '--max-new-token', '3'),
      /generate: unknown option --max-new-token; did you mean --max-new-tokens\?/,
    );
    assertOneLineError(await cli('generate', '--model', modelDir, '--prompt', 'x', '--temprature', '1'), /did you mean --temperature\?/);
    // Nothing near: no suggestion.
    const far = await cli('generate', '--model', modelDir, '--prompt', 'x', '--zzzzzzzzzz', '1');
    assertOneLineError(far, /unknown option --zzzzzzzzzz$/);
  });

  it('missing --model or --prompt: one line naming the flag', async () => {
    assertOneLineError(await cli('generate', '--prompt', 'x'), /--model is required/);
    assertOneLineError(await cli('generate', '--model', modelDir), /--prompt is required/);
  });
});

describe('tunekit: commands', () => {
  it('an unknown command suggests the closest and exits 2', async () => {
    for (const [typo, right] of [['generat', 'generate'], ['logprob', 'logprobs'], ['init-modle', 'init-model'], ['evn', 'env']]) {
      const r = await cli(typo);
      assert.equal(r.code, 2);
      assert.equal(r.stdout, '');
      const [first] = r.stderr.split('\n');
      assert.equal(first, `tunekit: error: unknown command "${typo}"; did you mean "${right}"?`);
      assert.doesNotMatch(r.stderr, /\n\s+at /);
    }
  });

  it('a command far from every known one gets no suggestion', async () => {
    const r = await cli('qqqqqqqq');
    assert.equal(r.code, 2);
    assert.equal(r.stderr.split('\n')[0], 'tunekit: error: unknown command "qqqqqqqq"');
  });

  it('no command prints the usage and exits 1; --help exits 0', async () => {
    const none = await cli();
    assert.equal(none.code, 1);
    assert.match(none.stdout, /^usage: tunekit <command>/);
    for (const name of ['env', 'init-model', 'generate', 'chat', 'logprobs']) assert.match(none.stdout, new RegExp(`\\n  ${name} `));
    assert.equal((await cli('--help')).code, 0);
    const help = await cli('generate', '--help');
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--max-new-tokens/);
  });
});

describe('tunekit logprobs', () => {
  let dataDir: string;
  before(() => {
    dataDir = path.join(root, 'data');
    fs.mkdirSync(dataDir, { recursive: true });
  });

  function writeLines(name: string, lines: string[]): string {
    const file = path.join(dataDir, name);
    fs.writeFileSync(file, `${lines.join('\n')}\n`);
    return file;
  }

  const parseLines = (stdout: string) => stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { logprob: number; tokens: number });

  it('prints {"logprob", "tokens"} per line, equal to sequenceLogprob, for both line kinds', async () => {
    const rows = [
      { prompt: 'The capital of France is', response: ' Paris.' },
      { ids: [5, 300, 17, 900, 42, 7], start: 2 },
      { prompt: '你好', response: '，世界' },
    ];
    const file = writeLines('both.jsonl', [JSON.stringify(rows[0]), '', JSON.stringify(rows[1]), '   ', JSON.stringify(rows[2])]);
    const r = await cli('logprobs', '--model', modelDir, '--data', file);
    assert.equal(r.code, 0, r.stderr);
    const got = parseLines(r.stdout);
    assert.equal(got.length, 3, 'blank lines print nothing');
    const tok = pipeline.tokenizer;
    const textIds = (prompt: string, response: string) => {
      const p = tok.encode(prompt);
      return { ids: [...p, ...tok.encode(response, { addSpecialTokens: false })], start: p.length };
    };
    const wants = [textIds(rows[0].prompt!, rows[0].response!), { ids: rows[1].ids!, start: rows[1].start! }, textIds(rows[2].prompt!, rows[2].response!)];
    wants.forEach((w, i) => {
      assert.deepEqual(Object.keys(got[i]).sort(), ['logprob', 'tokens']);
      assert.deepEqual(got[i], sequenceLogprob(pipeline.model, w.ids, w.start), `line ${i}`);
      assert.ok(got[i].tokens > 0 && got[i].logprob < 0);
    });
    assert.equal(got[1].tokens, 4);
  });

  it('--chat renders the prompt as a user turn of the chat template', async () => {
    const row = { prompt: 'Hi!', response: 'Hello.' };
    const file = writeLines('chat.jsonl', [JSON.stringify(row)]);
    const plain = parseLines((await cli('logprobs', '--model', modelDir, '--data', file)).stdout)[0];
    const r = await cli('logprobs', '--model', modelDir, '--data', file, '--chat');
    assert.equal(r.code, 0, r.stderr);
    const prompt = encodeChatPrompt(pipeline, [{ role: 'user', content: row.prompt }]);
    const response = pipeline.tokenizer.encode(row.response, { addSpecialTokens: false });
    const want = sequenceLogprob(pipeline.model, [...prompt, ...response], prompt.length);
    assert.deepEqual(parseLines(r.stdout)[0], want);
    assert.notEqual(want.logprob, plain.logprob);
  });

  const badLines: Array<[string, string, RegExp]> = [
    ['invalid JSON', '{"prompt": "a", ', /invalid JSON/],
    ['not an object', '[1, 2]', /expected a JSON object/],
    ['missing response', '{"prompt": "a"}', /missing "response"/],
    ['missing prompt', '{"response": "a"}', /missing "prompt"/],
    ['start out of range', '{"ids": [1, 2, 3], "start": 4}', /"start" must be an integer from 1 to 3/],
    ['start 0', '{"ids": [1, 2, 3], "start": 0}', /"start" must be an integer from 1 to 3/],
    ['id outside the vocabulary', '{"ids": [1, 99999], "start": 1}', /"ids" must be a non-empty array of token ids below \d+/],
    ['empty ids', '{"ids": [], "start": 1}', /"ids" must be a non-empty array/],
  ];
  for (const [what, line, problem] of badLines) {
    it(`a bad line 2 (${what}): exit 2, one line naming FILE:2`, async () => {
      const file = writeLines(`bad-${what.replace(/\W+/g, '-')}.jsonl`, ['{"prompt": "ok", "response": " fine"}', line, '{"prompt": "never", "response": " read"}']);
      const r = await cli('logprobs', '--model', modelDir, '--data', file);
      assert.equal(r.code, 2);
      // Line 1 was scored before line 2 failed.
      assert.equal(r.stdout.trimEnd().split('\n').length, 1);
      const lines = r.stderr.trimEnd().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.ok(lines[0].startsWith(`tunekit: error: ${file}:2: `), lines[0]);
      assert.match(lines[0], problem);
    });
  }

  it('a missing data file: exit 2, one line', async () => {
    const file = path.join(dataDir, 'nope.jsonl');
    assertOneLineError(await cli('logprobs', '--model', modelDir, '--data', file), new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: file not found`));
  });
});
