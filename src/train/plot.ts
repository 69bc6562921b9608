import fs from 'node:fs';
import { PNG } from 'pngjs';

export interface LossSeries {
  train: Array<[step: number, loss: number]>;
  eval: Array<[step: number, loss: number]>;
}

type Rgb = [number, number, number];

// 3×5 glyphs for axis numbers, one row of 3 bits per line.
const GLYPHS: Record<string, number[]> = {
  '0': [7, 5, 5, 5, 7], '1': [2, 6, 2, 2, 7], '2': [7, 1, 7, 4, 7], '3': [7, 1, 7, 1, 7], '4': [5, 5, 7, 1, 1],
  '5': [7, 4, 7, 1, 7], '6': [7, 4, 7, 5, 7], '7': [7, 1, 1, 1, 1], '8': [7, 5, 7, 5, 7], '9': [7, 5, 7, 1, 7],
  '.': [0, 0, 0, 0, 2], '-': [0, 0, 7, 0, 0], e: [0, 7, 7, 4, 7],
};

class Canvas {
  readonly png: PNG;

  constructor(readonly width: number, readonly height: number) {
    this.png = new PNG({ width, height });
    this.png.data.fill(255);
  }

  set(x: number, y: number, [r, g, b]: Rgb): void {
    x = Math.round(x);
    y = Math.round(y);
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const i = (y * this.width + x) * 4;
    this.png.data[i] = r;
    this.png.data[i + 1] = g;
    this.png.data[i + 2] = b;
    this.png.data[i + 3] = 255;
  }

  line(x0: number, y0: number, x1: number, y1: number, c: Rgb, thick = 1): void {
    const n = Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0), 1);
    for (let i = 0; i <= n; i++) {
      const x = x0 + ((x1 - x0) * i) / n;
      const y = y0 + ((y1 - y0) * i) / n;
      for (let dx = 0; dx < thick; dx++) for (let dy = 0; dy < thick; dy++) this.set(x + dx, y + dy, c);
    }
  }

  text(s: string, x: number, y: number, c: Rgb, size = 2): void {
    for (const ch of s) {
      const g = GLYPHS[ch];
      if (g) g.forEach((row, r) => [4, 2, 1].forEach((bit, col) => {
        if (row & bit) for (let a = 0; a < size; a++) for (let b = 0; b < size; b++) this.set(x + col * size + a, y + r * size + b, c);
      }));
      x += 4 * size;
    }
  }
}

/** Exponential moving average, as LLaMA-Factory smooths its loss plot. */
export function smooth(values: number[], weight = 0.6): number[] {
  const out: number[] = [];
  let last = values[0] ?? 0;
  for (const v of values) {
    last = last * weight + (1 - weight) * v;
    out.push(last);
  }
  return out;
}

function label(v: number): string {
  return Math.abs(v) >= 0.01 && Math.abs(v) < 10000 ? v.toFixed(v < 10 ? 2 : 0) : v.toExponential(1);
}

/** Writes the training (raw and smoothed) and evaluation loss curves as a PNG. */
export function plotLoss(series: LossSeries, path: string): void {
  const W = 640;
  const H = 400;
  const L = 70;
  const R = 20;
  const T = 20;
  const B = 40;
  const c = new Canvas(W, H);
  const all = [...series.train, ...series.eval];
  if (all.length === 0) return;
  const maxStep = Math.max(...all.map(([s]) => s), 1);
  let lo = Math.min(...all.map(([, l]) => l));
  let hi = Math.max(...all.map(([, l]) => l));
  if (hi - lo < 1e-6) {
    lo -= 0.5;
    hi += 0.5;
  }
  const px = (s: number) => L + ((W - L - R) * s) / maxStep;
  const py = (l: number) => H - B - ((H - T - B) * (l - lo)) / (hi - lo);
  for (let i = 0; i <= 4; i++) {
    const y = T + ((H - T - B) * i) / 4;
    c.line(L, y, W - R, y, [230, 230, 230]);
    c.text(label(hi - ((hi - lo) * i) / 4), 4, y - 5, [80, 80, 80]);
  }
  c.line(L, T, L, H - B, [0, 0, 0]);
  c.line(L, H - B, W - R, H - B, [0, 0, 0]);
  c.text('0', L - 4, H - B + 8, [80, 80, 80]);
  c.text(String(maxStep), W - R - 8 * String(maxStep).length, H - B + 8, [80, 80, 80]);
  const raw = series.train;
  for (let i = 1; i < raw.length; i++) c.line(px(raw[i - 1][0]), py(raw[i - 1][1]), px(raw[i][0]), py(raw[i][1]), [160, 190, 230]);
  const sm = smooth(raw.map(([, l]) => l));
  for (let i = 1; i < raw.length; i++) c.line(px(raw[i - 1][0]), py(sm[i - 1]), px(raw[i][0]), py(sm[i]), [20, 70, 170], 2);
  for (const [s, l] of series.eval) for (let d = -3; d <= 3; d++) c.line(px(s) - 3, py(l) + d, px(s) + 3, py(l) + d, [230, 120, 20]);
  const tmp = `${path}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, PNG.sync.write(c.png));
  fs.renameSync(tmp, path);
}
