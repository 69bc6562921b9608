/**
 * Broken model folders through the CLI (`generate --model BAD --prompt x`): each gets exit 2 and
 * one line on stderr naming the file and the problem, and never a stack trace.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { initModel } from '../src/io/init-model.js';
import { loadModel, saveModel } from '../src/io/model-folder.js';
import { removeDir, tempDir } from './helpers/adapter-fixtures.js';
import { cli } from './helpers/cli-run.js';


let root: string;
let good: string;

before(() => {
  root = tempDir('cli-bad-model');
  good = path.join(root, 'good');
  initModel({ preset: 'tiny', out: good, seed: 1 });
});

after(() => {
  if (root) removeDir(root);
});

/** A copy of the good folder, changed by `spoil`. */
function spoiled(name: string, spoil: (dir: string) => void): string {
  const dir = path.join(root, name);
  fs.cpSync(good, dir, { recursive: true });
  spoil(dir);
  return dir;
}

function editJson(file: string, edit: (o: Record<string, unknown>) => void): void {
  const o = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(o);
  fs.writeFileSync(file, JSON.stringify(o, null, 2));
}

/** Rewrites a safetensors file's header JSON (the data after it is kept as is). */
function editHeader(file: string, edit: (header: Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>) => void): void {
  const bytes = fs.readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>;
  edit(header);
  let text = JSON.stringify(header);
  // Keep the data 8-byte aligned, as writers do (padding with spaces is allowed).
  text = text.padEnd(Math.ceil((8 + text.length) / 8) * 8 - 8, ' ');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
  fs.writeFileSync(file, Buffer.concat([len, Buffer.from(text), bytes.subarray(8 + n)]));
}

const st = (dir: string) => path.join(dir, 'model.safetensors');

interface BadCase {
  what: string;
  make: () => string;
  /** The file the message must name (absolute), relative to the folder. */
  names: (dir: string) => string;
  problem: RegExp;
}

