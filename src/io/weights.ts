/**
 * A Hugging Face model folder's weights: one `model.safetensors`, or shards
 * `model-00001-of-0000N.safetensors` listed by `model.safetensors.index.json`, read and written
 * the way transformers' `save_pretrained` / `from_pretrained` do.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { FileFormatError } from '../errors.js';
import {
  describeNames,
  readSafetensors,
  storedBytes,
  tensorList,
  writeSafetensors,
  type SafetensorsFile,
  type TensorInfo,
  type TensorsToWrite,
  type TensorToWrite,
  type WritableDtype,
} from './safetensors.js';

const SINGLE_FILE = 'model.safetensors';
const INDEX_FILE = 'model.safetensors.index.json';
/** Every file a previous save may have left, so a new save can remove what it did not rewrite. */
const WEIGHT_FILE_PATTERN = /^model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?$/;
/** A shard named by an index: a plain file name, since a path could reach outside the folder. */
const SHARD_FILE_NAME = /^[^/\\]+\.safetensors$/;

export interface WeightSource {
  /** Tensor names, in index order for a sharded folder, file order otherwise. */
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  /** The tensor converted to float32, read from disk now. */
  get(name: string): Float32Array;
  /** The tensor as bf16 bit patterns (see `SafetensorsFile.getBf16`), read from disk now. */
  getBf16(name: string): Uint16Array;
  /** Closes every shard. */
  close(): void;
}

export function openWeights(dir: string): WeightSource {
  const indexPath = join(dir, INDEX_FILE);
  if (fs.existsSync(indexPath)) return openSharded(dir, indexPath);
  const singlePath = join(dir, SINGLE_FILE);
  if (fs.existsSync(singlePath)) return new FolderWeights(dir, new Map([[singlePath, readSafetensors(singlePath)]]), null);
  throw new FileFormatError(dir, `no ${SINGLE_FILE} or ${INDEX_FILE} in ${dir}`);
}

function openSharded(dir: string, indexPath: string): WeightSource {
  const weightMap = readWeightMap(indexPath);
  const shards = new Map<string, SafetensorsFile>();
  const byName = new Map<string, SafetensorsFile>();
  try {
    for (const [name, shardName] of Object.entries(weightMap)) {
      const shardPath = join(dir, shardName);
      let shard = shards.get(shardPath);
      if (!shard) {
        if (!fs.existsSync(shardPath)) {
          throw new FileFormatError(indexPath, `weight_map names shard "${shardName}", which is not in ${dir}`);
        }
        shard = readSafetensors(shardPath);
        shards.set(shardPath, shard);
      }
      if (!shard.has(name)) {
        throw new FileFormatError(indexPath, `weight_map puts tensor ${JSON.stringify(name)} in "${shardName}", which has no such tensor`);
      }
      byName.set(name, shard);
    }
  } catch (err) {
    for (const shard of shards.values()) shard.close();
    throw err;
  }
  return new FolderWeights(dir, shards, byName);
}

function readWeightMap(indexPath: string): Record<string, string> {
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  } catch (err) {
    throw new FileFormatError(indexPath, `not valid JSON (${(err as Error).message})`);
  }
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new FileFormatError(indexPath, 'missing "weight_map" (an object from tensor name to shard file)');
  }
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string' || !SHARD_FILE_NAME.test(shard)) {
      throw new FileFormatError(indexPath, `weight_map entry ${JSON.stringify(name)} must name a .safetensors file in the folder, got ${JSON.stringify(shard)}`);
    }
  }
  return weightMap as Record<string, string>;
}

class FolderWeights implements WeightSource {
  constructor(
    private readonly dir: string,
    private readonly shards: Map<string, SafetensorsFile>,
    /** tensor name -> shard; null for a single file, which answers for itself */
    private readonly byName: Map<string, SafetensorsFile> | null,
  ) {}

  names(): string[] {
    return this.byName ? [...this.byName.keys()] : this.single().names();
  }

  has(name: string): boolean {
    return this.byName ? this.byName.has(name) : this.single().has(name);
  }

