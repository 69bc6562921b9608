import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';

import { FileFormatError, UserError } from '../src/errors.js';
import { citedSources, numberSources, questionLanguage } from '../src/rag/answer.js';
import { htmlToText } from '../src/rag/html.js';
import { collectFiles, loadDocument, markdownSections, SkippedFile } from '../src/rag/loaders.js';
import type { LoadedDocument } from '../src/rag/loaders.js';
import { lexicalCoverage, preferNewer, reciprocalRankFusion } from '../src/rag/search.js';
import type { SearchHit } from '../src/rag/search.js';
import { chunkHeader, splitDocument, splitSentences } from '../src/rag/split.js';
import { lexicalTerms, queryWords, stem } from '../src/rag/terms.js';

const scratch = mkdtempSync(join(tmpdir(), 'tunekit-rag-text-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
const DOCS = join(import.meta.dirname, '..', 'examples', 'kb', 'docs');

function file(name: string, content: string | Buffer): string {
  const path = join(scratch, name);
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, content);
  return path;
}

/** One token per character: sizes are easy to reason about. */
const chars = (t: string): number => [...t].length;

describe('sentences and chunks', () => {
  test('sentences end at 。！？； and at .!? before a space, keeping their punctuation', () => {
    assert.deepEqual(splitSentences('营业时间是十点。周末呢？九点！好的；谢谢'), ['营业时间是十点。', '周末呢？', '九点！', '好的；', '谢谢']);
    assert.deepEqual(splitSentences('It costs ¥3.5 today. Really?! Yes."Quoted." End'), ['It costs ¥3.5 today.', 'Really?!', 'Yes."Quoted."', 'End']);
    assert.deepEqual(splitSentences('他说：“好。”然后走了。'), ['他说：“好。”', '然后走了。']);
  });

  test('paragraphs pack into chunks within the budget; long ones split at sentences, with overlap', () => {
    const sentences = Array.from({ length: 12 }, (_, i) => `第${i}句话说了一些关于小笼包的事情。`);
    const doc: LoadedDocument = {
      path: 'x.md', kind: 'markdown', title: 'T', date: null,
      sections: [
        { heading: 'A', locator: '', text: `短段落一。\n\n短段落二。\n\n${sentences.join('')}` },
        { heading: 'A › B', locator: '', text: 'Another section.' },
      ],
    };
    const chunks = splitDocument(doc, { chunkTokens: 60, overlapTokens: 20, countTokens: chars });
    for (const c of chunks) assert.ok(c.tokens <= 60, `chunk of ${c.tokens} tokens: ${c.text}`);
    // Short paragraphs stay whole; the long one's sentences fill the rest of the chunk.
    assert.ok(chunks[0].text.startsWith('T › A\n短段落一。\n\n短段落二。\n\n第0句'), chunks[0].text);
    // Every sentence lands in some chunk, whole.
    for (const s of sentences) assert.ok(chunks.some((c) => c.text.includes(s)), s);
    // Consecutive chunks of the long paragraph share a sentence (the overlap).
    const long = chunks.filter((c) => c.heading === 'A').slice(1);
    assert.ok(long.length >= 3);
    for (let i = 1; i < long.length; i++) {
      const prevLast = splitSentences(long[i - 1].text.split('\n').pop()!).pop()!;
      assert.ok(long[i].text.includes(prevLast), `chunk ${i} does not repeat "${prevLast}"`);
    }
    // Sections never share a chunk.
    assert.equal(chunks.at(-1)!.text, 'T › A › B\nAnother section.');
    assert.deepEqual(chunks.map((c) => c.ord), chunks.map((_, i) => i));
  });

  test('a sentence longer than a chunk is cut at a comma or space that fits', () => {
    const words = Array.from({ length: 40 }, (_, i) => `word${i}`).join(' ');
    const doc: LoadedDocument = { path: 'x.txt', kind: 'text', title: 't', date: null, sections: [{ heading: '', locator: '', text: words }] };
    const chunks = splitDocument(doc, { chunkTokens: 64, overlapTokens: 0, countTokens: chars });
    assert.ok(chunks.length > 3);
    for (const c of chunks) assert.ok(c.tokens <= 64);
    const body = chunks.map((c) => c.text.split('\n')[1]).join(' ');
    assert.equal(body, words, 'nothing lost or cut inside a word');
  });

  test('the header names title, headings and locator without repeating the title', () => {
    assert.equal(chunkHeader('Menu', 'Menu › Soups', ''), 'Menu › Soups');
    assert.equal(chunkHeader('faq', '', 'line 3'), 'faq (line 3)');
    assert.equal(chunkHeader('今日优惠', '会员', ''), '今日优惠 › 会员');
  });
});

describe('lexical terms', () => {
  test('Chinese goes through jieba (search mode), English is lower-cased and stemmed, stop words go', () => {
    const terms = lexicalTerms('营业时间：周末10点开门。Opening hours on Sundays!');
    for (const t of ['营业', '时间', '营业时间', '周末', '开门', '10', 'open', 'hour', 'sunday']) assert.ok(terms.includes(t), t);
    assert.ok(!terms.includes('on') && !terms.includes('：'));
    assert.deepEqual(lexicalTerms('我们的'), []);
    assert.equal(stem('dumplings'), 'dumpling');
    assert.equal(stem('opening'), 'open');
    assert.equal(stem('opened'), 'open');
    assert.equal(stem('berries'), 'berry');
    assert.equal(stem('bus'), 'bus');
  });

  test('query words keep a compound with its sub-words; coverage counts the share present', () => {
    const words = queryWords('今天有什么优惠活动');
    assert.deepEqual(words.find((w) => w.includes('优惠活动'))?.sort(), ['优惠', '优惠活动', '活动'].sort());
    const df = new Map([['优惠', 2], ['活动', 1], ['优惠活动', 1], ['今天', 1]]);
    const cover = lexicalCoverage(words, 10, df);
    assert.equal(cover(new Set()), 0);
    assert.ok(Math.abs(cover(new Set(words.flat())) - 1) < 1e-12);
    const partial = cover(new Set(['优惠']));
    assert.ok(partial > 0 && partial < 0.5, String(partial));
  });
});

describe('loaders', () => {
  test('Markdown: front matter date and title, heading paths, code fences are not headings', async () => {
    const path = file('promo.md', '---\ntitle: 今日优惠\ndate: 2026-11-28\n---\n# 优惠\n\n满100减20。\n\n## 会员\n\n```\n# not a heading\n```\n九折。\n');
    const doc = await loadDocument(path);
    assert.equal(doc.title, '今日优惠');
    assert.equal(doc.date?.toISOString(), '2026-11-28T00:00:00.000Z');
    assert.deepEqual(doc.sections.map((s) => s.heading), ['优惠', '优惠 › 会员']);
    assert.match(doc.sections[1].text, /# not a heading/);
    assert.deepEqual(markdownSections('text\n# A\nx\n### B\ny\n## C\nz').map((s) => s.heading), ['', 'A', 'A › B', 'A › C']);
  });

  test('a front matter date that is not a date names the file and the key', async () => {
    const path = file('bad-date.md', '---\ndate: someday\n---\ntext');
    await assert.rejects(loadDocument(path), (e: Error) => e instanceof FileFormatError && /bad-date\.md: front matter date "someday" is not a date/.test(e.message));
  });

  test('HTML: title, headings as sections, no scripts or styles, entities decoded', async () => {
    const doc = await loadDocument(join(DOCS, 'about.html'));
    assert.equal(doc.title, '关于小笼大师 About Xiaolong Master');
    assert.deepEqual(doc.sections.map((s) => s.heading), ['关于我们', '关于我们 › 地址与交通', 'About us', 'About us › Address & getting here']);
    const all = doc.sections.map((s) => s.text).join('\n');
    assert.ok(!/never indexed|font-family|<p>/.test(all));
    const t = htmlToText('<ul><li>a&amp;b</li><li>&#x4e2d;&#25991;</li></ul><table><tr><td>x</td><td>y</td></tr></table><p>one<br>two</p>');
    assert.equal(t.text, '- a&b\n- 中文\n\nx | y\n\none\ntwo');
  });

  test('JSON lines: one section per record from the chosen fields; a missing field names the line', async () => {
    const all = await loadDocument(join(DOCS, 'faq.jsonl'));
    assert.equal(all.sections.length, 10);
    assert.equal(all.sections[2].locator, 'line 3');
    assert.match(all.sections[2].text, /^有停车位吗？\n餐厅地下有停车场/);
    const answers = await loadDocument(join(DOCS, 'faq.jsonl'), { textFields: ['answer'], titleField: 'question' });
    assert.equal(answers.sections[2].heading, '有停车位吗？');
    assert.match(answers.sections[2].text, /^餐厅地下有停车场/);
    const bad = file('bad.jsonl', '{"answer": "x"}\n{"question": "q"}\n');
    await assert.rejects(loadDocument(bad, { textFields: ['answer'] }), /bad\.jsonl: line 2: field "answer" is missing/);
    const broken = file('broken.jsonl', '{"a": "x"}\n{oops\n');
    await assert.rejects(loadDocument(broken), /broken\.jsonl: line 2: not valid JSON/);
    const array = await loadDocument(file('arr.json', JSON.stringify([{ text: 'one' }, 'two'])));
    assert.deepEqual(array.sections.map((s) => [s.locator, s.text]), [['record 1', 'one'], ['record 2', 'two']]);
  });

  test('PDF: one section per page, its own title, lines joined into paragraphs', async () => {
    const doc = await loadDocument(join(DOCS, 'allergens.pdf'));
    assert.equal(doc.title, 'Allergen information');
    assert.deepEqual(doc.sections.map((s) => s.locator), ['page 1', 'page 2']);
    assert.match(doc.sections[0].text, /Crab roe soup dumplings contain crustaceans \(crab\), wheat and soy\./);
    assert.match(doc.sections[1].text, /peanut oil/);
  });

  test('binary and unreadable files are skipped with the reason', async () => {
    const bin = file('image.md', Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 0, 0, 1]));
    await assert.rejects(loadDocument(bin), (e: Error) => e instanceof SkippedFile && /binary/.test(e.message) && e.message.includes('image.md'));
    const latin1 = file('latin1.txt', Buffer.from([0x63, 0x61, 0x66, 0xe9]));
    await assert.rejects(loadDocument(latin1), (e: Error) => e instanceof SkippedFile && /not UTF-8/.test(e.message));
    const fakePdf = file('fake.pdf', 'hello');
    await assert.rejects(loadDocument(fakePdf), (e: Error) => e instanceof SkippedFile && /not a PDF/.test(e.message));
    await assert.rejects(loadDocument(join(scratch, 'nope.txt')), (e: Error) => e instanceof SkippedFile && /unreadable \(ENOENT\)/.test(e.message));
  });

  test('folders are walked for document types; hidden entries and other types are left out', () => {
    file('walk/a.md', 'a');
    file('walk/sub/b.txt', 'b');
    file('walk/.hidden/c.md', 'c');
    file('walk/d.png', 'png');
    const { files, ignored } = collectFiles([join(scratch, 'walk')]);
    assert.deepEqual(files.map((f) => f.slice(scratch.length + 1)), ['walk/a.md', 'walk/sub/b.txt']);
    assert.deepEqual(ignored.map((f) => f.slice(scratch.length + 1)), ['walk/d.png']);
    assert.throws(() => collectFiles([join(scratch, 'missing')]), (e: Error) => e instanceof UserError && /missing does not exist/.test(e.message));
  });
});

