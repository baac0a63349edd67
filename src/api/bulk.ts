import { setTimeout as sleep } from 'node:timers/promises';

export interface BulkOptions {
  /** The rate big answers share while writes wait. */
  bytesPerSecond: number;
  now: () => number;
  /** Sleeps `ms`; may end early (resolve or reject) when `signal` aborts. */
  sleep: (ms: number, signal?: AbortSignal) => Promise<unknown>;
}

/** A booked turn not started yet. */
interface Waiter {
  start: number;
  length: number;
  /** Aborted to wake it: its client went away, or its start moved. */
  wake: AbortController;
}

/**
 * Paces the big answers (the whole target list, http_sd: megabytes each) while writes are
 * waiting. Sending them costs the server CPU in proportion to their size, cached or not,
 * so a client reading one in a loop would take the CPU the writes need. While the writer
 * has work queued, big answers go out one after the other at `bytesPerSecond` in all; when
 * it is idle, at once. A paced reader waits; a write never does. A reader that goes away
 * while it waits gives its turn back: the ones booked after it move up.
 */
export class BulkReads {
  private next = 0;
  private readonly options: BulkOptions;
  private readonly waiting: Waiter[] = [];

  constructor(
    private readonly writesWaiting: () => boolean,
    options: Partial<BulkOptions> = {},
  ) {
    this.options = { bytesPerSecond: 10e6, now: () => performance.now(), sleep: (ms, signal) => sleep(ms, undefined, { signal }), ...options };
  }

  /** Waits for the turn of an answer of `bytes` and books its share of the rate; `signal` (the client gone) ends the wait and gives the turn back. */
  async turn(bytes: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return;
    const now = this.options.now();
    const start = this.writesWaiting() ? Math.max(now, this.next) : now;
    const length = (bytes / this.options.bytesPerSecond) * 1000;
    this.next = start + length;
    if (start <= now) return;
    const waiter: Waiter = { start, length, wake: new AbortController() };
    this.waiting.push(waiter);
    const leave = () => this.leave(waiter);
    signal?.addEventListener('abort', leave, { once: true });
    try {
      for (;;) {
        const wake = waiter.wake;
        const wait = waiter.start - this.options.now();
        if (wait <= 0 || signal?.aborted) return;
        await this.options.sleep(wait, wake.signal).catch(() => undefined);
        if (!wake.signal.aborted) return; // slept its time
      }
    } finally {
      signal?.removeEventListener('abort', leave);
      const index = this.waiting.indexOf(waiter);
      if (index >= 0) this.waiting.splice(index, 1);
    }
  }

  /** A waiter's client went away: the turns booked after it start its length earlier. */
  private leave(waiter: Waiter): void {
    const index = this.waiting.indexOf(waiter);
    if (index < 0) return;
    this.waiting.splice(index, 1);
    this.next -= waiter.length;
    waiter.wake.abort();
    for (const later of this.waiting.slice(index)) {
      later.start -= waiter.length;
      later.wake.abort();
      later.wake = new AbortController();
    }
  }
}
