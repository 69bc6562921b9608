/**
 * The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian
 * header length N, N bytes of JSON `{name: {dtype, shape, data_offsets: [begin, end]}, ...,
 * "__metadata__": {string: string}}`, then the tensor bytes, offsets relative to byte 8 + N.
 *
 * Reading keeps the file open and reads one tensor's bytes when it is asked for, so opening a
 * multi-gigabyte checkpoint costs one small read. Writing streams one tensor at a time into a
 * temporary file that is renamed into place, so a crash never leaves a half-written file.
 */
import * as fs from 'node:fs';
import { FileFormatError } from '../errors.js';
import { narrowToBf16 } from '../backend/kernels/bf16.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from './dtype.js';

/** Bytes per element of every byte-sized dtype the format defines. */
const ITEM_SIZE = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8,
} as const;

export type Dtype = keyof typeof ITEM_SIZE;
/** The dtypes `get()` converts to float32; the others are readable with `getRaw()` only. */
const FLOAT_READABLE: readonly Dtype[] = ['F32', 'F16', 'BF16', 'F64', 'I64', 'I32'];
export type WritableDtype = 'F32' | 'F16' | 'BF16';

/** The reference implementation refuses larger headers; so do we, before allocating one. */
const MAX_HEADER_BYTES = 100_000_000;
/** Reads and writes go in pieces below the 2 GiB a single fs call accepts. */
const IO_CHUNK_BYTES = 1 << 30;

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export interface TensorInfo {
  dtype: Dtype;
  shape: number[];
}

interface Entry extends TensorInfo {
  /** absolute byte positions in the file */
  begin: number;
  end: number;
}

export interface SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  /** Tensor names in the order their bytes appear in the file. */
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  /** The tensor converted to float32, read from disk now. */
  get(name: string): Float32Array;
  /**
   * The tensor as bfloat16 bit patterns: a BF16 tensor's bytes as stored; F32 read and rounded
   * (to nearest even) a chunk at a time, so no float32 copy of the whole tensor is made; other
   * float dtypes through `get`.
   */
  getBf16(name: string): Uint16Array;
  /** The tensor's bytes as stored (little-endian), in a fresh, aligned buffer. */
  getRaw(name: string): { dtype: Dtype; shape: number[]; bytes: Uint8Array };
  /** Releases the file descriptor; later reads throw. */
  close(): void;
}

export function readSafetensors(path: string): SafetensorsFile {
  const fd = openForReading(path);
  try {
    const { entries, metadata } = readHeader(fd, path);
    return new OpenSafetensors(path, fd, entries, metadata);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

/** A missing file is the user's mistake, so it gets a one-line error rather than a trace. */
function openForReading(path: string): number {
  try {
    return fs.openSync(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new FileFormatError(path, 'no such file');
    throw err;
  }
}

interface Header {
  entries: Map<string, Entry>;
  metadata: Record<string, string>;
}

function readHeader(fd: number, path: string): Header {
  const fileSize = fs.fstatSync(fd).size;
  if (fileSize < 8) {
    throw new FileFormatError(path, `file has ${fileSize} bytes, too short for the 8-byte header length (not a safetensors file?)`);
  }
  const headerLength = new DataView(readExactly(fd, 0, 8).buffer).getBigUint64(0, true);
  if (headerLength > BigInt(fileSize - 8)) {
    throw new FileFormatError(path, `header length ${headerLength} runs past the end of the file (${fileSize} bytes; not a safetensors file, or truncated?)`);
  }
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    throw new FileFormatError(path, `header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  const dataStart = 8 + Number(headerLength);

  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(readExactly(fd, 8, dataStart - 8)));
  } catch (err) {
    throw new FileFormatError(path, `header is not valid JSON (${(err as Error).message})`);
  }
  if (!isPlainObject(header)) throw new FileFormatError(path, 'header is not a JSON object');

  const metadata = parseMetadata(path, header.__metadata__);
  const entries: Array<[string, Entry]> = [];
  for (const [name, raw] of Object.entries(header)) {
    if (name !== '__metadata__') entries.push([name, parseEntry(path, name, raw, dataStart, fileSize)]);
  }
  // JSON key order is not file order (and JS puts integer-like keys first), so sort by offset.
  entries.sort((a, b) => a[1].begin - b[1].begin);
  return { entries: new Map(entries), metadata };
}

function parseMetadata(path: string, raw: unknown): Record<string, string> {
  if (raw === undefined) return {};
  if (!isPlainObject(raw)) throw new FileFormatError(path, '"__metadata__" must be an object of strings');
  for (const [key, value] of Object.entries(raw)) {
    if (typeof value !== 'string') {
      throw new FileFormatError(path, `"__metadata__"."${key}" must be a string, got ${JSON.stringify(value)}`);
    }
  }
  return { ...(raw as Record<string, string>) };
}

function parseEntry(path: string, name: string, raw: unknown, dataStart: number, fileSize: number): Entry {
  const fail = (problem: string) => new FileFormatError(path, `tensor ${JSON.stringify(name)} ${problem}`);
  if (!isPlainObject(raw)) throw fail('must be an object with dtype, shape and data_offsets');
  const { dtype, shape, data_offsets: offsets } = raw;

  if (!isDtype(dtype)) throw fail(`has unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(ITEM_SIZE).join(', ')})`);
  if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger)) {
    throw fail(`shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInteger) || offsets[0] > offsets[1]) {
    throw fail(`data_offsets must be [begin, end] integers with begin <= end, got ${JSON.stringify(offsets)}`);
  }
  const begin = dataStart + offsets[0];
  const end = dataStart + offsets[1];
  if (end > fileSize) throw fail(`data ends at byte ${end} but the file has ${fileSize} bytes (truncated?)`);

  const expected = shape.reduce((n: number, d: number) => n * d, 1) * ITEM_SIZE[dtype];
  if (end - begin !== expected) {
    throw fail(`has shape ${JSON.stringify(shape)} of ${dtype} (${expected} bytes) but data_offsets span ${end - begin} bytes`);
  }
  return { dtype, shape: [...shape], begin, end };
}

