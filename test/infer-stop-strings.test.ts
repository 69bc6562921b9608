/**
 * StopStringWatcher: streamed text is cut before a stop string, and text that might begin one is
 * held back until it is clear either way.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { StopStringWatcher } from '../src/infer/stop-strings.js';

/** Pushes each piece; returns what was shown after each push, then the flush, and the watcher. */
function feed(stops: string[], pieces: string[]): { shown: string[]; flushed: string; w: StopStringWatcher } {
  const w = new StopStringWatcher(stops);
  const shown = pieces.map((p) => w.push(p));
  const flushed = w.flush();
  return { shown, flushed, w };
}

describe('StopStringWatcher', () => {
  it('without stop strings shows every piece at once', () => {
    const { shown, flushed, w } = feed([], ['Hel', 'lo', ' world']);
    assert.deepEqual(shown, ['Hel', 'lo', ' world']);
    assert.equal(flushed, '');
    assert.equal(w.stopped, false);
    assert.equal(w.fullText, 'Hello world');
  });

  it('cuts the text before the stop string and stops', () => {
    const { shown, flushed, w } = feed(['STOP'], ['one two STOP three']);
    assert.deepEqual(shown, ['one two ']);
    assert.equal(flushed, '');
    assert.equal(w.stopped, true);
    assert.equal(w.fullText, 'one two ');
  });

  it('ignores everything pushed after it stopped', () => {
    const w = new StopStringWatcher(['\n\n']);
    assert.equal(w.push('a\n\nb'), 'a');
    assert.equal(w.push('more'), '');
    assert.equal(w.flush(), '');
    assert.equal(w.fullText, 'a');
  });

  it('holds back a possible start of a stop string, then releases it when it is not one', () => {
    const w = new StopStringWatcher(['</answer>']);
    assert.equal(w.push('x </'), 'x ');
    assert.equal(w.push('ans'), '');
    assert.equal(w.push('wer'), '');
    // '</answers' cannot begin '</answer>' any more: everything is released.
    assert.equal(w.push('s!'), '</answers!');
    assert.equal(w.stopped, false);
    assert.equal(w.flush(), '');
    assert.equal(w.fullText, 'x </answers!');
  });

  it('releases held-back text at the end of generation', () => {
    const { shown, flushed, w } = feed(['<|end|>'], ['done <|e']);
    assert.deepEqual(shown, ['done ']);
    assert.equal(flushed, '<|e');
    assert.equal(w.stopped, false);
    assert.equal(w.fullText, 'done <|e');
  });

  it('finds a stop string split across pushes, one character at a time', () => {
    const text = 'abc User: ignored';
    const w = new StopStringWatcher(['User:']);
    let shown = '';
    for (const ch of text) shown += w.push(ch);
    assert.equal(w.stopped, true);
    assert.equal(shown, 'abc ');
    assert.equal(w.fullText, 'abc ');
  });

  it('finds a stop string split across pushes whose first part was a possible start', () => {
    const w = new StopStringWatcher(['###']);
    assert.equal(w.push('a#'), 'a');
    assert.equal(w.push('#'), '');
    assert.equal(w.push('#b'), '');
    assert.equal(w.stopped, true);
    assert.equal(w.fullText, 'a');
  });

  it('with several stop strings cuts at the earliest one in the text', () => {
    const { shown, w } = feed(['END', 'STOP'], ['x STOP y END']);
    assert.deepEqual(shown, ['x ']);
    assert.equal(w.fullText, 'x ');
    const second = feed(['END', 'STOP'], ['x END y STOP']);
    assert.equal(second.w.fullText, 'x ');
  });

  it('with several stop strings holds back the longest tail that begins any of them', () => {
    const w = new StopStringWatcher(['<stop>', 'ok?', '!!']);
    // '<st' begins '<stop>'; nothing else is at risk.
    assert.equal(w.push('hi <st'), 'hi ');
    // '<stx' begins none; the trailing '!' might begin '!!'.
    assert.equal(w.push('x!'), '<stx');
    assert.equal(w.push('?'), '!?');
    assert.equal(w.push(' ok'), ' ');
    assert.equal(w.push('?'), '');
    assert.equal(w.stopped, true);
    assert.equal(w.fullText, 'hi <stx!? ');
  });

  it('a stop string that overlaps the held-back text is found, not shown', () => {
    // 'aab': the tail 'a' is held (it may begin 'ab'), the next push completes 'ab'.
    const w = new StopStringWatcher(['ab']);
    assert.equal(w.push('a'), '');
    assert.equal(w.push('a'), 'a');
    assert.equal(w.push('b'), '');
    assert.equal(w.stopped, true);
    assert.equal(w.fullText, 'a');
  });

  it('streamed pieces always concatenate to the final text', () => {
    const stops = ['\nUser:', '</s>', 'ZZ'];
    const texts = ['plain text', 'ends with </', 'ha Z ha ZZ tail', 'line\nUse then\nUser: x', '</s>', 'Z'];
    for (const text of texts) {
      for (const size of [1, 2, 3, 5]) {
        const pieces = text.match(new RegExp(`[\\s\\S]{1,${size}}`, 'g')) ?? [];
        const { shown, flushed, w } = feed(stops, pieces);
        assert.equal(shown.join('') + flushed, w.fullText, `${JSON.stringify(text)} in pieces of ${size}`);
        const cut = Math.min(...stops.map((s) => (text.includes(s) ? text.indexOf(s) : Infinity)));
        assert.equal(w.fullText, Number.isFinite(cut) ? text.slice(0, cut) : text, `${JSON.stringify(text)} in pieces of ${size}`);
        assert.equal(w.stopped, Number.isFinite(cut));
      }
    }
  });
});
