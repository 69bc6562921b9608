/**
 * `--model` as a local folder or a Hugging Face hub id (`org/name`, optionally `@revision`: a
 * branch, a tag or a commit hash), resolved through the standard Hugging Face cache:
 *
 *   $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub
 *     models--ORG--NAME/refs/main                 the commit hash "main" pointed to when downloaded
 *     models--ORG--NAME/snapshots/<hash>/…        the model folder (symlinks into blobs/)
 *
 * A model that is complete there (config.json, tokenizer.json and every safetensors file its
 * index names), which a Python user may well have downloaded already, is used as it is, with no
 * network at all. Otherwise the missing files are downloaded with @huggingface/hub into the same
 * layout (blobs + relative snapshot symlinks, as huggingface_hub does), honouring HF_ENDPOINT and
 * HF_TOKEN, with a progress bar on stderr (off with HF_HUB_DISABLE_PROGRESS_BARS=1), resumable
 * and verified (see hub-download.ts). With HF_HUB_OFFLINE=1, or when the hub cannot be reached,
 * the error names the missing files and the folder they are expected in.
 */
import fs from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';

import { HubApiError, listFiles, modelInfo } from '@huggingface/hub';

import { UserError } from '../errors.js';
import { TOKENIZER_FILES } from './model-folder.js';
import { describeError, downloadToCache, snapshotPath } from './hub-download.js';
import type { DownloadContext, RemoteFile } from './hub-download.js';
import type { ProgressSink } from './hub-progress.js';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';
const COMMIT_HASH = /^[0-9a-f]{40}$/;
const HUB_ID = /^([A-Za-z0-9][\w.-]*\/[\w.-]+)(?:@(.+))?$/;
const WEIGHTS = 'model.safetensors';
const WEIGHTS_INDEX = 'model.safetensors.index.json';
/** Without these (and the weights) a folder is no usable model. */
const REQUIRED_FILES = ['config.json', 'tokenizer.json'];

export interface ResolveModelOptions {
  /** A branch, tag or commit hash; `org/name@revision` in the name says the same. Default "main". */
  revision?: string;
  /** Never touch the network; default from HF_HUB_OFFLINE. */
  offline?: boolean;
  /** The hub cache folder; default from HF_HUB_CACHE / HF_HOME / XDG_CACHE_HOME. */
  cacheDir?: string;
  /** The hub's address; default HF_ENDPOINT or https://huggingface.co. */
  endpoint?: string;
  /** An access token (gated and private models); default HF_TOKEN. */
  token?: string;
  /** Where the progress bar goes: default stderr; null for none. */
  progress?: ProgressSink | null;
  /** Environment to read the defaults from (tests); default process.env. */
  env?: NodeJS.ProcessEnv;
  fetch?: typeof fetch;
}

export interface HubId {
  repo: string;
  revision: string | null;
}

/** `org/name` or `org/name@revision`; null for anything else. */
export function parseHubId(s: string): HubId | null {
  const m = HUB_ID.exec(s);
  if (!m || m[1].includes('..')) return null;
  return { repo: m[1], revision: m[2] ?? null };
}

/** The hub cache folder, as huggingface_hub computes it. */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const expand = (p: string) => (p.startsWith('~') ? join(os.homedir(), p.slice(1)) : p);
  if (env.HF_HUB_CACHE) return expand(env.HF_HUB_CACHE);
  if (env.HUGGINGFACE_HUB_CACHE) return expand(env.HUGGINGFACE_HUB_CACHE);
  const home = env.HF_HOME ? expand(env.HF_HOME) : join(env.XDG_CACHE_HOME ? expand(env.XDG_CACHE_HOME) : join(os.homedir(), '.cache'), 'huggingface');
  return join(home, 'hub');
}

/** `models--org--name` inside the cache. */
export function repoFolder(cacheDir: string, repo: string): string {
  return join(cacheDir, `models--${repo.split('/').join('--')}`);
}

/** huggingface_hub's reading of a boolean environment variable. */
function isTrue(value: string | undefined): boolean {
  return ['1', 'ON', 'YES', 'TRUE'].includes((value ?? '').toUpperCase());
}

export function isOffline(env: NodeJS.ProcessEnv = process.env): boolean {
  return isTrue(env.HF_HUB_OFFLINE);
}

/**
 * Retries a request that failed before any response came (a reset keep-alive connection, a
 * network blip); a failure mid-body is the download's to resume.
 */
