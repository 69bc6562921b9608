/**
 * Files into documents: Markdown (with YAML front matter), plain text, HTML, JSON / JSON lines
 * (one section per record, from chosen text fields) and PDF (one section per page).
 *
 * A document keeps its path, a title (front matter, first heading, `<title>`, the PDF's own, or
 * the file name) and a date: the front matter's `date` (or `updated`, `lastmod`…) when it has
 * one, else the file's modified time. Sections carry the heading path they sit under, or a
 * locator (`line 12`, `page 3`), which sources quote.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';

import { parse as parseYaml } from 'yaml';

import { FileFormatError, UserError } from '../errors.js';
import { htmlToText } from './html.js';

export type DocumentKind = 'markdown' | 'text' | 'html' | 'json' | 'pdf';

export interface DocumentSection {
  /** Headings above this text, outermost first, joined by ` › `; '' at the top. */
  heading: string;
  /** Where in the file: `line 12` (JSON lines), `record 3` (JSON array), `page 2` (PDF), or ''. */
  locator: string;
  /** Paragraphs separated by blank lines. */
  text: string;
}

export interface LoadedDocument {
  path: string;
  kind: DocumentKind;
  title: string;
  /** From the front matter; null when the file has none (the indexer then uses its mtime). */
  date: Date | null;
  sections: DocumentSection[];
}

export interface LoadOptions {
  /** JSON / JSONL: the fields whose text is indexed (joined by newlines); default every string field. */
  textFields?: readonly string[] | null;
  /** JSON / JSONL: the field that titles each record (its section heading). */
  titleField?: string | null;
}

/** A file that cannot be indexed (binary, unreadable): the indexer warns and goes on. */
export class SkippedFile extends Error {
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {
    super(`${path}: ${reason}`);
    this.name = 'SkippedFile';
  }
}

const KINDS: Record<string, DocumentKind> = {
  '.md': 'markdown', '.markdown': 'markdown', '.mdx': 'markdown',
  '.txt': 'text', '.text': 'text',
  '.html': 'html', '.htm': 'html', '.xhtml': 'html',
  '.json': 'json', '.jsonl': 'json', '.ndjson': 'json',
  '.pdf': 'pdf',
};

export const DOCUMENT_EXTENSIONS = Object.keys(KINDS);

/** The kind a file is read as; unknown extensions are plain text. */
export function documentKind(path: string): DocumentKind {
  return KINDS[extname(path).toLowerCase()] ?? 'text';
}

export interface CollectedFiles {
  /** Absolute paths, sorted. */
  files: string[];
  /** The inputs as absolute paths: documents under them that no longer exist were removed. */
  roots: string[];
  /** Files in folders skipped because their extension is not a document type. */
  ignored: string[];
}

/**
 * The document files named by `inputs`: files as given (any extension), folders walked
 * recursively for the document extensions, skipping hidden entries and node_modules.
 */
