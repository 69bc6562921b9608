import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';

import { readFileRecords, readRecords, listDataFiles, peekFirstRecord } from '../src/data/files.js';
import { FileFormatError, UserError } from '../src/errors.js';

const scratch = mkdtempSync(join(tmpdir(), 'tunekit-data-files-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

function write(name: string, content: string | object): string {
  const path = join(scratch, name);
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
  return path;
}

describe('reading dataset files', () => {
  test('a JSON array: one record per element, rows counted from 1', () => {
    const file = write('a.json', [{ instruction: 'q1', output: 'a1' }, { instruction: 'q2', output: 'a2' }]);
    const records = readFileRecords(file);
    assert.deepEqual(records, [
      { value: { instruction: 'q1', output: 'a1' }, source: { file, row: 1 } },
      { value: { instruction: 'q2', output: 'a2' }, source: { file, row: 2 } },
    ]);
  });

  test('JSON lines: blank lines skipped, each record knows its line', () => {
    const file = write('b.jsonl', '{"text": "one"}\n\n{"text": "two"}\r\n');
    assert.deepEqual(readFileRecords(file), [
      { value: { text: 'one' }, source: { file, row: 1, line: 1 } },
      { value: { text: 'two' }, source: { file, row: 2, line: 3 } },
    ]);
  });

  test('invalid JSON in a .jsonl names file:line', () => {
    const file = write('bad.jsonl', '{"text": "one"}\n{"text": oops}\n');
    assert.throws(() => readFileRecords(file), (err: unknown) => {
      assert.ok(err instanceof FileFormatError);
      assert.equal(err.file, `${file}:2`);
      assert.match(err.message, new RegExp(`^${escape(file)}:2: not valid JSON`));
      return true;
    });
  });

  test('a .json that is not an array of objects names the file', () => {
    const obj = write('obj.json', { instruction: 'q', output: 'a' });
    assert.throws(() => readFileRecords(obj), { message: new RegExp(`^${escape(obj)}: expected a JSON array of objects .*got an object$`) });
    const broken = write('broken.json', '[{"instruction": "q",]');
    assert.throws(() => readFileRecords(broken), (err: unknown) => err instanceof FileFormatError && err.file === broken);
  });

  test('a .json holding JSON lines is read as JSON lines', () => {
    const file = write('lines.json', '{"text": "a"}\n{"text": "b"}\n');
    assert.deepEqual(readFileRecords(file).map((r) => r.value), [{ text: 'a' }, { text: 'b' }]);
  });

  test('.txt: one document per blank-line-separated block, or per file', () => {
    const file = write('c.txt', 'first line\nstill first\n\n\n  \nsecond\n\nthird\n');
    assert.deepEqual(readFileRecords(file), [
      { value: { text: 'first line\nstill first' }, source: { file, row: 1, line: 1 } },
      { value: { text: 'second' }, source: { file, row: 2, line: 6 } },
      { value: { text: 'third' }, source: { file, row: 3, line: 8 } },
    ]);
    assert.deepEqual(readFileRecords(file, { textSplit: 'file' }).map((r) => r.value), [
      { text: 'first line\nstill first\n\n\n  \nsecond\n\nthird' },
    ]);
  });

  test('a folder: its data files in name order, dataset_info.json and other files skipped', () => {
    write('dir/b.jsonl', '{"text": "from b"}\n');
    write('dir/a.json', [{ text: 'from a' }]);
    write('dir/dataset_info.json', { x: { file_name: 'a.json' } });
    write('dir/README.md', '# notes');
    const dir = join(scratch, 'dir');
    assert.deepEqual(listDataFiles(dir), [join(dir, 'a.json'), join(dir, 'b.jsonl')]);
    const extra = write('extra.json', [{ text: 'extra' }]);
    assert.deepEqual(readRecords([dir, extra]).map((r) => r.value), [{ text: 'from a' }, { text: 'from b' }, { text: 'extra' }]);
  });

  test('missing paths, unsupported types and empty folders are user errors', () => {
    assert.throws(() => readRecords(join(scratch, 'nope.json')), (err: unknown) => err instanceof UserError && /no such file or folder/.test(err.message));
    const csv = write('d.csv', 'a,b\n');
    assert.throws(() => readRecords(csv), /unsupported file type "\.csv"; tunekit reads \.json, \.jsonl and \.txt/);
    mkdirSync(join(scratch, 'empty'));
    assert.throws(() => readRecords(join(scratch, 'empty')), /holds no \.json, \.jsonl or \.txt files/);
  });

  test('peekFirstRecord reads only what it needs', () => {
    const file = write('peek.jsonl', '{"messages": []}\n{not json\n');
    assert.deepEqual(peekFirstRecord(file), { messages: [] });
    assert.equal(peekFirstRecord(write('empty.jsonl', '\n')), undefined);
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
