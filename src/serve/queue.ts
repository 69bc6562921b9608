import { queueFull } from './errors.js';

/** Given back by {@link FairQueue.acquire}: call once the model is free again. */
export type Release = () => void;

interface Waiter {
  grant: (release: Release) => void;
}

/**
 * One model, one request at a time: requests take turns in arrival order (FIFO, so none waits
 * behind a later one), with at most `maxWaiting` waiting behind the one running; more are
 * refused at once with 429. A request whose client leaves while it waits leaves the queue.
 */
export class FairQueue {
  private running = false;
  private readonly waiting: Waiter[] = [];

  constructor(readonly maxWaiting: number) {
    if (!Number.isInteger(maxWaiting) || maxWaiting < 0) throw new RangeError(`maxWaiting must be an integer ≥ 0, got ${maxWaiting}`);
  }

  get stats(): { running: boolean; waiting: number } {
    return { running: this.running, waiting: this.waiting.length };
  }

  /**
   * Resolves when it is this caller's turn. Throws the 429 ApiError when the queue is full, and
   * rejects with `signal.reason` when the signal aborts first.
   */
  acquire(signal?: AbortSignal): Promise<Release> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (!this.running && this.waiting.length === 0) {
      this.running = true;
      return Promise.resolve(this.releaser());
    }
    if (this.waiting.length >= this.maxWaiting) return Promise.reject(queueFull(this.maxWaiting));
    return new Promise<Release>((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.waiting.indexOf(waiter);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(signal?.reason);
      };
      const waiter: Waiter = {
        grant: (release) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(release);
        },
      };
      this.waiting.push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Turns the slot over to the next waiter, or frees it; only the first call counts. */
  private releaser(): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next.grant(this.releaser());
      else this.running = false;
    };
  }
}
