/**
 * Encoded examples to batches the decoder takes (`DecoderInput`'s ids, positions, keyMask,
 * segments), plus the seeded epoch order.
 *
 * Unpacked: each example is one row, right-padded to the batch's longest row with the pad id,
 * label −100 and keyMask 0 on padding.
 *
 * Packed: examples are concatenated into rows of at most cutoffLen (first fit, in the order
 * given). `segments` numbers the examples of a row 0, 1, … (−1 on padding) so attention never
 * crosses them, and `positions` restart at 0 for each example, so the rotary phase is what an
 * unpacked run sees. The label of the first token of every packed example is −100: the trainer
 * shifts labels by one, so that label would be predicted from the previous example's last token;
 * an unpacked run never predicts its first token either, so packed and unpacked losses agree.
 * (Hugging Face's DataCollatorWithFlattening does the same.)
 */
import { IGNORE_INDEX } from '../tensor/ops/loss.js';
import { Rng } from '../tensor/random.js';
import type { EncodedExample } from './encode.js';

export interface Batch {
  /** [batch, length] token ids, row-major. */
  ids: Int32Array;
  /** [batch, length], aligned with ids (not shifted); −100 where no loss is taken. */
  labels: Int32Array;
  batch: number;
  length: number;
  /** [batch, length] 1 for a real token, 0 for padding. */
  keyMask: Uint8Array;
  /** [batch, length] example id within the row when packed (−1 on padding); null when not packed. */
  segments: Int32Array | null;
  /** [batch, length] rotary positions: 0, 1, … per example (0 on padding). */
  positions: Int32Array;
}

export interface BatchOptions {
  /** Rows per batch (the last batch may have fewer). */
  batchSize: number;
  /** Concatenate examples into rows of cutoffLen. */
  packing?: boolean;
  cutoffLen: number;
  padId: number;
}

/** The id padding uses: the tokenizer's pad token, else its eos token, else 0 (padding is masked anyway). */
export function padIdOf(tokenizer: { padTokenId: number | null; eosTokenId: number | null }): number {
  return tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0;
}

/** A shuffled order of 0..n−1 that depends only on (seed, epoch). */
export function epochOrder(n: number, seed: number, epoch: number): number[] {
  const rng = new Rng((Math.imul(epoch + 1, 0x9e3779b9) ^ seed) >>> 0);
  return rng.shuffle(Array.from({ length: n }, (_, i) => i));
}

/** Batches of the examples in the order given (apply {@link epochOrder} first). */
export function makeBatches(examples: readonly EncodedExample[], opts: BatchOptions): Batch[] {
  if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) throw new Error(`makeBatches: batchSize ${opts.batchSize}`);
  for (const e of examples) {
    if (e.inputIds.length === 0 || e.inputIds.length !== e.labels.length) throw new Error('makeBatches: an example has no ids or mismatched labels');
    if (opts.packing && e.inputIds.length > opts.cutoffLen) {
      throw new Error(`makeBatches: an example of ${e.inputIds.length} tokens exceeds cutoffLen ${opts.cutoffLen}; encode truncates first`);
    }
  }
  const rows = opts.packing ? packRows(examples, opts.cutoffLen) : examples.map((e) => [e]);
  const batches: Batch[] = [];
  for (let i = 0; i < rows.length; i += opts.batchSize) {
    batches.push(buildBatch(rows.slice(i, i + opts.batchSize), opts.padId, opts.packing === true));
  }
  return batches;
}

/**
 * Groups examples into rows of at most `cutoffLen` tokens: each goes to the first row with room
 * (rows in creation order), so the result is fixed by the input order.
 */
export function packRows(examples: readonly EncodedExample[], cutoffLen: number): EncodedExample[][] {
  const rows: EncodedExample[][] = [];
  const used: number[] = [];
  for (const e of examples) {
    const n = e.inputIds.length;
    let r = used.findIndex((u) => u + n <= cutoffLen);
    if (r < 0) {
      r = rows.length;
      rows.push([]);
      used.push(0);
    }
    rows[r].push(e);
    used[r] += n;
  }
  return rows;
}

function buildBatch(rows: EncodedExample[][], padId: number, packed: boolean): Batch {
  const B = rows.length;
  const T = Math.max(...rows.map((r) => r.reduce((n, e) => n + e.inputIds.length, 0)));
  const ids = new Int32Array(B * T).fill(padId);
  const labels = new Int32Array(B * T).fill(IGNORE_INDEX);
  const keyMask = new Uint8Array(B * T);
  const segments = packed ? new Int32Array(B * T).fill(-1) : null;
  const positions = new Int32Array(B * T);
  rows.forEach((row, b) => {
    let at = b * T;
    row.forEach((e, s) => {
      ids.set(e.inputIds, at);
      labels.set(e.labels, at);
      if (packed) labels[at] = IGNORE_INDEX; // never learn an example's first token from the one before
      keyMask.fill(1, at, at + e.inputIds.length);
      segments?.fill(s, at, at + e.inputIds.length);
      for (let t = 0; t < e.inputIds.length; t++) positions[at + t] = t;
      at += e.inputIds.length;
    });
  });
  return { ids, labels, batch: B, length: T, keyMask, segments, positions };
}
