import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import { FileFormatError } from '../src/errors.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../src/io/dtype.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { openWeights, saveWeights } from '../src/io/weights.js';

const root = fs.mkdtempSync(join(os.tmpdir(), 'tunekit-safetensors-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let dirCount = 0;
function freshDir(): string {
  const dir = join(root, `case-${dirCount++}`);
  fs.mkdirSync(dir);
  return dir;
}

/** The float32 whose bit pattern is `bits`. */
function fromBits(bits: number): number {
  return new Float32Array(new Uint32Array([bits]).buffer)[0];
}
const bf16 = (x: number) => f32ToBf16(new Float32Array([x]))[0];
const f16 = (x: number) => f32ToF16(new Float32Array([x]))[0];
const fromF16 = (h: number) => f16ToF32(new Uint16Array([h]))[0];

describe('bf16', () => {
  test('known bit patterns', () => {
    assert.equal(bf16(1), 0x3f80);
    assert.equal(bf16(-2), 0xc000);
    assert.equal(bf16(0), 0x0000);
    assert.equal(bf16(-0), 0x8000);
    assert.equal(bf16(Infinity), 0x7f80);
    assert.equal(bf16(-Infinity), 0xff80);
    assert.equal(bf16(3.140625), 0x4049);
  });

  test('rounds to nearest, ties to even', () => {
    // 1 + 2^-8 lies halfway between 0x3f80 (even) and 0x3f81: stays at the even one.
    assert.equal(bf16(1 + 2 ** -8), 0x3f80);
    // 1 + 3·2^-8 lies halfway between 0x3f81 and 0x3f82 (even): rounds up.
    assert.equal(bf16(1 + 3 * 2 ** -8), 0x3f82);
    // Just above the midpoint rounds up.
    assert.equal(bf16(1 + 2 ** -8 + 2 ** -20), 0x3f81);
    // Rounding up can carry into the exponent: the largest finite f32 becomes infinity.
    assert.equal(bf16(fromBits(0x7f7fffff)), 0x7f80);
  });

  test('NaN stays NaN even when only low mantissa bits are set', () => {
    const h = bf16(fromBits(0x7f800001));
    assert.equal(h & 0x7f80, 0x7f80);
    assert.notEqual(h & 0x007f, 0);
    assert.ok(Number.isNaN(bf16ToF32(new Uint16Array([h]))[0]));
  });

  test('to f32 is exact', () => {
    assert.deepEqual([...bf16ToF32(new Uint16Array([0x3f80, 0x4049, 0xc000, 0x7f80]))], [1, 3.140625, -2, Infinity]);
  });
});

describe('f16', () => {
  test('known bit patterns', () => {
    assert.equal(f16(1), 0x3c00);
    assert.equal(f16(-2), 0xc000);
    assert.equal(f16(0.1), 0x2e66);
    assert.equal(f16(65504), 0x7bff); // largest finite
    assert.equal(f16(2 ** -14), 0x0400); // smallest normal
    assert.equal(f16(1023 * 2 ** -24), 0x03ff); // largest subnormal
    assert.equal(f16(2 ** -24), 0x0001); // smallest subnormal
    assert.equal(f16(-0), 0x8000);
    assert.equal(f16(Infinity), 0x7c00);
    assert.equal(f16(-Infinity), 0xfc00);
    const nan = f16(NaN);
    assert.equal(nan & 0x7c00, 0x7c00);
    assert.notEqual(nan & 0x03ff, 0);
  });

  test('rounds to nearest, ties to even, through subnormals and overflow', () => {
    assert.equal(f16(1 + 2 ** -11), 0x3c00); // tie, even stays
    assert.equal(f16(1 + 3 * 2 ** -11), 0x3c02); // tie, rounds up to even
    assert.equal(f16(65519), 0x7bff); // below the midpoint to infinity
    assert.equal(f16(65520), 0x7c00); // at it: ties to even is infinity
    assert.equal(f16(1e6), 0x7c00);
    assert.equal(f16(2 ** -25), 0x0000); // tie between 0 and the smallest subnormal
    assert.equal(f16(1.5 * 2 ** -25), 0x0001);
    assert.equal(f16(3 * 2 ** -25), 0x0002); // tie between subnormals 1 and 2
    assert.equal(f16(2 ** -30), 0x0000);
    assert.equal(f16(-(2 ** -24)), 0x8001);
  });

  test('to f32 is exact for every pattern, and back again', () => {
    assert.equal(fromF16(0x0001), 2 ** -24);
    assert.equal(fromF16(0x03ff), 1023 * 2 ** -24);
    assert.equal(fromF16(0x7bff), 65504);
    assert.equal(fromF16(0xfc00), -Infinity);
    assert.ok(Object.is(fromF16(0x8000), -0));
    assert.ok(Number.isNaN(fromF16(0x7e00)));

    const all = new Uint16Array(65536).map((_, i) => i);
    const back = f32ToF16(f16ToF32(all));
    for (let h = 0; h < 65536; h++) {
      const isNaN = (h & 0x7c00) === 0x7c00 && (h & 0x03ff) !== 0;
      if (!isNaN && back[h] !== h) assert.fail(`f16 0x${h.toString(16)} came back as 0x${back[h].toString(16)}`);
    }
  });
});

/** Parses a safetensors file by the format's own rules, independently of the reader. */
function parseByFormat(path: string) {
  const buf = fs.readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const headerText = buf.subarray(8, 8 + n).toString('utf8');
  return { buf, n, dataStart: 8 + n, headerText, header: JSON.parse(headerText) as Record<string, any> };
}

describe('writeSafetensors', () => {
  test('lays the file out as the format specifies', () => {
    const path = join(freshDir(), 'model.safetensors');
    const a = new Float32Array([1, -2.5, 3, 0.1, 1e-30, -0]);
    const b = new Float32Array([1, 3.140625, -2]);
    const c = new Float32Array([1, 65504, 2 ** -24, -0.5, 0.1]);
    writeSafetensors(
      path,
      [
        { name: 'a', shape: [2, 3], data: a },
        { name: 'b', shape: [3], data: b, dtype: 'BF16' },
        { name: 'c', shape: [5], data: c, dtype: 'F16' },
      ],
      { format: 'pt' },
    );
    const { buf, n, dataStart, headerText, header } = parseByFormat(path);

    assert.equal(dataStart % 8, 0, 'data starts 8-byte aligned');
    assert.match(headerText, /^\{.*\} *$/s, 'header is JSON padded with spaces');
    assert.deepEqual(Object.keys(header), ['__metadata__', 'a', 'b', 'c']);
    assert.deepEqual(header.__metadata__, { format: 'pt' });
    assert.deepEqual(header.a, { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] });
    assert.deepEqual(header.b, { dtype: 'BF16', shape: [3], data_offsets: [24, 30] });
    assert.deepEqual(header.c, { dtype: 'F16', shape: [5], data_offsets: [30, 40] });
    assert.equal(buf.length, 8 + n + 40, 'no bytes after the last tensor');

    for (let i = 0; i < a.length; i++) assert.ok(Object.is(buf.readFloatLE(dataStart + 4 * i), a[i]));
    const u16 = (offset: number, count: number) =>
      Array.from({ length: count }, (_, i) => buf.readUInt16LE(dataStart + offset + 2 * i));
    assert.deepEqual(u16(24, 3), [0x3f80, 0x4049, 0xc000]);
    assert.deepEqual(u16(30, 5), [0x3c00, 0x7bff, 0x0001, 0xb800, 0x2e66]);
  });

  test('reads back what it wrote', () => {
    const path = join(freshDir(), 'x.safetensors');
    const a = Float32Array.from({ length: 12 }, (_, i) => (i - 5) * 0.375);
    const halfExact = new Float32Array([0, 1, -1.5, 0.25, 1024, -0.0078125]);
    writeSafetensors(path, new Map([
      ['layers.1.w', { shape: [3, 4], data: a }],
      ['layers.0.w', { shape: [2, 3], data: halfExact, dtype: 'BF16' as const }],
      ['0', { shape: [6], data: halfExact, dtype: 'F16' as const }],
      ['empty', { shape: [0, 4], data: new Float32Array(0) }],
    ]));
    const file = readSafetensors(path);
    try {
      assert.deepEqual(file.names(), ['layers.1.w', 'layers.0.w', '0', 'empty'], 'file order, even for "0"');
      assert.deepEqual(file.metadata, {});
      assert.deepEqual(file.info('layers.0.w'), { dtype: 'BF16', shape: [2, 3] });
      assert.deepEqual(file.get('layers.1.w'), a);
      assert.deepEqual(file.get('layers.0.w'), halfExact);
      assert.deepEqual(file.get('0'), halfExact);
      assert.deepEqual(file.get('empty'), new Float32Array(0));
      const raw = file.getRaw('0');
      assert.deepEqual({ dtype: raw.dtype, shape: raw.shape }, { dtype: 'F16', shape: [6] });
      assert.deepEqual([...new Uint16Array(raw.bytes.buffer)], [...f32ToF16(halfExact)]);
      assert.throws(() => file.get('layers.2.w'), (err: Error) =>
        err instanceof FileFormatError && /x\.safetensors: no tensor "layers\.2\.w"; the file has .*"layers\.1\.w"/.test(err.message));
    } finally {
      file.close();
    }
    assert.throws(() => file.get('0'), /after close/);
  });

  test('converts a tensor longer than its conversion buffer', () => {
    const path = join(freshDir(), 'big.safetensors');
    const data = Float32Array.from({ length: (1 << 20) + 3 }, (_, i) => i % 256);
    writeSafetensors(path, [{ name: 'w', shape: [data.length], data, dtype: 'BF16' }]);
    const file = readSafetensors(path);
    assert.deepEqual(file.get('w'), data);
    file.close();
  });

  test('replaces a file atomically and leaves no temporary file', () => {
    const dir = freshDir();
    const path = join(dir, 'm.safetensors');
    writeSafetensors(path, [{ name: 'w', shape: [1], data: new Float32Array([1]) }]);
    writeSafetensors(path, [{ name: 'w', shape: [1], data: new Float32Array([2]) }]);
    assert.deepEqual(fs.readdirSync(dir), ['m.safetensors']);
    const file = readSafetensors(path);
    assert.deepEqual(file.get('w'), new Float32Array([2]));
    file.close();

    assert.throws(() => writeSafetensors(path, [{ name: 'w', shape: [2], data: new Float32Array(3) }]), /shape \[2\] \(2 values\) but 3 values/);
    assert.deepEqual(fs.readdirSync(dir), ['m.safetensors'], 'a failed write leaves the old file alone');
  });
});

/** A file with the given header (object or raw text) and data bytes, by hand. */
function handMade(name: string, header: object | string, data: Uint8Array = new Uint8Array(0), lengthField?: number): string {
  const path = join(freshDir(), name);
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(lengthField ?? json.length));
  fs.writeFileSync(path, Buffer.concat([length, json, data]));
  return path;
}