function retrying(base: typeof fetch, attempts = 3): typeof fetch {
  return async (input, init) => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await base(input, init);
      } catch (e) {
        if (attempt >= attempts || !(e instanceof TypeError) || init?.signal?.aborted) throw e;
        await new Promise((r) => setTimeout(r, 100 * 4 ** (attempt - 1)));
      }
    }
  };
}

/** What the cache holds for a repo at a revision. */
export interface CachedModel {
  /** The commit the revision resolves to in the cache, or null when the cache does not know it. */
  commit: string | null;
  /** The snapshot folder (present or not), or null when the commit is unknown. */
  snapshot: string | null;
  /** Files a usable model folder needs that are not there. */
  missing: string[];
}

/** Looks a repo up in the cache without any network. */
export function findCachedModel(cacheDir: string, repo: string, revision: string): CachedModel {
  const storage = repoFolder(cacheDir, repo);
  let commit: string | null = null;
  if (COMMIT_HASH.test(revision)) commit = revision;
  else {
    const ref = join(storage, 'refs', ...revision.split('/'));
    if (fs.existsSync(ref)) commit = fs.readFileSync(ref, 'utf8').trim();
  }
  if (commit === null) return { commit: null, snapshot: null, missing: missingFiles(null) };
  const snapshot = join(storage, 'snapshots', commit);
  return { commit, snapshot, missing: missingFiles(snapshot) };
}

/** Required files absent from a snapshot folder (null: no folder at all). */
function missingFiles(snapshot: string | null): string[] {
  const has = (f: string) => snapshot !== null && fs.existsSync(join(snapshot, f));
  const missing = REQUIRED_FILES.filter((f) => !has(f));
  if (has(WEIGHTS_INDEX)) {
    const shards = shardNames(join(snapshot!, WEIGHTS_INDEX));
    missing.push(...shards.filter((s) => !has(s)));
  } else if (!has(WEIGHTS)) {
    missing.push(`${WEIGHTS} (or ${WEIGHTS_INDEX} and its shards)`);
  }
  return missing;
}

function shardNames(indexPath: string): string[] {
  try {
    const index = JSON.parse(fs.readFileSync(indexPath, 'utf8')) as { weight_map?: Record<string, string> };
    return [...new Set(Object.values(index.weight_map ?? {}))].filter((s) => typeof s === 'string' && /^[^/\\]+$/.test(s)).sort();
  } catch {
    throw new UserError(`${indexPath}: not a valid safetensors index (JSON with weight_map)`);
  }
}

/**
 * A model folder for `nameOrPath`: the folder itself when it is one, else the cache snapshot of
 * the hub id, downloading what is missing unless offline.
 */
export async function resolveModel(nameOrPath: string, opts: ResolveModelOptions = {}): Promise<string> {
  if (fs.existsSync(nameOrPath)) {
    if (!fs.statSync(nameOrPath).isDirectory()) throw new UserError(`model ${nameOrPath} is a file; expected a model folder or a hub id (org/name)`);
    return nameOrPath;
  }
  const id = parseHubId(nameOrPath);
  if (!id) throw new UserError(`model folder ${nameOrPath} does not exist (and it is not a hub id like Qwen/Qwen2.5-0.5B-Instruct)`);
  if (id.revision && opts.revision && id.revision !== opts.revision) {
    throw new UserError(`model ${nameOrPath} names revision ${id.revision}, but --revision says ${opts.revision}`);
  }
  const env = opts.env ?? process.env;
  const revision = id.revision ?? opts.revision ?? 'main';
  const cacheDir = opts.cacheDir ?? hubCacheDir(env);
  const storage = repoFolder(cacheDir, id.repo);
  const cached = findCachedModel(cacheDir, id.repo, revision);
  if (cached.snapshot && cached.missing.length === 0) return cached.snapshot;

  const where = cached.snapshot ?? join(storage, 'snapshots', `<commit of ${revision}>`);
  const notCached = (reason: string) =>
    new UserError(
      `${id.repo}@${revision} is not in the Hugging Face cache and ${reason}: missing ${cached.missing.join(', ')} in ${where} (and there is no local folder ${nameOrPath})`,
    );
  if (opts.offline ?? isOffline(env)) throw notCached('HF_HUB_OFFLINE is set');

  const hubUrl = (opts.endpoint ?? env.HF_ENDPOINT ?? DEFAULT_ENDPOINT).replace(/\/+$/, '');
  const accessToken = opts.token ?? (env.HF_TOKEN || undefined);
  if (accessToken !== undefined && !accessToken.startsWith('hf_')) throw new UserError('HF_TOKEN must be a Hugging Face access token (it starts with "hf_")');
  const ctx = {
    repo: id.repo,
    storage,
    hubUrl,
    accessToken,
    fetch: retrying(opts.fetch ?? fetch),
    progress: opts.progress !== undefined ? opts.progress : isTrue(env.HF_HUB_DISABLE_PROGRESS_BARS) ? null : process.stderr,
  };
  try {
    return await download(ctx, revision, cached.commit);
  } catch (e) {
    if (e instanceof UserError) throw e;
    if (e instanceof HubApiError) throw hubError(e, id.repo, revision, hubUrl, nameOrPath);
    if (isNetworkError(e)) throw notCached(`${hubUrl} cannot be reached (${describeError(e)})`);
    throw e;
  }
}