function isDtype(value: unknown): value is Dtype {
  return typeof value === 'string' && Object.hasOwn(ITEM_SIZE, value);
}

class OpenSafetensors implements SafetensorsFile {
  private fd: number | null;

  constructor(
    readonly path: string,
    fd: number,
    private readonly entries: Map<string, Entry>,
    readonly metadata: Record<string, string>,
  ) {
    this.fd = fd;
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): TensorInfo {
    const { dtype, shape } = this.entry(name);
    return { dtype, shape: [...shape] };
  }

  getRaw(name: string): { dtype: Dtype; shape: number[]; bytes: Uint8Array } {
    const entry = this.entry(name);
    return { dtype: entry.dtype, shape: [...entry.shape], bytes: this.readBytes(entry) };
  }

  get(name: string): Float32Array {
    const entry = this.entry(name);
    if (!FLOAT_READABLE.includes(entry.dtype)) {
      throw new FileFormatError(this.path, `tensor ${JSON.stringify(name)} has dtype ${entry.dtype}, which tunekit cannot convert to float32 (it reads ${FLOAT_READABLE.join(', ')})`);
    }
    return toFloat32(entry.dtype, this.readBytes(entry).buffer as ArrayBuffer);
  }

  getBf16(name: string): Uint16Array {
    const entry = this.entry(name);
    if (!HOST_IS_LITTLE_ENDIAN) throw new Error('tunekit reads safetensors only on little-endian machines');
    if (entry.dtype === 'BF16') return new Uint16Array(this.readBytes(entry).buffer);
    if (entry.dtype !== 'F32') return narrowToBf16(this.get(name));
    if (this.fd === null) throw new Error(`${this.path}: read after close()`);
    const n = (entry.end - entry.begin) / 4;
    const out = new Uint16Array(n);
    const chunk = new Float32Array(Math.min(n, CONVERT_CHUNK));
    for (let start = 0; start < n; start += chunk.length) {
      const part = chunk.subarray(0, Math.min(chunk.length, n - start));
      readInto(this.fd, new Uint8Array(part.buffer, 0, part.byteLength), entry.begin + start * 4);
      narrowToBf16(part, out.subarray(start, start + part.length));
    }
    return out;
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }

  private entry(name: string): Entry {
    const entry = this.entries.get(name);
    if (!entry) {
      throw new FileFormatError(this.path, `no tensor ${JSON.stringify(name)}; the file has ${describeNames(this.names())}`);
    }
    return entry;
  }

  private readBytes(entry: Entry): Uint8Array {
    if (this.fd === null) throw new Error(`${this.path}: read after close()`);
    return readExactly(this.fd, entry.begin, entry.end - entry.begin);
  }
}

/** A few names, to tell a user what the file does hold. */
export function describeNames(names: string[], shown = 5): string {
  if (names.length === 0) return 'no tensors';
  const listed = names.slice(0, shown).map((n) => JSON.stringify(n)).join(', ');
  const count = names.length === 1 ? '1 tensor' : `${names.length} tensors`;
  return `${count}: ${listed}${names.length > shown ? ', ...' : ''}`;
}

function toFloat32(dtype: Dtype, buffer: ArrayBuffer): Float32Array {
  if (!HOST_IS_LITTLE_ENDIAN) throw new Error('tunekit reads safetensors only on little-endian machines');
  switch (dtype) {
    case 'F32': return new Float32Array(buffer);
    case 'BF16': return bf16ToF32(new Uint16Array(buffer));
    case 'F16': return f16ToF32(new Uint16Array(buffer));
    case 'F64': return new Float32Array(new Float64Array(buffer));
    case 'I32': return new Float32Array(new Int32Array(buffer));
    case 'I64': return Float32Array.from(new BigInt64Array(buffer), Number);
    default: throw new Error(`toFloat32: unsupported dtype ${dtype}`);
  }
}

/**
 * `length` bytes at `position`, in a buffer of their own: a fresh ArrayBuffer is aligned for
 * any typed-array view, unlike a slice of Node's shared Buffer pool.
 */
function readExactly(fd: number, position: number, length: number): Uint8Array {
  return readInto(fd, new Uint8Array(new ArrayBuffer(length)), position);
}