function assertFormatError(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (err: Error) => {
    assert.ok(err instanceof FileFormatError, `expected FileFormatError, got ${err.name}: ${err.message}`);
    assert.match(err.message, message);
    assert.ok(!err.message.includes('\n'), 'one line');
    return true;
  });
}

describe('readSafetensors rejects bad files', () => {
  test('missing', () => {
    assertFormatError(() => readSafetensors(join(freshDir(), 'absent.safetensors')), /absent\.safetensors: no such file/);
  });

  test('shorter than the length field', () => {
    const path = join(freshDir(), 'short.safetensors');
    fs.writeFileSync(path, Buffer.from([1, 2, 3]));
    assertFormatError(() => readSafetensors(path), /short\.safetensors: file has 3 bytes, too short for the 8-byte header length/);
  });

  test('header length past the end', () => {
    const path = handMade('long.safetensors', '{}', new Uint8Array(10), 1000);
    assertFormatError(() => readSafetensors(path), /long\.safetensors: header length 1000 runs past the end of the file \(20 bytes/);
  });

  test('header not JSON', () => {
    const path = handMade('garbled.safetensors', '{"w": {"dtype": "F32",');
    assertFormatError(() => readSafetensors(path), /garbled\.safetensors: header is not valid JSON \(/);
    const arrayPath = handMade('array.safetensors', '[1, 2]');
    assertFormatError(() => readSafetensors(arrayPath), /array\.safetensors: header is not a JSON object/);
  });

  test('unknown dtype', () => {
    const path = handMade('dtype.safetensors', { w: { dtype: 'Q4_K', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1));
    assertFormatError(() => readSafetensors(path), /dtype\.safetensors: tensor "w" has unknown dtype "Q4_K" \(known: .*BF16/);
  });

  test('data_offsets not [begin, end] integers', () => {
    for (const offsets of [[0], ['0', 4], [0, 4.5], [4, 0], null]) {
      const path = handMade('offsets.safetensors', { w: { dtype: 'F32', shape: [1], data_offsets: offsets } }, new Uint8Array(8));
      assertFormatError(() => readSafetensors(path), /offsets\.safetensors: tensor "w" data_offsets must be \[begin, end\] integers/);
    }
  });

  test('bad shape', () => {
    const path = handMade('shape.safetensors', { w: { dtype: 'F32', shape: [2, -1], data_offsets: [0, 0] } });
    assertFormatError(() => readSafetensors(path), /shape\.safetensors: tensor "w" shape must be an array of non-negative integers/);
  });

  test('data past the end of the file', () => {
    const header = { 'model.norm.weight': { dtype: 'F32', shape: [4], data_offsets: [0, 16] } };
    const path = handMade('model.safetensors', header, new Uint8Array(10));
    const end = 8 + JSON.stringify(header).length + 16;
    const size = fs.statSync(path).size;
    assertFormatError(() => readSafetensors(path),
      new RegExp(`model\\.safetensors: tensor "model\\.norm\\.weight" data ends at byte ${end} but the file has ${size} bytes \\(truncated\\?\\)`));
  });

  test('a real file cut short', () => {
    const path = join(freshDir(), 'cut.safetensors');
    writeSafetensors(path, [{ name: 'a', shape: [4], data: new Float32Array(4) }, { name: 'b', shape: [4], data: new Float32Array(4) }]);
    fs.truncateSync(path, fs.statSync(path).size - 4);
    assertFormatError(() => readSafetensors(path), /cut\.safetensors: tensor "b" data ends at byte \d+ but the file has \d+ bytes \(truncated\?\)/);
  });

  test('byte length not shape times item size', () => {
    const path = handMade('size.safetensors', { w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 12] } }, new Uint8Array(12));
    assertFormatError(() => readSafetensors(path), /size\.safetensors: tensor "w" has shape \[2,2\] of F32 \(16 bytes\) but data_offsets span 12 bytes/);
  });

  test('metadata values must be strings', () => {
    const path = handMade('meta.safetensors', { __metadata__: { step: 3 } });
    assertFormatError(() => readSafetensors(path), /meta\.safetensors: "__metadata__"\."step" must be a string/);
  });
});

describe('other dtypes', () => {
  test('F64, I64 and I32 read as float32; U8 only raw', () => {
    const f64 = new Uint8Array(new Float64Array([1.5, -2]).buffer);
    const i64 = new Uint8Array(new BigInt64Array([3n, -4n]).buffer);
    const i32 = new Uint8Array(new Int32Array([5, -6]).buffer);
    const u8 = new Uint8Array([7, 8]);
    const path = handMade('mixed.safetensors', {
      d: { dtype: 'F64', shape: [2], data_offsets: [0, 16] },
      l: { dtype: 'I64', shape: [2], data_offsets: [16, 32] },
      i: { dtype: 'I32', shape: [2], data_offsets: [32, 40] },
      u: { dtype: 'U8', shape: [2], data_offsets: [40, 42] },
    }, Buffer.concat([f64, i64, i32, u8]));
    const file = readSafetensors(path);
    assert.deepEqual(file.get('d'), new Float32Array([1.5, -2]));
    assert.deepEqual(file.get('l'), new Float32Array([3, -4]));
    assert.deepEqual(file.get('i'), new Float32Array([5, -6]));
    assert.deepEqual([...file.getRaw('u').bytes], [7, 8]);
    assertFormatError(() => file.get('u'), /mixed\.safetensors: tensor "u" has dtype U8, which tunekit cannot convert to float32/);
    file.close();
  });
});

describe('model folder weights', () => {
  const tensors = Array.from({ length: 5 }, (_, i) => ({
    name: `model.layers.${i}.mlp.weight`,
    shape: [4, 4],
    data: Float32Array.from({ length: 16 }, (_, j) => i * 100 + j),
  }));

  test('sharded save and load, as transformers writes them', () => {
    const dir = freshDir();
    // 64 bytes per tensor: two fit under 150, so 2 + 2 + 1.
    saveWeights(dir, tensors, { maxShardBytes: 150 });
    const files = fs.readdirSync(dir).sort();
    assert.deepEqual(files, [
      'model-00001-of-00003.safetensors',
      'model-00002-of-00003.safetensors',
      'model-00003-of-00003.safetensors',
      'model.safetensors.index.json',
    ]);
    const indexText = fs.readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8');
    const index = JSON.parse(indexText);
    assert.deepEqual(Object.keys(index), ['metadata', 'weight_map']);
    assert.deepEqual(index.metadata, { total_size: 5 * 64 });
    assert.deepEqual(index.weight_map, {
      'model.layers.0.mlp.weight': 'model-00001-of-00003.safetensors',
      'model.layers.1.mlp.weight': 'model-00001-of-00003.safetensors',
      'model.layers.2.mlp.weight': 'model-00002-of-00003.safetensors',
      'model.layers.3.mlp.weight': 'model-00002-of-00003.safetensors',
      'model.layers.4.mlp.weight': 'model-00003-of-00003.safetensors',
    });
    const shardHeader = parseByFormat(join(dir, 'model-00002-of-00003.safetensors')).header;
    assert.deepEqual(shardHeader.__metadata__, { format: 'pt' });
    assert.deepEqual(Object.keys(shardHeader), ['__metadata__', 'model.layers.2.mlp.weight', 'model.layers.3.mlp.weight']);

    const weights = openWeights(dir);
    try {
      assert.deepEqual(weights.names().sort(), tensors.map((t) => t.name));
      for (const t of tensors) assert.deepEqual(weights.get(t.name), t.data);
      assert.deepEqual(weights.info('model.layers.4.mlp.weight'), { dtype: 'F32', shape: [4, 4] });
      assert.ok(weights.has('model.layers.0.mlp.weight'));
      assert.ok(!weights.has('lm_head.weight'));
      assertFormatError(() => weights.get('lm_head.weight'), /no tensor "lm_head\.weight"; the model has 5 tensors: "model\.layers/);
    } finally {
      weights.close();
    }
  });

  test('a tensor larger than the shard limit gets a shard of its own', () => {
    const dir = freshDir();
    saveWeights(dir, tensors.slice(0, 3), { maxShardBytes: 10 });
    const index = JSON.parse(fs.readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'));
    assert.equal(new Set(Object.values(index.weight_map)).size, 3);
  });

  test('one file when it fits; a new save removes the old shards and index', () => {
    const dir = freshDir();
    saveWeights(dir, tensors, { maxShardBytes: 150 });
    const halved = tensors.map((t) => ({ ...t, data: t.data.map((x) => x / 2) }));
    saveWeights(dir, halved, { dtype: 'BF16', metadata: { source: 'test' } });
    assert.deepEqual(fs.readdirSync(dir), ['model.safetensors']);
    assert.deepEqual(readSafetensors(join(dir, 'model.safetensors')).metadata, { format: 'pt', source: 'test' });
    const weights = openWeights(dir);
    assert.deepEqual(weights.names(), tensors.map((t) => t.name));
    assert.deepEqual(weights.info('model.layers.1.mlp.weight'), { dtype: 'BF16', shape: [4, 4] });
    assert.deepEqual(weights.get('model.layers.1.mlp.weight'), halved[1].data);
    weights.close();
  });

  test('bad folders and indexes', () => {
    const empty = freshDir();
    assertFormatError(() => openWeights(empty), /no model\.safetensors or model\.safetensors\.index\.json in .*case-/);

    const writeIndex = (text: string) => {
      const dir = freshDir();
      fs.writeFileSync(join(dir, 'model.safetensors.index.json'), text);
      return dir;
    };
    assertFormatError(() => openWeights(writeIndex('{"weight_map": ')), /model\.safetensors\.index\.json: not valid JSON/);
    assertFormatError(() => openWeights(writeIndex('{"metadata": {}}')), /model\.safetensors\.index\.json: missing "weight_map"/);
    assertFormatError(() => openWeights(writeIndex('{"weight_map": {"w": "../elsewhere.safetensors"}}')),
      /model\.safetensors\.index\.json: weight_map entry "w" must name a \.safetensors file in the folder/);

    const dir = freshDir();
    saveWeights(dir, tensors, { maxShardBytes: 150 });
    fs.rmSync(join(dir, 'model-00002-of-00003.safetensors'));
    assertFormatError(() => openWeights(dir),
      /model\.safetensors\.index\.json: weight_map names shard "model-00002-of-00003\.safetensors", which is not in /);

    const mismatched = freshDir();
    saveWeights(mismatched, tensors, { maxShardBytes: 150 });
    const indexPath = join(mismatched, 'model.safetensors.index.json');
    const index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
    index.weight_map['model.layers.0.mlp.weight'] = 'model-00003-of-00003.safetensors';
    fs.writeFileSync(indexPath, JSON.stringify(index));
    assertFormatError(() => openWeights(mismatched),
      /weight_map puts tensor "model\.layers\.0\.mlp\.weight" in "model-00003-of-00003\.safetensors", which has no such tensor/);
  });
});