const cases: BadCase[] = [
  {
    what: 'truncated model.safetensors',
    make: () => spoiled('truncated', (d) => {
      const b = fs.readFileSync(st(d));
      fs.writeFileSync(st(d), b.subarray(0, b.length - 1000));
    }),
    names: st,
    problem: /data ends at byte \d+ but the file has \d+ bytes \(truncated\?\)/,
  },
  {
    what: 'model.safetensors cut inside the header',
    make: () => spoiled('cut-header', (d) => fs.writeFileSync(st(d), fs.readFileSync(st(d)).subarray(0, 100))),
    names: st,
    problem: /header length \d+ runs past the end of the file \(100 bytes/,
  },
  {
    what: 'model.safetensors shorter than the length field',
    make: () => spoiled('tiny-file', (d) => fs.writeFileSync(st(d), Buffer.from([1, 2, 3]))),
    names: st,
    problem: /file has 3 bytes, too short for the 8-byte header length/,
  },
  {
    what: 'a header length pointing past the end',
    make: () => spoiled('header-length', (d) => {
      const b = fs.readFileSync(st(d));
      b.writeBigUInt64LE(BigInt(b.length * 4), 0);
      fs.writeFileSync(st(d), b);
    }),
    names: st,
    problem: /header length \d+ runs past the end of the file/,
  },
  {
    what: 'a header that is not JSON',
    make: () => spoiled('header-json', (d) => {
      const b = fs.readFileSync(st(d));
      b.write('{{{{', 8);
      fs.writeFileSync(st(d), b);
    }),
    names: st,
    problem: /header is not valid JSON/,
  },
  {
    what: 'an unknown dtype in the header',
    make: () => spoiled('dtype', (d) => editHeader(st(d), (h) => (h['model.norm.weight'].dtype = 'F33'))),
    names: st,
    problem: /tensor "model\.norm\.weight" has unknown dtype "F33" \(known: .*F32.*\)/,
  },
  {
    what: 'a dtype tunekit cannot convert',
    make: () => spoiled('dtype-u32', (d) => editHeader(st(d), (h) => (h['model.norm.weight'].dtype = 'U32'))),
    names: st,
    problem: /tensor "model\.norm\.weight" has dtype U32, which tunekit cannot convert to float32/,
  },
  {
    what: 'offsets that disagree with the shape',
    make: () => spoiled('offsets', (d) => editHeader(st(d), (h) => (h['model.norm.weight'].shape = [65]))),
    names: st,
    problem: /tensor "model\.norm\.weight" has shape \[65\] of F32 \(260 bytes\) but data_offsets span 256 bytes/,
  },
  {
    what: 'a tensor whose shape disagrees with config.json',
    make: () => spoiled('shape', (d) => editJson(path.join(d, 'config.json'), (c) => (c.intermediate_size = 96))),
    names: (d) => d,
    problem: /tensor "model\.layers\.0\.mlp\.gate_proj\.weight" has shape \[128, 64\] but config\.json implies \[96, 64\]/,
  },
  {
    what: 'a tensor config.json requires but the weights lack',
    make: () => spoiled('missing-tensor', (d) => editJson(path.join(d, 'config.json'), (c) => (c.tie_word_embeddings = false))),
    names: (d) => d,
    problem: /weights have no tensor "lm_head\.weight", which config\.json \(qwen2\) requires/,
  },
  {
    what: 'config.json missing hidden_size',
    make: () => spoiled('no-hidden', (d) => editJson(path.join(d, 'config.json'), (c) => delete c.hidden_size)),
    names: (d) => path.join(d, 'config.json'),
    problem: /missing "hidden_size" \(a positive integer\)/,
  },
  {
    what: 'config.json with a non-integer num_hidden_layers',
    make: () => spoiled('bad-layers', (d) => editJson(path.join(d, 'config.json'), (c) => (c.num_hidden_layers = '2'))),
    names: (d) => path.join(d, 'config.json'),
    problem: /"num_hidden_layers" must be a positive integer, got "2"/,
  },
  {
    what: 'an unsupported model_type',
    make: () => spoiled('model-type', (d) => editJson(path.join(d, 'config.json'), (c) => (c.model_type = 'gpt2'))),
    names: (d) => path.join(d, 'config.json'),
    problem: /model_type "gpt2" is not supported; supported: llama, mistral, qwen2, qwen3/,
  },
  {
    what: 'config.json that is not JSON',
    make: () => spoiled('config-json', (d) => fs.writeFileSync(path.join(d, 'config.json'), '{"model_type": ')),
    names: (d) => path.join(d, 'config.json'),
    problem: /not valid JSON|not a JSON object/,
  },
  {
    what: 'no config.json',
    make: () => spoiled('no-config', (d) => fs.rmSync(path.join(d, 'config.json'))),
    names: (d) => d,
    problem: /has no config\.json/,
  },
  {
    what: 'no weights',
    make: () => spoiled('no-weights', (d) => fs.rmSync(st(d))),
    names: (d) => d,
    problem: /no model\.safetensors or model\.safetensors\.index\.json/,
  },
  {
    what: 'a missing tokenizer.json',
    make: () => spoiled('no-tokenizer', (d) => fs.rmSync(path.join(d, 'tokenizer.json'))),
    names: (d) => d,
    problem: /has no tokenizer\.json/,
  },
  {
    what: 'a tokenizer.json that is not JSON',
    make: () => spoiled('tokenizer-json', (d) => fs.writeFileSync(path.join(d, 'tokenizer.json'), '{"model":')),
    names: (d) => path.join(d, 'tokenizer.json'),
    problem: /not valid JSON/,
  },
  {
    what: 'an index naming a shard that is not there',
    make: () => {
      const dir = path.join(root, 'shard-missing');
      saveModel(loadModel(good), dir, { maxShardBytes: 150_000, copyFrom: good });
      const second = fs.readdirSync(dir).find((f) => /^model-00002-of-\d{5}\.safetensors$/.test(f));
      assert.ok(second, `no second shard in ${fs.readdirSync(dir)}`);
      fs.rmSync(path.join(dir, second));
      return dir;
    },
    names: (d) => path.join(d, 'model.safetensors.index.json'),
    problem: /weight_map names shard "model-00002-of-0000\d\.safetensors", which is not in/,
  },
  {
    what: 'a missing folder',
    make: () => path.join(root, 'does-not-exist'),
    names: (d) => d,
    problem: /model folder .* does not exist/,
  },
];

describe('generate --model BAD', () => {
  for (const c of cases) {
    it(`${c.what}: exit 2, one line naming the file and the problem`, async () => {
      const dir = c.make();
      const r = await cli('generate', '--model', dir, '--prompt', 'x', '--max-new-tokens', '2');
      assert.equal(r.code, 2, `exit code; stderr:\n${r.stderr}`);
      assert.equal(r.stdout, '');
      const lines = r.stderr.trimEnd().split('\n');
      assert.equal(lines.length, 1, `expected one line:\n${r.stderr}`);
      assert.ok(lines[0].startsWith('tunekit: error: '), lines[0]);
      assert.ok(lines[0].includes(c.names(dir)), `"${lines[0]}" does not name ${c.names(dir)}`);
      assert.match(lines[0], c.problem);
      assert.doesNotMatch(r.stderr, /\bat .*\.ts:\d+/);
    });
  }

  it('the good folder generates (the failures above are the spoiling, not the set-up)', async () => {
    const r = await cli('generate', '--model', good, '--prompt', 'x', '--max-new-tokens', '2', '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { ids: number[] }).ids.length, 2);
  });
});
