/**
 * The one SQL path a knowledge base runs on, over two engines:
 *
 * - embedded: PGlite (real Postgres compiled to WebAssembly) with pgvector, its data in a folder
 *   on disk. Nothing to install or start; one process at a time (a lock file says which).
 * - server: any PostgreSQL with pgvector, through `pg`, selected by a `postgres://` URL.
 *
 * Both speak the same SQL, so the store above them has no branches. Results differ only in
 * how drivers map types (pg returns bigint and numeric as strings), so the store casts what it
 * selects to int or float8.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import type { PGlite } from '@electric-sql/pglite';

import { UserError } from '../errors.js';

export interface SqlQueryable {
  query<R = Record<string, unknown>>(text: string, params?: unknown[]): Promise<R[]>;
  /** Several statements, no parameters. */
  exec(text: string): Promise<void>;
}

export interface Sql extends SqlQueryable {
  readonly engine: 'pglite' | 'postgres';
  /** Where the data lives, for messages: a folder, or the URL without its password. */
  readonly label: string;
  /** Runs `fn` in a transaction: committed when it resolves, rolled back when it throws. */
  transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** An SQL connection over an open PGlite (which the caller may keep owning). */
export function pgliteSql(db: PGlite, label: string, onClose: () => Promise<void> = async () => {}): Sql {
  const wrap = (q: Pick<PGlite, 'query' | 'exec'>): SqlQueryable => ({
    async query<R>(text: string, params?: unknown[]) {
      return (await q.query<R>(text, params as unknown[])).rows;
    },
    async exec(text: string) {
      await q.exec(text);
    },
  });
  const base = wrap(db);
  return {
    engine: 'pglite',
    label,
    ...base,
    transaction: (fn) => db.transaction((tx) => fn(wrap(tx))),
    close: onClose,
  };
}

/** The pieces of `pg` used here, so the type does not leak into the rest. */
interface PgClient {
  query(text: string, params?: unknown[]): Promise<{ rows: unknown[] }>;
  end(): Promise<void>;
}

/** An SQL connection over a connected `pg` client. */
export function pgSql(client: PgClient, label: string): Sql {
  const q: SqlQueryable = {
    async query<R>(text: string, params?: unknown[]) {
      return (await client.query(text, params)).rows as R[];
    },
    async exec(text: string) {
      await client.query(text);
    },
  };
  // One client: transactions must not interleave.
  let queue: Promise<unknown> = Promise.resolve();
  return {
    engine: 'postgres',
    label,
    ...q,
    transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T> {
      const run = async (): Promise<T> => {
        await client.query('BEGIN');
        try {
          const out = await fn(q);
          await client.query('COMMIT');
          return out;
        } catch (e) {
          await client.query('ROLLBACK').catch(() => {});
          throw e;
        }
      };
      const next = queue.then(run, run);
      queue = next.catch(() => {});
      return next;
    },
    close: () => client.end(),
  };
}

export function isPostgresUrl(target: string): boolean {
  return /^postgres(?:ql)?:\/\//i.test(target);
}

/** The URL without its password, for messages. */
export function redactUrl(url: string): string {
  return url.replace(/^(postgres(?:ql)?:\/\/[^:/@]*):[^@]*@/i, '$1:***@');
}

/** Connects with `pg`; a refused or failed connection is the user's problem, said in one line. */
export async function connectPostgres(url: string): Promise<Sql> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => {}); // a dropped connection surfaces on the next query
  try {
    await client.connect();
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new UserError(`cannot connect to ${redactUrl(url)}: ${err.code ?? ''}${err.code ? ' ' : ''}${err.message}`.trim());
  }
  return pgSql(client as unknown as PgClient, redactUrl(url));
}

const MARKER = 'tunekit-kb.json';
const DATA = 'pgdata';
const LOCK = 'lock';
const openHere = new Set<string>();

/** True when `dir` holds an embedded knowledge base. */
export function isEmbeddedStore(dir: string): boolean {
  return existsSync(join(dir, MARKER)) && existsSync(join(dir, DATA, 'PG_VERSION'));
}

/**
 * Opens (or, with `create`, makes) the embedded store in `dir`. A lock file with the process id
 * keeps a second process out: two Postgres instances over one data folder would corrupt it.
 */
export async function openEmbeddedSql(dir: string, opts: { create: boolean; name: string }): Promise<Sql> {
  const abs = resolve(dir);
  if (!isEmbeddedStore(abs)) {
    if (!opts.create) {
      throw new UserError(`no knowledge base "${opts.name}" (looked in ${dir}); build one with: tunekit rag index DIR --kb ${opts.name}`);
    }
    if (existsSync(abs) && readdirSync(abs).some((f) => f !== MARKER && f !== DATA && f !== LOCK)) {
      throw new UserError(`${dir} exists and is not a tunekit knowledge base; choose another --kb`);
    }
  }
  if (openHere.has(abs)) throw new UserError(`knowledge base ${dir} is already open in this process`);
  mkdirSync(abs, { recursive: true });
  acquireLock(join(abs, LOCK), dir);
  openHere.add(abs);
  const release = (): void => {
    openHere.delete(abs);
    try {
      if (readFileSync(join(abs, LOCK), 'utf8').trim() === String(process.pid)) unlinkSync(join(abs, LOCK));
    } catch {
      // already gone
    }
  };
  process.once('exit', release);
  let db: PGlite;
  try {
    const [{ PGlite }, { vector }] = await Promise.all([import('@electric-sql/pglite'), import('@electric-sql/pglite-pgvector')]);
    const fresh = !existsSync(join(abs, DATA, 'PG_VERSION'));
    if (fresh) rmSync(join(abs, DATA), { recursive: true, force: true });
    db = await PGlite.create(join(abs, DATA), { extensions: { vector } });
    if (fresh) writeFileSync(join(abs, MARKER), `${JSON.stringify({ format: 'tunekit-kb', version: 1 }, null, 2)}\n`);
  } catch (e) {
    release();
    throw e;
  }
  return pgliteSql(db, dir, async () => {
    try {
      await db.close();
    } finally {
      process.removeListener('exit', release);
      release();
    }
  });
}

function acquireLock(path: string, label: string): void {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(path, String(process.pid), { flag: 'wx' });
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const pid = Number(readFileSync(path, 'utf8').trim());
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
      throw new UserError(
        `knowledge base ${label} is open in another process (pid ${pid}, e.g. a running "tunekit rag watch"); ` +
          `stop it first (or delete ${path} if no such process runs), or keep the knowledge base in PostgreSQL (--kb postgres://…) to share it`,
      );
    }
    unlinkSync(path); // left by a process that died
  }
  throw new UserError(`cannot lock knowledge base ${label}`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
