/**
 * Downloads one file of a hub repository into the Hugging Face cache, laid out exactly as Python's
 * huggingface_hub lays it out, so either side reuses what the other fetched:
 *
 *   models--ORG--NAME/blobs/<etag>                    the content, named by its hash
 *   models--ORG--NAME/blobs/<etag>.incomplete         a download in progress, resumed from its length
 *   models--ORG--NAME/snapshots/<commit>/<path>       a relative symlink to ../../blobs/<etag>
 *   models--ORG--NAME/refs/<revision>                 the commit a branch or tag pointed to
 *
 * The etag is the sha256 of an LFS file (weights) and the git blob id of a small file. Both are
 * checked after the download: sha256 of the bytes, or sha1("blob <size>\0" + bytes) as git
 * computes it. A partial `.incomplete` file is continued with an HTTP Range request; a server
 * that answers a Range request with the whole file makes it start over.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { dirname, join, relative } from 'node:path';

import { downloadFile } from '@huggingface/hub';

import { UserError } from '../errors.js';
import { ProgressBar } from './hub-progress.js';
import type { ProgressSink } from './hub-progress.js';

/** A file as the hub's tree API lists it. */
export interface RemoteFile {
  path: string;
  size: number;
  /** Git blob id (sha1). */
  oid: string;
  /** sha256 of the content when the file is stored with LFS (or Xet), else null. */
  lfsSha256: string | null;
}

export interface DownloadContext {
  repo: string;
  commit: string;
  /** models--ORG--NAME folder. */
  storage: string;
  hubUrl: string;
  accessToken: string | undefined;
  fetch: typeof fetch;
  progress: ProgressSink | null;
  /** Attempts per file before giving up (each resumes where the last stopped). */
  attempts?: number;
}

/** The blob name huggingface_hub gives a file. */
export function etagOf(file: RemoteFile): string {
  return file.lfsSha256 ?? file.oid;
}

/** Where a file of a commit appears in the cache. */
export function snapshotPath(storage: string, commit: string, path: string): string {
  return join(storage, 'snapshots', commit, ...path.split('/'));
}

/** Makes sure `file` is in the cache's snapshot of `ctx.commit`; returns its snapshot path. */
export async function downloadToCache(ctx: DownloadContext, file: RemoteFile): Promise<string> {
  const pointer = snapshotPath(ctx.storage, ctx.commit, file.path);
  if (fs.existsSync(pointer)) return pointer;
  const blob = join(ctx.storage, 'blobs', etagOf(file));
  fs.mkdirSync(dirname(blob), { recursive: true });
  if (!fs.existsSync(blob)) await fetchBlob(ctx, file, blob);
  linkIntoSnapshot(blob, pointer);
  return pointer;
}

/** A relative symlink as huggingface_hub makes; a copy where symlinks are not allowed. */
function linkIntoSnapshot(blob: string, pointer: string): void {
  fs.mkdirSync(dirname(pointer), { recursive: true });
  fs.rmSync(pointer, { force: true });
  try {
    fs.symlinkSync(relative(dirname(pointer), blob), pointer);
  } catch {
    fs.copyFileSync(blob, pointer);
  }
}

class RangeIgnored extends Error {}

async function fetchBlob(ctx: DownloadContext, file: RemoteFile, blob: string): Promise<void> {
  const incomplete = `${blob}.incomplete`;
  const attempts = ctx.attempts ?? 3;
  let lastError: unknown = null;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      await fetchOnce(ctx, file, incomplete);
      lastError = null;
      break;
    } catch (e) {
      if (e instanceof UserError) throw e;
      lastError = e;
    }
  }
  if (lastError !== null) {
    const have = fs.existsSync(incomplete) ? fs.statSync(incomplete).size : 0;
    throw new UserError(
      `download of ${file.path} from ${ctx.hubUrl}/${ctx.repo} stopped at ${have} of ${file.size} bytes after ${attempts} attempts (${describeError(lastError)}); run the command again to resume from ${incomplete}`,
    );
  }
  verify(file, incomplete);
  fs.renameSync(incomplete, blob);
}