/** Fills `bytes` from the file at `position`. */
function readInto(fd: number, bytes: Uint8Array, position: number): Uint8Array {
  const length = bytes.length;
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, bytes, done, Math.min(length - done, IO_CHUNK_BYTES), position + done);
    if (n === 0) throw new Error(`unexpected end of file at byte ${position + done}`);
    done += n;
  }
  return bytes;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isNonNegativeInteger(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

// ---------------------------------------------------------------------------------------------
// Writing

export interface TensorToWrite {
  name: string;
  shape: readonly number[];
  /** float32 values, or bfloat16 bit patterns (a weight kept as bf16 in memory) as a Uint16Array */
  data: Float32Array | Uint16Array;
  /** stored dtype; F32 when absent */
  dtype?: WritableDtype;
}

/** A list in file order, or a map from name (insertion order is file order). */
export type TensorsToWrite = readonly TensorToWrite[] | ReadonlyMap<string, Omit<TensorToWrite, 'name'>>;

/** Elements converted per step, so converting a large tensor needs only this much scratch. */
const CONVERT_CHUNK = 1 << 20;

export function tensorList(tensors: TensorsToWrite): TensorToWrite[] {
  if (tensors instanceof Map) return [...tensors].map(([name, t]) => ({ name, ...t }));
  return [...(tensors as readonly TensorToWrite[])];
}

/** Bytes the tensor takes on disk in its stored dtype. */
export function storedBytes(t: TensorToWrite): number {
  return t.data.length * ITEM_SIZE[t.dtype ?? 'F32'];
}

export function writeSafetensors(path: string, tensors: TensorsToWrite, metadata: Record<string, string> = {}): void {
  if (!HOST_IS_LITTLE_ENDIAN) throw new Error('tunekit writes safetensors only on little-endian machines');
  const list = tensorList(tensors);
  const headerBytes = encodeHeader(path, list, metadata);

  const tmp = `${path}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    writeAll(fd, headerBytes);
    const scratch = new Uint16Array(CONVERT_CHUNK);
    for (const t of list) writeTensorData(fd, t, scratch);
    fs.fsyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, path);
}

/** Length prefix + JSON header, padded with spaces (as the reference does) so data starts 8-aligned. */
function encodeHeader(path: string, list: TensorToWrite[], metadata: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  const seen = new Set<string>();
  for (const t of list) {
    checkWritable(path, t, seen);
    const size = storedBytes(t);
    header[t.name] = { dtype: t.dtype ?? 'F32', shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded).fill(0x20);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}

/** A bad tensor here is a bug in the caller, not a user's file, so these are plain errors. */
function checkWritable(path: string, t: TensorToWrite, seen: Set<string>): void {
  if (t.name === '__metadata__') throw new Error(`${path}: "__metadata__" is reserved and cannot name a tensor`);
  if (seen.has(t.name)) throw new Error(`${path}: tensor ${JSON.stringify(t.name)} given twice`);
  seen.add(t.name);
  if (!t.shape.every(isNonNegativeInteger)) throw new Error(`${path}: tensor ${JSON.stringify(t.name)} has bad shape ${JSON.stringify(t.shape)}`);
  const count = t.shape.reduce((n, d) => n * d, 1);
  if (count !== t.data.length) {
    throw new Error(`${path}: tensor ${JSON.stringify(t.name)} has shape ${JSON.stringify(t.shape)} (${count} values) but ${t.data.length} values`);
  }
  const dtype = t.dtype ?? 'F32';
  if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') throw new Error(`${path}: cannot write dtype ${dtype}`);
}

function writeTensorData(fd: number, t: TensorToWrite, scratch: Uint16Array): void {
  const dtype = t.dtype ?? 'F32';
  if (t.data instanceof Uint16Array) {
    writeBf16Data(fd, t.data, dtype, scratch);
    return;
  }
  if (dtype === 'F32') {
    writeAll(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    return;
  }
  const convert = dtype === 'BF16' ? f32ToBf16 : f32ToF16;
  for (let start = 0; start < t.data.length; start += scratch.length) {
    const src = t.data.subarray(start, start + scratch.length);
    const dst = convert(src, scratch.subarray(0, src.length));
    writeAll(fd, new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength));
  }
}

/** bf16 bit patterns: written as they are for BF16, else widened a chunk at a time and converted. */
function writeBf16Data(fd: number, data: Uint16Array, dtype: WritableDtype, scratch: Uint16Array): void {
  if (dtype === 'BF16') {
    writeAll(fd, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    return;
  }
  const wide = new Float32Array(Math.min(scratch.length, data.length));
  for (let start = 0; start < data.length; start += wide.length) {
    const part = data.subarray(start, start + wide.length);
    const f32 = bf16ToF32(part, wide.subarray(0, part.length));
    const out = dtype === 'F32' ? f32 : f32ToF16(f32, scratch.subarray(0, part.length));
    writeAll(fd, new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) {
    done += fs.writeSync(fd, bytes, done, Math.min(bytes.length - done, IO_CHUNK_BYTES));
  }
}
