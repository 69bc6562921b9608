/**
 * A one-line download progress bar on stderr: redrawn in place (at most ten times a second) on a
 * terminal; on a pipe or a log file only the start and the end are written, one line each.
 */
export interface ProgressSink {
  write(text: string): unknown;
  isTTY?: boolean;
}

export class ProgressBar {
  private done = 0;
  private lastDraw = 0;
  private readonly started = Date.now();

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly sink: ProgressSink | null,
    /** Bytes already on disk (a resumed download). */
    private readonly resumedFrom = 0,
  ) {
    this.done = resumedFrom;
    if (sink && !sink.isTTY) {
      const resumed = resumedFrom > 0 ? `, resuming at ${formatBytes(resumedFrom)}` : '';
      sink.write(`downloading ${label} (${formatBytes(total)}${resumed})\n`);
    }
  }

  add(bytes: number): void {
    this.done += bytes;
    const now = Date.now();
    if (this.sink?.isTTY && now - this.lastDraw >= 100) {
      this.lastDraw = now;
      this.sink.write(`\r${this.line()}\x1b[K`);
    }
  }

  finish(): void {
    if (!this.sink) return;
    if (this.sink.isTTY) this.sink.write(`\r${this.line()}\x1b[K\n`);
    else this.sink.write(`downloaded ${this.label} (${formatBytes(this.total)})\n`);
  }

  /** Ends the line after a failure, so the error message starts on its own line. */
  abort(): void {
    if (this.sink?.isTTY) this.sink.write('\n');
  }

  private line(): string {
    const fraction = this.total > 0 ? Math.min(1, this.done / this.total) : 1;
    const width = 24;
    const filled = Math.round(fraction * width);
    const seconds = Math.max((Date.now() - this.started) / 1000, 1e-3);
    const rate = (this.done - this.resumedFrom) / seconds;
    const bar = `${'█'.repeat(filled)}${'░'.repeat(width - filled)}`;
    return `${this.label} ${bar} ${(fraction * 100).toFixed(0).padStart(3)}% ${formatBytes(this.done)}/${formatBytes(this.total)} ${formatBytes(rate)}/s`;
  }
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}