export function collectFiles(inputs: readonly string[]): CollectedFiles {
  const files = new Set<string>();
  const ignored: string[] = [];
  const roots: string[] = [];
  const walk = (dir: string): void => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch (e) {
      throw new UserError(`cannot read folder ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    for (const entry of entries) {
      if (entry.name.startsWith('.') || entry.name === 'node_modules') continue;
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.isFile() || entry.isSymbolicLink()) {
        if (KINDS[extname(entry.name).toLowerCase()]) files.add(path);
        else ignored.push(path);
      }
    }
  };
  for (const input of inputs) {
    const abs = resolve(input);
    let st: Stats;
    try {
      st = statSync(abs);
    } catch {
      throw new UserError(`${input} does not exist`);
    }
    roots.push(abs);
    if (st.isDirectory()) walk(abs);
    else files.add(abs);
  }
  return { files: [...files].sort(), roots, ignored };
}

/** The file's bytes as UTF-8 text; binary or undecodable files are skipped. */
function readText(path: string, bytes: Buffer): string {
  const head = bytes.subarray(0, 8192);
  if (head.includes(0)) throw new SkippedFile(path, 'binary file (it contains NUL bytes)');
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new SkippedFile(path, 'not UTF-8 text');
  }
}

export function readFileBytes(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new SkippedFile(path, `unreadable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** Reads and parses one file. Throws {@link SkippedFile} or a {@link FileFormatError}. */
export async function loadDocument(path: string, opts: LoadOptions = {}, bytes: Buffer = readFileBytes(path)): Promise<LoadedDocument> {
  const kind = documentKind(path);
  const name = basename(path, extname(path));
  if (kind === 'pdf') return loadPdf(path, bytes, name);
  const text = readText(path, bytes).replace(/\r\n?/g, '\n');
  switch (kind) {
    case 'markdown':
      return loadMarkdown(path, text, name);
    case 'html': {
      const { title, text: body } = htmlToText(text);
      const sections = markdownSections(body);
      return { path, kind, title: title ?? firstHeading(sections) ?? name, date: null, sections };
    }
    case 'json':
      return { path, kind, title: name, date: null, sections: jsonSections(path, text, opts) };
    default:
      return { path, kind: 'text', title: name, date: null, sections: [{ heading: '', locator: '', text: text.trim() }] };
  }
}

const DATE_KEYS = ['date', 'updated', 'last_modified', 'lastmod', 'modified', 'last_updated'];

function loadMarkdown(path: string, source: string, name: string): LoadedDocument {
  let body = source.replace(/^\uFEFF/, '');
  let front: Record<string, unknown> = {};
  const fm = /^---[ \t]*\n([\s\S]*?)\n(?:---|\.\.\.)[ \t]*(?:\n|$)/.exec(body);
  if (fm) {
    let parsed: unknown;
    try {
      parsed = parseYaml(fm[1]);
    } catch (e) {
      throw new FileFormatError(path, `front matter is not valid YAML (${(e as Error).message.split('\n')[0]})`);
    }
    if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) front = parsed as Record<string, unknown>;
    body = body.slice(fm[0].length);
  }
  let date: Date | null = null;
  for (const key of DATE_KEYS) {
    if (front[key] == null) continue;
    const value = front[key];
    const d = value instanceof Date ? value : new Date(String(value));
    if (Number.isNaN(d.getTime())) {
      throw new FileFormatError(path, `front matter ${key} "${String(value)}" is not a date (expected e.g. 2026-11-28)`);
    }
    date = d;
    break;
  }
  const sections = markdownSections(body);
  const title = typeof front.title === 'string' && front.title.trim() ? front.title.trim() : firstHeading(sections) ?? name;
  return { path, kind: 'markdown', title, date, sections };
}

function firstHeading(sections: readonly DocumentSection[]): string | null {
  for (const s of sections) if (s.heading) return s.heading.split(' › ')[0];
  return null;
}

/**
 * Cuts Markdown at its ATX headings (`#` … `######`, outside code fences); each section's
 * heading is the path of headings above it.
 */
export function markdownSections(body: string): DocumentSection[] {
  const sections: DocumentSection[] = [];
  const stack: { level: number; text: string }[] = [];
  let lines: string[] = [];
  let fence: string | null = null;
  const flush = (): void => {
    const text = lines.join('\n').replace(/<!--[\s\S]*?-->/g, '').replace(/\n{3,}/g, '\n\n').trim();
    if (text) sections.push({ heading: stack.map((h) => h.text).join(' › '), locator: '', text });
    lines = [];
  };
  for (const line of body.split('\n')) {
    const fenceMatch = /^\s*(```+|~~~+)/.exec(line);
    if (fenceMatch) {
      if (fence === null) fence = fenceMatch[1][0];
      else if (fenceMatch[1][0] === fence) fence = null;
      lines.push(line);
      continue;
    }
    const h = fence === null ? /^(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line) : null;
    if (!h) {
      lines.push(line);
      continue;
    }
    flush();
    const level = h[1].length;
    while (stack.length && stack[stack.length - 1].level >= level) stack.pop();
    stack.push({ level, text: h[2] });
  }
  flush();
  return sections;
}

function jsonSections(path: string, text: string, opts: LoadOptions): DocumentSection[] {
  const records: { value: unknown; locator: string }[] = [];
  if (!text.trim()) return [];
  const lines = extname(path).toLowerCase() !== '.json';
  let whole: unknown;
  let parsedWhole = false;
  if (!lines) {
    try {
      whole = JSON.parse(text);
      parsedWhole = true;
    } catch {
      // A .json file may hold JSON lines, as Hugging Face datasets accepts.
    }
  }
  if (parsedWhole) {
    if (Array.isArray(whole)) whole.forEach((value, i) => records.push({ value, locator: `record ${i + 1}` }));
    else records.push({ value: whole, locator: '' });
  } else {
    text.split('\n').forEach((line, i) => {
      if (!line.trim()) return;
      try {
        records.push({ value: JSON.parse(line), locator: `line ${i + 1}` });
      } catch (e) {
        throw new FileFormatError(path, `line ${i + 1}: not valid JSON (${(e as Error).message})`);
      }
    });
  }
  const sections: DocumentSection[] = [];
  for (const { value, locator } of records) {
    const where = locator ? `${locator}: ` : '';
    let body: string;
    let heading = '';
    if (typeof value === 'string') body = value;
    else if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      const record = value as Record<string, unknown>;
      if (opts.textFields && opts.textFields.length) {
        const parts: string[] = [];
        for (const field of opts.textFields) {
          const v = record[field];
          if (typeof v !== 'string') {
            throw new FileFormatError(path, `${where}field "${field}" ${v === undefined ? 'is missing' : 'is not a string'} (chosen with --text-field)`);
          }
          parts.push(v);
        }
        body = parts.join('\n');
      } else {
        body = Object.values(record).filter((v): v is string => typeof v === 'string').join('\n');
      }
      if (opts.titleField) {
        const t = record[opts.titleField];
        if (typeof t === 'string') heading = t;
      }
    } else {
      throw new FileFormatError(path, `${where}expected an object or a string, got ${Array.isArray(value) ? 'an array' : typeof value}`);
    }
    if (body.trim()) sections.push({ heading, locator, text: body.trim() });
  }
  return sections;
}

async function loadPdf(path: string, bytes: Buffer, name: string): Promise<LoadedDocument> {
  if (bytes.subarray(0, 1024).indexOf('%PDF-') < 0) throw new SkippedFile(path, 'not a PDF file (no %PDF- header)');
  const { getDocumentProxy } = await import('unpdf');
  let pages: string[];
  let title: string | null = null;
  try {
    const pdf = await getDocumentProxy(new Uint8Array(bytes), { verbosity: 0 });
    try {
      const meta = await pdf.getMetadata().catch(() => null);
      const t = (meta?.info as { Title?: unknown } | undefined)?.Title;
      if (typeof t === 'string' && t.trim()) title = t.trim();
      pages = [];
      for (let i = 1; i <= pdf.numPages; i++) {
        const page = await pdf.getPage(i);
        const content = await page.getTextContent();
        let text = '';
        for (const item of content.items) {
          if (!('str' in item)) continue;
          text += item.str + (item.hasEOL ? '\n' : '');
        }
        pages.push(text);
      }
    } finally {
      await pdf.destroy();
    }
  } catch (e) {
    throw new SkippedFile(path, `unreadable PDF (${(e as Error).message})`);
  }
  const sections: DocumentSection[] = [];
  pages.forEach((page, i) => {
    const text = joinPdfLines(page);
    if (text) sections.push({ heading: '', locator: `page ${i + 1}`, text });
  });
  return { path, kind: 'pdf', title: title ?? name, date: null, sections };
}

/**
 * PDF text comes as visual lines: a blank line is a paragraph break, a line ending in sentence
 * punctuation ends a paragraph too, and other line breaks are joined (with a space between
 * Latin words, none between Chinese characters).
 */
function joinPdfLines(page: string): string {
  const paragraphs: string[] = [];
  let current = '';
  for (const raw of page.split('\n')) {
    const line = raw.trim();
    if (!line) {
      if (current) paragraphs.push(current);
      current = '';
      continue;
    }
    if (!current) current = line;
    else current += /[\p{Script=Han}，。、；：！？]$/u.test(current) && /^\p{Script=Han}/u.test(line) ? line : ` ${line}`;
    if (/[。！？.!?:：]$/.test(line)) {
      paragraphs.push(current);
      current = '';
    }
  }
  if (current) paragraphs.push(current);
  return paragraphs.join('\n\n').trim();
}
