/**
 * Downloading a model that is not in the cache, through @huggingface/hub pointed (HF_ENDPOINT)
 * at a hub the test runs on 127.0.0.1. The fake hub answers the endpoints the client uses:
 *
 *   GET /api/models/ORG/NAME/revision/REV   {sha, …}         which commit a branch is at
 *   GET /api/models/ORG/NAME/tree/COMMIT    [{path, size, oid, lfs?}]
 *   GET /ORG/NAME/resolve/COMMIT/PATH       the bytes of a small file; a 302 to /cdn/… for an LFS
 *                                           file, where the bytes are served with Range support
 *
 * and can cut a connection mid-file, ignore Range, serve corrupt bytes or demand a token. Checked:
 * the cache layout huggingface_hub makes (blobs named by sha256 / git id, relative symlinks,
 * refs/main), only the files a model needs, a second run with no request at all, resuming a
 * `.incomplete` file with a Range request, verification, HF_TOKEN, and errors.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';

import { UserError } from '../src/errors.js';
import { repoFolder, resolveModel } from '../src/io/hub.js';
import { initModel } from '../src/io/init-model.js';
import { loadModel, saveModel } from '../src/io/model-folder.js';

const REPO = 'TestOrg/tiny-chat';
const COMMIT = '3f2a9c1d5e7b8a6f4c2d0e1b9a8c7d6e5f4a3b2c';

interface HubFile {
  content: Buffer;
  lfs: boolean;
}

interface Request {
  method: string;
  url: string;
  range: string | undefined;
  authorization: string | undefined;
}

/** What the fake hub does wrong on purpose, reset before each test. */
interface Faults {
  /** Close the connection after this many bytes of a file, for its first N requests. */
  cut: Map<string, { after: number; times: number }>;
  ignoreRange: boolean;
  corrupt: Set<string>;
  token: string | null;
}

let tmp: string;
let source: string;
let files: Map<string, HubFile>;
let server: http.Server;
let endpoint: string;
let requests: Request[];
let faults: Faults;

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const gitOid = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

