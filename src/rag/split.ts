/**
 * Documents into chunks sized in tokens of the embedding model's tokenizer.
 *
 * Structure first: a chunk never crosses a section (a Markdown heading, a JSON record, a PDF
 * page), and whole paragraphs are packed while they fit. A paragraph too long for one chunk is
 * cut into lines, then sentences — at `。！？；` and at `.!?` followed by a space — and a sentence
 * still too long is cut at the last comma or space that fits. Consecutive chunks of one section
 * share up to `overlapTokens` of whole sentences or paragraphs, so a fact that straddles a cut is
 * whole in one of them. Each chunk starts with its title and heading path (`Menu › Soups`), which
 * both BM25 and the embedding see.
 */
import type { DocumentSection, LoadedDocument } from './loaders.js';

export interface SplitOptions {
  /** Most tokens in a chunk, its title line included. */
  chunkTokens: number;
  /** Tokens of trailing text repeated at the start of the next chunk of the same section. */
  overlapTokens: number;
  countTokens: (text: string) => number;
}

export interface Chunk {
  /** Position in the document, from 0. */
  ord: number;
  heading: string;
  locator: string;
  /** The title line, a newline, then the body. */
  text: string;
  tokens: number;
}

interface Unit {
  text: string;
  tokens: number;
  /** Put before this unit when it follows another: '\n\n' (paragraph), '\n' (line), ' ' or ''. */
  sep: string;
}

const CJK_END = '。！？；';
const LATIN_END = '.!?';
const CLOSERS = '”’」』）)"\']';

/** Sentences of one line, their end punctuation (and closing quotes) kept. */
export function splitSentences(line: string): string[] {
  const out: string[] = [];
  let start = 0;
  let i = 0;
  while (i < line.length) {
    const c = line[i];
    const cjk = CJK_END.includes(c);
    if (!cjk && !LATIN_END.includes(c)) {
      i++;
      continue;
    }
    let j = i + 1;
    while (j < line.length && (CJK_END.includes(line[j]) || LATIN_END.includes(line[j]))) j++;
    while (j < line.length && CLOSERS.includes(line[j])) j++;
    if (cjk || j === line.length || /\s/.test(line[j])) {
      const sentence = line.slice(start, j).trim();
      if (sentence) out.push(sentence);
      start = j;
    }
    i = j;
  }
  const rest = line.slice(start).trim();
  if (rest) out.push(rest);
  return out;
}

function sentenceSep(prev: string, next: string): string {
  return /[\p{Script=Han}\u3000-\u303f\uff00-\uffef]$/u.test(prev) || /^[\p{Script=Han}\u3000-\u303f\uff00-\uffef]/u.test(next) ? '' : ' ';
}

/** Cuts `text` into pieces of at most `budget` tokens, preferring a comma or a space. */
function hardSplit(text: string, budget: number, count: (t: string) => number): string[] {
  const out: string[] = [];
  let rest = text;
  while (rest && count(rest) > budget) {
    // Longest prefix within budget, by binary search over characters.
    let lo = 1;
    let hi = rest.length;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if (count(rest.slice(0, mid)) <= budget) lo = mid;
      else hi = mid - 1;
    }
    let cut = lo;
    const window = rest.slice(0, lo);
    const soft = Math.max(window.lastIndexOf('，'), window.lastIndexOf(','), window.lastIndexOf('、'), window.lastIndexOf(' '));
    if (soft > lo / 2) cut = soft + 1;
    // Never cut a surrogate pair.
    if (cut < rest.length && /[\uD800-\uDBFF]/.test(rest[cut - 1])) cut = Math.max(1, cut - 1);
    out.push(rest.slice(0, cut).trim());
    rest = rest.slice(cut).trimStart();
  }
  if (rest.trim()) out.push(rest.trim());
  return out.filter(Boolean);
}

function sectionUnits(section: DocumentSection, budget: number, count: (t: string) => number): Unit[] {
  const units: Unit[] = [];
  const paragraphs = section.text.split(/\n[ \t]*\n/).map((p) => p.trim()).filter(Boolean);
  for (const paragraph of paragraphs) {
    const tokens = count(paragraph);
    if (tokens <= budget) {
      units.push({ text: paragraph, tokens, sep: '\n\n' });
      continue;
    }
    let first = true;
    for (const line of paragraph.split('\n').map((l) => l.trim()).filter(Boolean)) {
      let prev = '';
      for (const sentence of splitSentences(line)) {
        const pieces = count(sentence) <= budget ? [sentence] : hardSplit(sentence, budget, count);
        for (const piece of pieces) {
          const sep = first ? '\n\n' : prev ? sentenceSep(prev, piece) : '\n';
          units.push({ text: piece, tokens: count(piece), sep });
          first = false;
          prev = piece;
        }
      }
    }
  }
  return units;
}

/** The line a chunk starts with: the title and the heading path, without repeating the title. */
export function chunkHeader(title: string, heading: string, locator: string): string {
  const path = heading && (heading === title || heading.startsWith(`${title} › `)) ? heading : [title, heading].filter(Boolean).join(' › ');
  return locator ? `${path} (${locator})` : path;
}

export function splitDocument(doc: LoadedDocument, opts: SplitOptions): Chunk[] {
  if (!(opts.chunkTokens >= 16)) throw new Error(`splitDocument: chunkTokens must be at least 16, got ${opts.chunkTokens}`);
  const count = opts.countTokens;
  const chunks: Chunk[] = [];
  for (const section of doc.sections) {
    const header = chunkHeader(doc.title, section.heading, section.locator);
    const budget = Math.max(8, opts.chunkTokens - count(header) - 1);
    const overlap = Math.min(opts.overlapTokens, Math.floor(budget / 2));
    const units = sectionUnits(section, budget, count);
    let current: Unit[] = [];
    let used = 0;
    const emit = (): void => {
      const body = current.map((u, i) => (i === 0 ? u.text : u.sep + u.text)).join('');
      const text = `${header}\n${body}`;
      chunks.push({ ord: chunks.length, heading: section.heading, locator: section.locator, text, tokens: count(text) });
    };
    for (const unit of units) {
      if (current.length && used + unit.tokens > budget) {
        emit();
        // Carry whole trailing units (never the whole chunk), up to the overlap, that leave room
        // for this one.
        const carried: Unit[] = [];
        let carriedTokens = 0;
        for (let i = current.length - 1; i >= 1; i--) {
          const u = current[i];
          if (carriedTokens + u.tokens > overlap || carriedTokens + u.tokens + unit.tokens > budget) break;
          carried.unshift(u);
          carriedTokens += u.tokens;
        }
        current = carried;
        used = carriedTokens;
      }
      current.push(unit);
      used += unit.tokens;
    }
    if (current.length) emit();
  }
  return chunks;
}