  info(name: string): TensorInfo {
    return this.fileOf(name).info(name);
  }

  get(name: string): Float32Array {
    return this.fileOf(name).get(name);
  }

  getBf16(name: string): Uint16Array {
    return this.fileOf(name).getBf16(name);
  }

  close(): void {
    for (const shard of this.shards.values()) shard.close();
  }

  private single(): SafetensorsFile {
    return this.shards.values().next().value as SafetensorsFile;
  }

  private fileOf(name: string): SafetensorsFile {
    if (!this.byName) return this.single();
    const shard = this.byName.get(name);
    if (!shard) throw new FileFormatError(this.dir, `no tensor ${JSON.stringify(name)}; the model has ${describeNames(this.names())}`);
    return shard;
  }
}

export interface SaveWeightsOptions {
  /** stored dtype for tensors that do not name their own; F32 when absent */
  dtype?: WritableDtype;
  /** largest shard, counting tensor bytes; a tensor larger than this gets a shard of its own */
  maxShardBytes?: number;
  /** merged over `{format: 'pt'}`, which transformers expects when loading */
  metadata?: Record<string, string>;
}

/** transformers' default `max_shard_size="5GB"` (decimal), so shard counts match its saves. */
const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

/**
 * Writes the tensors into `dir` as transformers would: `model.safetensors` when they fit in one
 * shard, else numbered shards and an index. Weight files from an earlier save that this one did
 * not rewrite are removed afterwards, so a stale index cannot shadow the new weights.
 */
export function saveWeights(dir: string, tensors: TensorsToWrite, options: SaveWeightsOptions = {}): void {
  const list = tensorList(tensors).map((t) => ({ ...t, dtype: t.dtype ?? options.dtype ?? 'F32' }));
  const metadata = { format: 'pt', ...options.metadata };
  const shards = planShards(list, options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES);
  fs.mkdirSync(dir, { recursive: true });

  const written: string[] = [];
  if (shards.length === 1) {
    writeSafetensors(join(dir, SINGLE_FILE), shards[0], metadata);
    written.push(SINGLE_FILE);
  } else {
    const weightMap: Record<string, string> = {};
    shards.forEach((shard, i) => {
      const file = `model-${pad5(i + 1)}-of-${pad5(shards.length)}.safetensors`;
      writeSafetensors(join(dir, file), shard, metadata);
      for (const t of shard) weightMap[t.name] = file;
      written.push(file);
    });
    // The index goes last: until it lands, a reader still sees the previous save whole.
    writeIndex(join(dir, INDEX_FILE), list, weightMap);
    written.push(INDEX_FILE);
  }
  removeStaleWeightFiles(dir, written);
}

/** Greedy in the given order, as transformers' `shard_checkpoint` does. */
function planShards(list: TensorToWrite[], maxShardBytes: number): TensorToWrite[][] {
  const shards: TensorToWrite[][] = [[]];
  let size = 0;
  for (const t of list) {
    const bytes = storedBytes(t);
    if (size + bytes > maxShardBytes && shards[shards.length - 1].length > 0) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1].push(t);
    size += bytes;
  }
  return shards;
}

function writeIndex(path: string, list: TensorToWrite[], weightMap: Record<string, string>): void {
  const totalSize = list.reduce((n, t) => n + storedBytes(t), 0);
  // transformers writes the index with sorted keys and a 2-space indent.
  const sortedMap = Object.fromEntries(Object.keys(weightMap).sort().map((name) => [name, weightMap[name]]));
  const text = JSON.stringify({ metadata: { total_size: totalSize }, weight_map: sortedMap }, null, 2) + '\n';
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeFileSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, path);
}

function removeStaleWeightFiles(dir: string, keep: string[]): void {
  for (const file of fs.readdirSync(dir)) {
    if (WEIGHT_FILE_PATTERN.test(file) && !keep.includes(file)) fs.rmSync(join(dir, file));
  }
}

function pad5(n: number): string {
  return String(n).padStart(5, '0');
}