function hit(path: string, text: string, dateMs: number): SearchHit {
  return {
    rank: 0, chunkId: 0, path, title: '', heading: '', locator: '', text, date: '', dateMs, dateSource: 'front matter', score: 0,
    scores: { bm25: null, lexical: 0, dense: null, rrf: null, rerank: null }, relevant: true,
  };
}

describe('fusion, freshness, citations', () => {
  test('reciprocal rank fusion adds 1/(k + rank) over the lists', () => {
    const fused = reciprocalRankFusion([[1, 2, 3], [3, 1]], 60);
    assert.equal(fused.get(1), 1 / 61 + 1 / 62);
    assert.equal(fused.get(2), 1 / 62);
    assert.equal(fused.get(3), 1 / 63 + 1 / 61);
  });

  test('freshness puts the newer of two documents on the same subject first, and moves nothing else', () => {
    const old = hit('/kb/old.md', '国庆优惠：全场八折，满100元减30元，蟹粉小笼包买一送一。', Date.UTC(2026, 9, 1));
    const other = hit('/kb/hours.txt', '营业时间：周一至周五上午10点开门。', Date.UTC(2026, 10, 29));
    const fresh = hit('/kb/new.md', '今日优惠：全场满100元减20元，蟹粉小笼包第二笼半价。', Date.UTC(2026, 10, 28));
    assert.deepEqual(preferNewer([old, other, fresh]).map((h) => h.path), ['/kb/new.md', '/kb/hours.txt', '/kb/old.md']);
    assert.deepEqual(preferNewer([other, old]).map((h) => h.path), ['/kb/hours.txt', '/kb/old.md']);
  });

  test('sources are numbered per document; citations are read in any common form', () => {
    const a = { ...hit('/kb/a.md', 'x', 0), heading: 'H1' };
    const b = hit('/kb/b.md', 'y', 0);
    const a2 = { ...hit('/kb/a.md', 'z', 0), heading: 'H2' };
    const { sources, groups } = numberSources([a, b, a2]);
    assert.deepEqual(sources.map((s) => [s.n, s.path, s.sections]), [[1, '/kb/a.md', ['H1', 'H2']], [2, '/kb/b.md', []]]);
    assert.equal(groups[0].length, 2);
    assert.deepEqual(citedSources('满100减20 [2]，会员九折[1][2]。See [1, 3] and [9].', 3), [2, 1, 3]);
    assert.deepEqual(citedSources('无引用', 2), []);
    assert.equal(questionLanguage('周末几点开门'), 'zh');
    assert.equal(questionLanguage('When do you open?'), 'en');
  });
});
