/**
 * GGUF version 3, the file format of llama.cpp, Ollama and node-llama-cpp, written the way
 * llama.cpp's own `gguf-py` writes it:
 *
 *   "GGUF"  u32 version = 3  u64 tensor count  u64 key/value count
 *   key/value pairs          key (u64 length + UTF-8), u32 value type, value
 *   tensor infos             name, u32 dimension count, u64 ne[0..n), u32 ggml type, u64 offset
 *   zero padding to the alignment (32, `general.alignment` when set)
 *   tensor data              each tensor at its offset from here, padded to the alignment
 *
 * Little-endian throughout. A tensor's dimensions are written innermost first (ggml's `ne`), the
 * reverse of the row-major shape PyTorch and tunekit use: a Linear weight [out, in] is
 * ne = [in, out]. Quantised types pack whole rows into blocks along ne[0].
 */
import fs from 'node:fs';

import { f32ToBf16, f32ToF16, f16ToF32 } from './dtype.js';

/** Metadata value types. */
export enum GgufValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** The ggml tensor types tunekit writes (ggml.h's numbering). */
export enum GgmlType {
  F32 = 0,
  F16 = 1,
  Q8_0 = 8,
  BF16 = 30,
}

/** llama.cpp's `general.file_type` (LlamaFileType): the dominant type of the weights. */
export const LLAMA_FILE_TYPE: Record<GgmlType, number> = {
  [GgmlType.F32]: 0, // ALL_F32
  [GgmlType.F16]: 1, // MOSTLY_F16
  [GgmlType.Q8_0]: 7, // MOSTLY_Q8_0
  [GgmlType.BF16]: 32, // MOSTLY_BF16
};

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** `general.quantization_version` that gguf-py writes (GGML_QUANT_VERSION). */
export const GGML_QUANT_VERSION = 2;

/** Values per block and bytes per block of each type. */
export const GGML_BLOCK: Record<GgmlType, { size: number; bytes: number }> = {
  [GgmlType.F32]: { size: 1, bytes: 4 },
  [GgmlType.F16]: { size: 1, bytes: 2 },
  [GgmlType.BF16]: { size: 1, bytes: 2 },
  [GgmlType.Q8_0]: { size: 32, bytes: 34 },
};

export type GgufScalar =
  | { type: GgufValueType.UINT32 | GgufValueType.INT32 | GgufValueType.FLOAT32 | GgufValueType.UINT64; value: number }
  | { type: GgufValueType.BOOL; value: boolean }
  | { type: GgufValueType.STRING; value: string };

export type GgufValue =
  | GgufScalar
  | { type: GgufValueType.ARRAY; itemType: GgufValueType.STRING; value: readonly string[] }
  | { type: GgufValueType.ARRAY; itemType: GgufValueType.INT32 | GgufValueType.UINT32 | GgufValueType.FLOAT32; value: readonly number[] | Int32Array | Uint32Array | Float32Array };

/** A tensor to write: its row-major shape (PyTorch's order) and float32 values, encoded on write. */
export interface GgufTensor {
  name: string;
  /** Row-major shape, e.g. [out, in]; written reversed as ggml's ne. */
  shape: readonly number[];
  type: GgmlType;
  /** Called once, when the tensor's turn to be written comes, so large models stream through. */
  data: () => Float32Array;
}

/** Collects metadata and tensors, then writes the file in one pass. */
export class GgufWriter {
  private readonly kv = new Map<string, GgufValue>();
  private readonly tensors: GgufTensor[] = [];
  readonly alignment = GGUF_DEFAULT_ALIGNMENT;

  set(key: string, value: GgufValue): this {
    if (this.kv.has(key)) throw new Error(`GGUF: duplicate key ${key}`);
    this.kv.set(key, value);
    return this;
  }

  u32(key: string, value: number): this {
    if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new Error(`GGUF: ${key} = ${value} is not a u32`);
    return this.set(key, { type: GgufValueType.UINT32, value });
  }

  f32(key: string, value: number): this {
    return this.set(key, { type: GgufValueType.FLOAT32, value });
  }

  bool(key: string, value: boolean): this {
    return this.set(key, { type: GgufValueType.BOOL, value });
  }

  str(key: string, value: string): this {
    return this.set(key, { type: GgufValueType.STRING, value });
  }

  strings(key: string, value: readonly string[]): this {
    return this.set(key, { type: GgufValueType.ARRAY, itemType: GgufValueType.STRING, value });
  }

  i32s(key: string, value: readonly number[] | Int32Array): this {
    return this.set(key, { type: GgufValueType.ARRAY, itemType: GgufValueType.INT32, value });
  }

  has(key: string): boolean {
    return this.kv.has(key);
  }

  addTensor(t: GgufTensor): this {
    if (this.tensors.some((o) => o.name === t.name)) throw new Error(`GGUF: duplicate tensor ${t.name}`);
    const { size } = GGML_BLOCK[t.type];
    const rowLength = t.shape[t.shape.length - 1];
    if (rowLength % size !== 0) throw new Error(`GGUF: tensor ${t.name} rows of ${rowLength} values do not split into blocks of ${size}`);
    this.tensors.push(t);
    return this;
  }

  get tensorCount(): number {
    return this.tensors.length;
  }

  /** Writes the file through a temporary name and a rename; returns its size in bytes. */
  write(path: string): number {
    const tmp = `${path}.tmp-${process.pid}`;
    const fd = fs.openSync(tmp, 'w');
    let written = 0;
    try {
      const header = this.header();
      writeAll(fd, header);
      written += header.length;
      for (const t of this.tensors) {
        const bytes = encodeTensor(t.data(), t.type, t.shape, t.name);
        writeAll(fd, bytes);
        written += bytes.length;
        const pad = padding(bytes.length, this.alignment);
        if (pad > 0) writeAll(fd, new Uint8Array(pad));
        written += pad;
      }
      fs.closeSync(fd);
    } catch (e) {
      fs.closeSync(fd);
      fs.rmSync(tmp, { force: true });
      throw e;
    }
    fs.renameSync(tmp, path);
    return written;
  }

  /** Everything before the tensor data: magic, counts, metadata, tensor infos, padding. */
  private header(): Uint8Array {
    const out = new ByteSink();
    out.u32(GGUF_MAGIC);
    out.u32(GGUF_VERSION);
    out.u64(this.tensors.length);
    out.u64(this.kv.size);
    for (const [key, value] of this.kv) {
      out.string(key);
      out.u32(value.type);
      writeValue(out, value);
    }
    let offset = 0;
    for (const t of this.tensors) {
      out.string(t.name);
      out.u32(t.shape.length);
      for (let i = t.shape.length - 1; i >= 0; i--) out.u64(t.shape[i]);
      out.u32(t.type);
      out.u64(offset);
      const bytes = tensorBytes(t.shape, t.type);
      offset += bytes + padding(bytes, this.alignment);
    }
    out.pad(this.alignment);
    return out.bytes();
  }
}

/** fs.writeSync may write less than asked (and refuses 2 GiB at once): loop in pieces. */
function writeAll(fd: number, bytes: Uint8Array): void {
  const chunk = 1 << 30;
  for (let at = 0; at < bytes.length; ) {
    at += fs.writeSync(fd, bytes, at, Math.min(chunk, bytes.length - at));
  }
}

function writeValue(out: ByteSink, v: GgufValue): void {
  switch (v.type) {
    case GgufValueType.UINT32:
      return out.u32(v.value);
    case GgufValueType.INT32:
      return out.i32(v.value);
    case GgufValueType.FLOAT32:
      return out.f32(v.value);
    case GgufValueType.UINT64:
      return out.u64(v.value);
    case GgufValueType.BOOL:
      return out.u8(v.value ? 1 : 0);
    case GgufValueType.STRING:
      return out.string(v.value);
    case GgufValueType.ARRAY: {
      out.u32(v.itemType);
      out.u64(v.value.length);
      if (v.itemType === GgufValueType.STRING) for (const s of v.value as readonly string[]) out.string(s);
      else if (v.itemType === GgufValueType.INT32) for (const n of v.value) out.i32(n as number);
      else if (v.itemType === GgufValueType.UINT32) for (const n of v.value) out.u32(n as number);
      else for (const n of v.value) out.f32(n as number);
      return;
    }
  }
}

export function tensorBytes(shape: readonly number[], type: GgmlType): number {
  const n = shape.reduce((a, b) => a * b, 1);
  const { size, bytes } = GGML_BLOCK[type];
  return (n / size) * bytes;
}

function padding(n: number, alignment: number): number {
  return (alignment - (n % alignment)) % alignment;
}

/** float32 values → the bytes of `type`. */
export function encodeTensor(data: Float32Array, type: GgmlType, shape: readonly number[], name = 'tensor'): Uint8Array {
  const n = shape.reduce((a, b) => a * b, 1);
  if (data.length !== n) throw new Error(`GGUF: tensor ${name} has ${data.length} values, shape [${shape.join(', ')}] needs ${n}`);
  switch (type) {
    case GgmlType.F32:
      return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
    case GgmlType.F16:
      return new Uint8Array(f32ToF16(data).buffer);
    case GgmlType.BF16:
      return new Uint8Array(f32ToBf16(data).buffer);
    case GgmlType.Q8_0:
      return quantizeQ8_0(data);
  }
}

/**
 * Q8_0 as ggml's `quantize_row_q8_0_ref`: blocks of 32 values, each stored as an f16 scale
 * d = max|x| / 127 followed by 32 int8 q = round(x / d) (halves away from zero). 34 bytes a block.
 */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  if (x.length % 32 !== 0) throw new Error(`Q8_0: ${x.length} values are not whole blocks of 32`);
  const blocks = x.length / 32;
  const out = new Uint8Array(blocks * 34);
  const view = new DataView(out.buffer);
  const scale = new Float32Array(1);
  const scaleBits = new Uint16Array(1);
  for (let b = 0; b < blocks; b++) {
    const base = b * 32;
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[base + j]));
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    scale[0] = d;
    f32ToF16(scale, scaleBits);
    view.setUint16(b * 34, scaleBits[0], true);
    for (let j = 0; j < 32; j++) {
      const v = Math.fround(x[base + j] * id);
      // C's roundf: halves away from zero.
      const q = Math.sign(v) * Math.floor(Math.abs(v) + 0.5);
      view.setInt8(b * 34 + 2 + j, q);
    }
  }
  return out;
}