/** One request: continues `incomplete` from its current length to the file's size. */
async function fetchOnce(ctx: DownloadContext, file: RemoteFile, incomplete: string): Promise<void> {
  let offset = fs.existsSync(incomplete) ? fs.statSync(incomplete).size : 0;
  if (offset > file.size) {
    fs.rmSync(incomplete);
    offset = 0;
  }
  if (offset === file.size) return;

  let rangeIgnored = false;
  // @huggingface/hub's blob asks for `Range: bytes=<offset>-<end>` when sliced; a server that
  // answers 200 sent the whole file, which must not be appended to the part we have.
  const checkedFetch: typeof fetch = async (input, init) => {
    const res = await ctx.fetch(input, init);
    const range = new Headers(init?.headers).get('Range');
    if (range && !range.startsWith('bytes=0-') && res.status === 200) {
      rangeIgnored = true;
      await res.body?.cancel();
      throw new RangeIgnored('the server ignored the Range request');
    }
    return res;
  };
  const url = `${ctx.hubUrl}/${ctx.repo}/resolve/${ctx.commit}/${file.path.split('/').map(encodeURIComponent).join('/')}`;
  const remote = await downloadFile({
    repo: ctx.repo,
    path: file.path,
    revision: ctx.commit,
    hubUrl: ctx.hubUrl,
    accessToken: ctx.accessToken,
    fetch: checkedFetch,
    // Plain HTTP with Range requests; the Xet protocol's reconstruction is not resumable here.
    xet: false,
    downloadInfo: { size: file.size, etag: etagOf(file), url },
  });
  if (!remote) throw new UserError(`${ctx.hubUrl}/${ctx.repo} has no file ${file.path} at ${ctx.commit}`);

  const bar = new ProgressBar(file.path, file.size, ctx.progress, offset);
  const out = fs.openSync(incomplete, 'a');
  try {
    const reader = (offset > 0 ? remote.slice(offset) : remote).stream().getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      for (let at = 0; at < value.length; ) at += fs.writeSync(out, value, at);
      offset += value.length;
      bar.add(value.length);
    }
  } catch (e) {
    bar.abort();
    if (rangeIgnored) fs.rmSync(incomplete, { force: true });
    throw e;
  } finally {
    fs.closeSync(out);
  }
  if (offset !== file.size) {
    bar.abort();
    throw new Error(`the connection closed after ${offset} of ${file.size} bytes`);
  }
  bar.finish();
}

/** Checks size and hash; a mismatch removes the file, since resuming it could never succeed. */
function verify(file: RemoteFile, path: string): void {
  const size = fs.statSync(path).size;
  const actual = file.lfsSha256 ? sha256File(path) : gitBlobId(path, size);
  const expected = file.lfsSha256 ?? file.oid;
  if (size !== file.size || actual !== expected) {
    fs.rmSync(path, { force: true });
    const what = file.lfsSha256 ? 'sha256' : 'git blob id';
    throw new UserError(
      `${file.path}: the downloaded file does not match the hub's record (${size} bytes, ${what} ${actual}; expected ${file.size} bytes, ${expected}); it was removed, run the command again`,
    );
  }
}

function sha256File(path: string): string {
  return hashFile(createHash('sha256'), path);
}

/** git's blob id: sha1 of "blob <size>\0" followed by the content. */
export function gitBlobId(path: string, size: number): string {
  const h = createHash('sha1');
  h.update(`blob ${size}\0`);
  return hashFile(h, path);
}

function hashFile(h: ReturnType<typeof createHash>, path: string): string {
  const fd = fs.openSync(path, 'r');
  const buf = Buffer.allocUnsafe(1 << 22);
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

export function describeError(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as { cause?: unknown }).cause;
    const code = typeof cause === 'object' && cause !== null ? (cause as { code?: unknown }).code : undefined;
    const causeMessage = cause instanceof Error ? cause.message : undefined;
    return [e.message, typeof code === 'string' ? code : causeMessage].filter(Boolean).join(': ');
  }
  return String(e);
}