function handle(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url!, endpoint);
  requests.push({ method: req.method!, url: url.pathname, range: req.headers.range, authorization: req.headers.authorization });
  const json = (status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  if (faults.token !== null && req.headers.authorization !== `Bearer ${faults.token}`) {
    return json(401, { error: 'Access to model TestOrg/tiny-chat is restricted. You must have access to it and be authenticated.' });
  }
  let m = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(url.pathname);
  if (m) {
    if (m[1] !== REPO) return json(404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' });
    if (m[2] !== 'main' && m[2] !== COMMIT) return json(404, { error: `Invalid rev id: ${m[2]}` }, { 'X-Error-Code': 'RevisionNotFound' });
    return json(200, { _id: '0123', id: REPO, sha: COMMIT, private: false, downloads: 0, likes: 0, lastModified: '2025-01-01T00:00:00.000Z' });
  }
  m = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/([^/]+)$/.exec(url.pathname);
  if (m) {
    if (m[1] !== REPO || m[2] !== COMMIT) return json(404, { error: 'not found' });
    return json(
      200,
      [...files].map(([p, f]) => ({
        type: 'file',
        path: p,
        size: f.content.length,
        oid: gitOid(f.content),
        ...(f.lfs ? { lfs: { oid: sha256(f.content), size: f.content.length, pointerSize: 134 } } : {}),
      })),
    );
  }
  m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
  if (m && m[1] === REPO && m[2] === COMMIT && files.has(decodeURIComponent(m[3])) && files.get(decodeURIComponent(m[3]))!.lfs) {
    // The hub redirects LFS files to its CDN, which serves them (Range included) by hash.
    res.writeHead(302, { Location: `/cdn/${decodeURIComponent(m[3])}`, 'X-Repo-Commit': COMMIT });
    res.end();
    return;
  }
  const cdn = /^\/cdn\/(.+)$/.exec(url.pathname);
  if (cdn) m = [url.pathname, REPO, COMMIT, cdn[1]] as unknown as RegExpExecArray;
  if (m && m[1] === REPO && m[2] === COMMIT && files.has(decodeURIComponent(m[3]))) {
    const name = decodeURIComponent(m[3]);
    const file = files.get(name)!;
    let body = file.content;
    if (faults.corrupt.has(name)) body = Buffer.concat([body.subarray(0, -1), Buffer.from([body.at(-1)! ^ 0xff])]);
    const headers: Record<string, string> = { 'Accept-Ranges': 'bytes', 'X-Repo-Commit': COMMIT, ETag: `"${file.lfs ? sha256(file.content) : gitOid(file.content)}"` };
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    let status = 200;
    let start = 0;
    if (range && !faults.ignoreRange) {
      start = Number(range[1]);
      const end = range[2] ? Number(range[2]) : body.length - 1;
      headers['Content-Range'] = `bytes ${start}-${end}/${body.length}`;
      body = body.subarray(start, end + 1);
      status = 206;
    }
    headers['Content-Length'] = String(body.length);
    res.writeHead(status, headers);
    const cut = faults.cut.get(name);
    if (cut && cut.times > 0) {
      cut.times--;
      const keep = Math.max(0, cut.after - start);
      res.write(body.subarray(0, keep), () => res.destroy());
      return;
    }
    res.end(body);
    return;
  }
  json(404, { error: 'Entry not found' }, { 'X-Error-Code': 'EntryNotFound' });
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tunekit-hubdl-'));
  source = path.join(tmp, 'source');
  initModel({ preset: 'tiny', out: source, seed: 5 });
  // Sharded weights, as large models are published: an index and two shards (LFS files).
  const model = loadModel(source);
  fs.rmSync(path.join(source, 'model.safetensors'));
  saveModel(model, source, { maxShardBytes: 200_000 });
  files = new Map();
  for (const name of fs.readdirSync(source)) files.set(name, { content: fs.readFileSync(path.join(source, name)), lfs: name.endsWith('.safetensors') });
  // Files a model repository also has but tunekit does not need.
  files.set('README.md', { content: Buffer.from('# tiny chat model\n'), lfs: false });
  files.set('pytorch_model.bin', { content: Buffer.alloc(5000, 7), lfs: true });
  server = http.createServer(handle);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  endpoint = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
after(async () => {
  if (server) await new Promise<void>((r) => server.close(() => r()));
  fs.rmSync(tmp, { recursive: true, force: true });
});
beforeEach(() => {
  requests = [];
  faults = { cut: new Map(), ignoreRange: false, corrupt: new Set(), token: null };
});

let cacheCount = 0;
function freshCache(): string {
  return path.join(tmp, `cache-${++cacheCount}`);
}

function shards(): string[] {
  return [...files.keys()].filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).sort();
}

function progressSink(): { write(s: string): boolean; text: string } {
  return {
    text: '',
    write(s: string) {
      this.text += s;
      return true;
    },
  };
}

describe('downloading a model into the Hugging Face cache', () => {
  it('fetches what a model needs into blobs + snapshot symlinks + refs/main, then needs no network', async () => {
    const cache = freshCache();
    const progress = progressSink();
    const dir = await resolveModel(REPO, { cacheDir: cache, env: { HF_ENDPOINT: endpoint }, progress });
    const storage = repoFolder(cache, REPO);
    assert.equal(dir, path.join(storage, 'snapshots', COMMIT));
    assert.equal(fs.readFileSync(path.join(storage, 'refs', 'main'), 'utf8'), COMMIT);

    const wanted = [...files.keys()].filter((f) => f !== 'README.md' && f !== 'pytorch_model.bin').sort();
    assert.ok(wanted.includes('tokenizer_config.json') && wanted.includes('generation_config.json') && shards().length >= 2);
    assert.deepEqual(fs.readdirSync(dir).sort(), wanted);
    for (const name of wanted) {
      const link = path.join(dir, name);
      const file = files.get(name)!;
      const etag = file.lfs ? sha256(file.content) : gitOid(file.content);
      assert.ok(fs.lstatSync(link).isSymbolicLink(), `${name} is a symlink`);
      assert.equal(fs.readlinkSync(link), path.join('..', '..', 'blobs', etag), `${name} points at its blob by a relative path`);
      assert.deepEqual(fs.readFileSync(link), file.content);
    }
    assert.deepEqual(fs.readdirSync(path.join(storage, 'blobs')).filter((f) => f.endsWith('.incomplete')), []);
    const fetched = requests.filter((r) => r.url.includes('/resolve/')).map((r) => r.url.split('/').at(-1)).sort();
    assert.deepEqual(fetched, wanted, 'only the files a model needs, each once');
    for (const s of shards()) assert.ok(progress.text.includes(`downloading ${s}`) && progress.text.includes(`downloaded ${s}`));

    const a = loadModel(dir);
    const b = loadModel(source);
    for (const [name, t] of a.namedParameters()) assert.deepEqual(t.data, b.getParameter(name)!.data);

    requests = [];
    assert.equal(await resolveModel(REPO, { cacheDir: cache, env: { HF_ENDPOINT: endpoint }, progress: null }), dir);
    assert.deepEqual(requests, [], 'a complete cached model is used without any request');
  });

  it('resumes a partial .incomplete file with a Range request', async () => {
    const cache = freshCache();
    const shard = shards()[0];
    const content = files.get(shard)!.content;
    const blobs = path.join(repoFolder(cache, REPO), 'blobs');
    fs.mkdirSync(blobs, { recursive: true });
    const half = Math.floor(content.length / 2);
    fs.writeFileSync(path.join(blobs, `${sha256(content)}.incomplete`), content.subarray(0, half));
    const progress = progressSink();
    const dir = await resolveModel(REPO, { cacheDir: cache, env: { HF_ENDPOINT: endpoint }, progress });
    // The Range header goes to the hub and, through its redirect, to the CDN that sends the bytes.
    const shardRequests = requests.filter((r) => r.url.endsWith(shard));
    assert.deepEqual(shardRequests.map((r) => [r.url.split('/')[1], r.range]), [
      [REPO.split('/')[0], `bytes=${half}-${content.length - 1}`],
      ['cdn', `bytes=${half}-${content.length - 1}`],
    ]);
    assert.ok(progress.text.includes(`downloading ${shard}`) && progress.text.includes('resuming at'));
    assert.deepEqual(fs.readFileSync(path.join(dir, shard)), content);
  });

  it('continues after a dropped connection, from where it stopped', async () => {
    const cache = freshCache();
    const shard = shards()[1];
    const content = files.get(shard)!.content;
    faults.cut.set(shard, { after: 10_000, times: 1 });
    const dir = await resolveModel(REPO, { cacheDir: cache, env: { HF_ENDPOINT: endpoint }, progress: null });
    assert.deepEqual(requests.filter((r) => r.url === `/cdn/${shard}`).map((r) => r.range), [undefined, `bytes=10000-${content.length - 1}`]);
    assert.deepEqual(fs.readFileSync(path.join(dir, shard)), content);
  });

  it('stops after repeated failures, keeping the partial file for the next run', async () => {
    const cache = freshCache();
    const shard = shards()[0];
    const content = files.get(shard)!.content;
    faults.cut.set(shard, { after: 4096, times: 99 });
    await assert.rejects(
      resolveModel(REPO, { cacheDir: cache, env: { HF_ENDPOINT: endpoint }, progress: null }),
      (e: unknown) => e instanceof UserError && e.message.includes(`download of ${shard}`) && e.message.includes('run the command again to resume'),
    );
    const partial = path.join(repoFolder(cache, REPO), 'blobs', `${sha256(content)}.incomplete`);
    assert.equal(fs.statSync(partial).size, 4096);
    faults.cut.clear();
    const dir = await resolveModel(REPO, { cacheDir: cache, env: { HF_ENDPOINT: endpoint }, progress: null });
    assert.deepEqual(fs.readFileSync(path.join(dir, shard)), content);
  });

  it('starts over when the server ignores the Range request', async () => {
    const cache = freshCache();
    const shard = shards()[0];
    const content = files.get(shard)!.content;
    const blobs = path.join(repoFolder(cache, REPO), 'blobs');
    fs.mkdirSync(blobs, { recursive: true });
    fs.writeFileSync(path.join(blobs, `${sha256(content)}.incomplete`), content.subarray(0, 1000));
    faults.ignoreRange = true;
    const dir = await resolveModel(REPO, { cacheDir: cache, env: { HF_ENDPOINT: endpoint }, progress: null });
    assert.deepEqual(fs.readFileSync(path.join(dir, shard)), content);
  });

  it('verifies sha256 of weights and the git id of small files, removing what does not match', async () => {
    for (const bad of [shards()[1], 'tokenizer.json']) {
      const cache = freshCache();
      faults.corrupt = new Set([bad]);
      await assert.rejects(
        resolveModel(REPO, { cacheDir: cache, env: { HF_ENDPOINT: endpoint }, progress: null }),
        (e: unknown) =>
          e instanceof UserError && e.message.startsWith(`${bad}: the downloaded file does not match`) && e.message.includes(bad.endsWith('.json') ? 'git blob id' : 'sha256'),
      );
      const storage = repoFolder(cache, REPO);
      const blobs = fs.readdirSync(path.join(storage, 'blobs'));
      assert.ok(!blobs.some((b) => b.endsWith('.incomplete')), 'the corrupt partial file is removed');
      assert.ok(!fs.existsSync(path.join(storage, 'snapshots', COMMIT, bad)));
      assert.ok(!fs.existsSync(path.join(storage, 'refs', 'main')), 'refs/main is written only once the model is complete');
    }
  });

  it('sends HF_TOKEN, and says a gated model needs one when refused', async () => {
    faults.token = 'hf_testtoken';
    await assert.rejects(
      resolveModel(REPO, { cacheDir: freshCache(), env: { HF_ENDPOINT: endpoint }, progress: null }),
      (e: unknown) => e instanceof UserError && e.message.includes('HTTP 401') && e.message.includes('HF_TOKEN'),
    );
    requests = [];
    const dir = await resolveModel(REPO, { cacheDir: freshCache(), env: { HF_ENDPOINT: endpoint, HF_TOKEN: 'hf_testtoken' }, progress: null });
    assert.ok(fs.existsSync(path.join(dir, 'config.json')));
    assert.ok(requests.length > 0 && requests.every((r) => r.authorization === 'Bearer hf_testtoken'));
    await assert.rejects(resolveModel(REPO, { cacheDir: freshCache(), env: { HF_ENDPOINT: endpoint, HF_TOKEN: 'secret' } }), /starts with "hf_"/);
  });

  it('downloads a commit hash without asking which commit a branch is at', async () => {
    const dir = await resolveModel(`${REPO}@${COMMIT}`, { cacheDir: freshCache(), endpoint, env: {}, progress: null });
    assert.ok(dir.endsWith(path.join('snapshots', COMMIT)));
    assert.ok(!requests.some((r) => r.url.includes('/revision/')));
    assert.ok(!fs.existsSync(path.join(dir, '..', '..', 'refs')), 'no ref is written for a commit hash');
  });

  it('reports a repository the hub does not have', async () => {
    await assert.rejects(
      resolveModel('TestOrg/missing', { cacheDir: freshCache(), env: { HF_ENDPOINT: endpoint }, progress: null }),
      (e: unknown) => e instanceof UserError && e.message.includes(`${endpoint} has no model TestOrg/missing`),
    );
  });
});