/** The inverse: x = q · f16(d). */
export function dequantizeQ8_0(bytes: Uint8Array, count: number): Float32Array {
  if (bytes.length !== (count / 32) * 34) throw new Error(`Q8_0: ${bytes.length} bytes do not hold ${count} values`);
  const out = new Float32Array(count);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const d16 = new Uint16Array(1);
  const d32 = new Float32Array(1);
  for (let b = 0; b < count / 32; b++) {
    d16[0] = view.getUint16(b * 34, true);
    f16ToF32(d16, d32);
    for (let j = 0; j < 32; j++) out[b * 32 + j] = view.getInt8(b * 34 + 2 + j) * d32[0];
  }
  return out;
}

/** A growable little-endian byte buffer for the header. */
class ByteSink {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  private length = 0;
  private static readonly encoder = new TextEncoder();

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(v: number): void {
    this.reserve(1);
    this.view.setUint8(this.length, v);
    this.length += 1;
  }

  u32(v: number): void {
    this.reserve(4);
    this.view.setUint32(this.length, v, true);
    this.length += 4;
  }

  i32(v: number): void {
    this.reserve(4);
    this.view.setInt32(this.length, v, true);
    this.length += 4;
  }

  f32(v: number): void {
    this.reserve(4);
    this.view.setFloat32(this.length, v, true);
    this.length += 4;
  }

  u64(v: number): void {
    this.reserve(8);
    this.view.setBigUint64(this.length, BigInt(v), true);
    this.length += 8;
  }

  string(s: string): void {
    const bytes = ByteSink.encoder.encode(s);
    this.u64(bytes.length);
    this.reserve(bytes.length);
    this.buf.set(bytes, this.length);
    this.length += bytes.length;
  }

  pad(alignment: number): void {
    const n = padding(this.length, alignment);
    this.reserve(n);
    this.buf.fill(0, this.length, this.length + n);
    this.length += n;
  }

  bytes(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}
