/**
 * `--model org/name[@revision]` through a Hugging Face cache folder the test builds exactly as
 * Python's huggingface_hub leaves it (blobs named by hash, relative snapshot symlinks, refs), so
 * a model downloaded from Python is used as is. No network: a fetch that fails the test if
 * called proves it; the offline and unreachable-hub errors name the missing files and the folder.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { UserError } from '../src/errors.js';
import { findCachedModel, hubCacheDir, parseHubId, repoFolder, resolveModel } from '../src/io/hub.js';
import { initModel } from '../src/io/init-model.js';
import { loadModel, saveModel } from '../src/io/model-folder.js';

const MAIN = 'a'.repeat(8) + '0123456789abcdef0123456789abcdef'; // 40 hex digits
const V1 = 'b'.repeat(8) + 'fedcba9876543210fedcba9876543210';

const noNetwork: typeof fetch = async (input) => {
  throw new Error(`the test forbids network access, but ${String(input)} was fetched`);
};

let tmp: string;
let source: string;
let sharded: string;

/** Puts a model folder's files into `cache` as huggingface_hub would for repo@commit. */
function addToCache(cache: string, repo: string, commit: string, folder: string, refs: string[] = []): string {
  const storage = repoFolder(cache, repo);
  const snapshot = path.join(storage, 'snapshots', commit);
  fs.mkdirSync(path.join(storage, 'blobs'), { recursive: true });
  fs.mkdirSync(snapshot, { recursive: true });
  for (const name of fs.readdirSync(folder)) {
    const content = fs.readFileSync(path.join(folder, name));
    const etag = name.endsWith('.safetensors')
      ? createHash('sha256').update(content).digest('hex')
      : createHash('sha1').update(`blob ${content.length}\0`).update(content).digest('hex');
    const blob = path.join(storage, 'blobs', etag);
    fs.writeFileSync(blob, content);
    fs.symlinkSync(path.relative(snapshot, blob), path.join(snapshot, name));
  }
  for (const ref of refs) {
    fs.mkdirSync(path.join(storage, 'refs'), { recursive: true });
    fs.writeFileSync(path.join(storage, 'refs', ref), commit);
  }
  return snapshot;
}

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tunekit-hub-'));
  source = path.join(tmp, 'source');
  initModel({ preset: 'tiny', out: source, seed: 3 });
  sharded = path.join(tmp, 'sharded');
  fs.cpSync(source, sharded, { recursive: true });
  fs.rmSync(path.join(sharded, 'model.safetensors'));
  saveModel(loadModel(source), sharded, { maxShardBytes: 150_000 });
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('resolveModel through the Hugging Face cache', () => {
  it('finds org/name at refs/main and loads it with no network', async () => {
    const cache = path.join(tmp, 'cache1');
    const snapshot = addToCache(cache, 'Org/tiny-model', MAIN, source, ['main']);
    const dir = await resolveModel('Org/tiny-model', { cacheDir: cache, env: {}, fetch: noNetwork });
    assert.equal(dir, snapshot);
    const a = loadModel(dir);
    const b = loadModel(source);
    for (const [name, t] of a.namedParameters()) assert.deepEqual(t.data, b.getParameter(name)!.data);
  });

  it('finds the cache through HF_HUB_CACHE, HF_HOME and XDG_CACHE_HOME like huggingface_hub', async () => {
    assert.equal(hubCacheDir({ HF_HUB_CACHE: '/x/hub', HF_HOME: '/y' }), '/x/hub');
    assert.equal(hubCacheDir({ HF_HOME: '/y' }), path.join('/y', 'hub'));
    assert.equal(hubCacheDir({ XDG_CACHE_HOME: '/z' }), path.join('/z', 'huggingface', 'hub'));
    assert.equal(hubCacheDir({}), path.join(os.homedir(), '.cache', 'huggingface', 'hub'));
    const home = path.join(tmp, 'hf-home');
    const snapshot = addToCache(path.join(home, 'hub'), 'Org/by-env', MAIN, source, ['main']);
    assert.equal(await resolveModel('Org/by-env', { env: { HF_HOME: home }, fetch: noNetwork }), snapshot);
  });

  it('resolves @revision by ref name and by commit hash', async () => {
    const cache = path.join(tmp, 'cache2');
    const main = addToCache(cache, 'Org/tiny-model', MAIN, source, ['main']);
    const v1 = addToCache(cache, 'Org/tiny-model', V1, sharded, ['v1.0']);
    const opts = { cacheDir: cache, env: {}, fetch: noNetwork };
    assert.equal(await resolveModel('Org/tiny-model@v1.0', opts), v1);
    assert.equal(await resolveModel('Org/tiny-model', { ...opts, revision: 'v1.0' }), v1);
    assert.equal(await resolveModel(`Org/tiny-model@${MAIN}`, opts), main);
    assert.equal(await resolveModel(`Org/tiny-model@${V1}`, opts), v1, 'a commit hash needs no ref');
    assert.ok(fs.existsSync(path.join(v1, 'model.safetensors.index.json')));
    loadModel(v1); // the sharded snapshot loads through the index
    await assert.rejects(resolveModel('Org/tiny-model@v1.0', { ...opts, revision: 'main' }), /names revision v1\.0, but --revision says main/);
  });

  it('returns a local folder as is, and rejects a path that is neither a folder nor a hub id', async () => {
    assert.equal(await resolveModel(source, { fetch: noNetwork }), source);
    await assert.rejects(resolveModel(path.join(tmp, 'nope'), { fetch: noNetwork }), (e: unknown) => e instanceof UserError && /does not exist/.test(e.message));
    await assert.rejects(resolveModel(path.join(source, 'config.json'), { fetch: noNetwork }), /is a file/);
    assert.deepEqual(parseHubId('Qwen/Qwen2.5-0.5B-Instruct'), { repo: 'Qwen/Qwen2.5-0.5B-Instruct', revision: null });
    assert.deepEqual(parseHubId('meta-llama/Llama-3.2-1B@refs/pr/3'), { repo: 'meta-llama/Llama-3.2-1B', revision: 'refs/pr/3' });
    assert.equal(parseHubId('./models/x'), null);
    assert.equal(parseHubId('a/b/c'), null);
  });

  it('offline: names the missing files and the snapshot folder they belong in', async () => {
    const cache = path.join(tmp, 'cache3');
    const snapshot = addToCache(cache, 'Org/partial', MAIN, sharded, ['main']);
    const index = JSON.parse(fs.readFileSync(path.join(snapshot, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
    const lastShard = [...new Set(Object.values(index.weight_map))].sort().at(-1)!;
    fs.rmSync(path.join(snapshot, 'tokenizer.json'));
    fs.rmSync(path.join(snapshot, lastShard));
    assert.deepEqual(findCachedModel(cache, 'Org/partial', 'main').missing, ['tokenizer.json', lastShard]);
    await assert.rejects(
      resolveModel('Org/partial', { cacheDir: cache, env: { HF_HUB_OFFLINE: '1' }, fetch: noNetwork }),
      (e: unknown) =>
        e instanceof UserError &&
        e.message.includes('HF_HUB_OFFLINE') &&
        e.message.includes(`missing tokenizer.json, ${lastShard} in ${snapshot}`),
    );
  });

  it('offline: a model never downloaded names the repo folder and the weights it needs', async () => {
    const cache = path.join(tmp, 'cache4');
    await assert.rejects(
      resolveModel('Org/absent@main', { cacheDir: cache, offline: true, env: {}, fetch: noNetwork }),
      (e: unknown) =>
        e instanceof UserError &&
        e.message.includes('config.json, tokenizer.json, model.safetensors (or model.safetensors.index.json and its shards)') &&
        e.message.includes(path.join(cache, 'models--Org--absent', 'snapshots', '<commit of main>')),
    );
  });

  it('an unreachable hub gives the same message, with the reason', async () => {
    // A port that was just free: nothing listens there, so the connection is refused at once.
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    await new Promise<void>((r) => server.close(() => r()));
    const cache = path.join(tmp, 'cache5');
    await assert.rejects(
      resolveModel('Org/absent', { cacheDir: cache, env: { HF_ENDPOINT: `http://127.0.0.1:${port}` }, progress: null }),
      (e: unknown) =>
        e instanceof UserError &&
        e.message.includes(`http://127.0.0.1:${port} cannot be reached`) &&
        e.message.includes('ECONNREFUSED') &&
        e.message.includes('missing config.json'),
    );
  });
});
