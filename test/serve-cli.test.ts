/**
 * `tunekit serve` as a process: it loads the model and its adapters, prints where it listens,
 * answers with the API key it was given, and stops cleanly (exit 0) on SIGTERM.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';

import { serveCommand } from '../src/cli/commands/serve.js';
import { UserError } from '../src/errors.js';
import { makeAdapter, removeDir, tempDir, tinyModelDir } from './helpers/adapter-fixtures.js';

const COMMAND = pathToFileURL(path.resolve('src/cli/commands/serve.ts')).href;

let root: string;
let modelDir: string;
let adapterDir: string;

before(() => {
  root = tempDir('serve-cli');
  modelDir = tinyModelDir(root, 'base-model');
  adapterDir = makeAdapter(modelDir, path.join(root, 'out', 'lora'), { seed: 5 });
});

after(() => {
  if (root) removeDir(root);
});

describe('tunekit serve', () => {
  it('serves until SIGTERM, then exits 0', async () => {
    const args = ['--model', modelDir, '--adapter', `support=${adapterDir}`, '--port', '0', '--api-key', 'k-1', '--max-queue', '2'];
    const script = `const { serveCommand } = await import(${JSON.stringify(COMMAND)}); process.exitCode = await serveCommand.run(${JSON.stringify(args)});`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        child.stderr.on('data', (s: string) => {
          stderr += s;
          const m = /listening on (http:\/\/\S+)\/v1 \(models: ([^;)]*)/.exec(stderr);
          if (m) resolve(m[1]);
        });
        child.on('exit', () => reject(new Error(`serve exited early:\n${stderr}`)));
      });
      assert.match(stderr, /models: base-model, support; API key required/);
      const denied = await fetch(`${url}/v1/models`);
      assert.equal(denied.status, 401);
      const res = await fetch(`${url}/v1/models`, { headers: { Authorization: 'Bearer k-1' } });
      const body = (await res.json()) as { data: Array<{ id: string }> };
      assert.deepEqual(body.data.map((m) => m.id), ['base-model', 'support']);
      await waitForText(() => stderr, /GET \/v1\/models 200/);
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0, stderr);
    assert.match(stderr, /stopping/);
  });

  it('needs --model', async () => {
    await assert.rejects(Promise.resolve().then(() => serveCommand.run([])), (e: unknown) => e instanceof UserError && /--model is required/.test(e.message));
    await assert.rejects(
      Promise.resolve().then(() => serveCommand.run(['--model', modelDir, '--port', '-1'])),
      (e: unknown) => e instanceof UserError && /--port/.test(e.message),
    );
  });
});

async function waitForText(get: () => string, re: RegExp, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!re.test(get())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${re}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
