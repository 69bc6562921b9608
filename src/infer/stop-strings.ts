/**
 * Watches generated text for stop strings while streaming: text that might be the start of a
 * stop string is held back until it is clear either way.
 */
export class StopStringWatcher {
  private text = '';
  private emitted = 0;
  stopped = false;

  constructor(private readonly stops: readonly string[]) {}

  /** Adds decoded text; returns the part that is now safe to show. */
  push(piece: string): string {
    if (this.stopped) return '';
    this.text += piece;
    let cut = -1;
    for (const s of this.stops) {
      const at = this.text.indexOf(s, Math.max(0, this.emitted - s.length));
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.stopped = true;
      this.text = this.text.slice(0, cut);
      return this.release(cut);
    }
    return this.release(this.text.length - this.heldBack());
  }

  /** Everything not yet shown, at the end of generation. */
  flush(): string {
    return this.release(this.text.length);
  }

  /** The whole text so far, without any stop string. */
  get fullText(): string {
    return this.text;
  }

  private release(upTo: number): string {
    if (upTo <= this.emitted) return '';
    const out = this.text.slice(this.emitted, upTo);
    this.emitted = upTo;
    return out;
  }

  /** Length of the longest tail of the text that begins some stop string. */
  private heldBack(): number {
    let hold = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, this.text.length - this.emitted); n > hold; n--) {
        if (this.text.endsWith(s.slice(0, n))) {
          hold = n;
          break;
        }
      }
    }
    return hold;
  }
}
