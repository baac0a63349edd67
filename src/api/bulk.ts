import { setTimeout as sleep } from 'node:timers/promises';

export interface BulkOptions {
  /** The rate big answers share while writes wait. */
  bytesPerSecond: number;
  now: () => number;
  sleep: (ms: number) => Promise<unknown>;
}

/**
 * Paces the big answers (the whole target list, http_sd: megabytes each) while writes are
 * waiting. Sending them costs the server CPU in proportion to their size, cached or not,
 * so a client reading one in a loop would take the CPU the writes need. While the writer
 * has work queued, big answers go out one after the other at `bytesPerSecond` in all; when
 * it is idle, at once. A paced reader waits; a write never does.
 */
export class BulkReads {
  private next = 0;
  private readonly options: BulkOptions;

  constructor(
    private readonly writesWaiting: () => boolean,
    options: Partial<BulkOptions> = {},
  ) {
    this.options = { bytesPerSecond: 10e6, now: () => performance.now(), sleep, ...options };
  }

  /** Waits for the turn of an answer of `bytes` and books its share of the rate. */
  async turn(bytes: number): Promise<void> {
    const now = this.options.now();
    const start = this.writesWaiting() ? Math.max(now, this.next) : now;
    this.next = start + (bytes / this.options.bytesPerSecond) * 1000;
    if (start > now) await this.options.sleep(start - now);
  }
}