/** fetch's failure to connect or to get an answer (undici throws TypeError "fetch failed" with a cause). */
function isNetworkError(e: unknown): boolean {
  return e instanceof TypeError && (e.message === 'fetch failed' || (e as { cause?: unknown }).cause !== undefined);
}

function hubError(e: HubApiError, repo: string, revision: string, hubUrl: string, asked: string): UserError {
  if (e.statusCode === 401 || e.statusCode === 403) {
    return new UserError(`${hubUrl} refused access to ${repo} (HTTP ${e.statusCode}): a gated or private model needs HF_TOKEN set to an access token that may read it`);
  }
  if (e.statusCode === 404) {
    return new UserError(`${hubUrl} has no model ${repo} at revision ${revision}, and there is no folder ${asked} here`);
  }
  return new UserError(`${hubUrl} answered HTTP ${e.statusCode} for ${repo}@${revision}: ${e.message}`);
}

/** Resolves the revision (unless the cache knows its commit), lists the files and fetches the needed ones. */
async function download(ctx: Omit<DownloadContext, 'commit'>, revision: string, knownCommit: string | null): Promise<string> {
  const commit =
    knownCommit ??
    (COMMIT_HASH.test(revision)
      ? revision
      : ((await modelInfo({ name: ctx.repo, revision, hubUrl: ctx.hubUrl, accessToken: ctx.accessToken, fetch: ctx.fetch, additionalFields: ['sha'] })) as { sha?: string }).sha);
  if (typeof commit !== 'string' || !COMMIT_HASH.test(commit)) throw new UserError(`${ctx.hubUrl} gave no commit hash for ${ctx.repo}@${revision}`);
  const full: DownloadContext = { ...ctx, commit };

  const files = new Map<string, RemoteFile>();
  for await (const entry of listFiles({ repo: ctx.repo, revision: commit, hubUrl: ctx.hubUrl, accessToken: ctx.accessToken, fetch: ctx.fetch })) {
    if (entry.type !== 'file') continue;
    files.set(entry.path, { path: entry.path, size: entry.size, oid: entry.oid ?? '', lfsSha256: entry.lfs?.oid ?? null });
  }
  const fetchFile = (name: string) => downloadToCache(full, files.get(name)!);
  for (const name of REQUIRED_FILES) {
    if (!files.has(name)) throw new UserError(`${ctx.hubUrl}/${ctx.repo} has no ${name} at ${revision}; tunekit needs a transformers model folder (config.json, tokenizer.json, safetensors weights)`);
  }
  let weights: string[];
  if (files.has(WEIGHTS_INDEX)) {
    weights = shardNames(await fetchFile(WEIGHTS_INDEX));
    const absent = weights.filter((s) => !files.has(s));
    if (absent.length) throw new UserError(`${ctx.hubUrl}/${ctx.repo}: ${WEIGHTS_INDEX} names ${absent.join(', ')}, which the repository does not have`);
  } else if (files.has(WEIGHTS)) {
    weights = [WEIGHTS];
  } else {
    const other = [...files.keys()].filter((f) => /\.(bin|pt|pth|gguf)$/.test(f));
    throw new UserError(`${ctx.hubUrl}/${ctx.repo} has no safetensors weights at ${revision}${other.length ? ` (only ${other.join(', ')})` : ''}; tunekit reads safetensors only`);
  }
  const wanted = [...REQUIRED_FILES, ...TOKENIZER_FILES.filter((f) => files.has(f) && !REQUIRED_FILES.includes(f)), ...weights];
  for (const name of wanted) await fetchFile(name);

  if (!COMMIT_HASH.test(revision)) {
    const ref = join(ctx.storage, 'refs', ...revision.split('/'));
    fs.mkdirSync(join(ref, '..'), { recursive: true });
    fs.writeFileSync(ref, commit);
  }
  return snapshotPath(ctx.storage, commit, '');
}
