import { setTimeout as sleep } from 'node:timers/promises';
import type { Writer } from '../writer/writer.js';

/**
 * The big answers, each kind paced on its own: the target list (whole or a page) and
 * http_sd. http_sd is Prometheus's read: it never waits behind list reads.
 */
export type Lane = 'list' | 'sd';

export interface BulkOptions {
  /** The rate each lane's answers share while writes wait, in bytes per second. */
  rates: Record<Lane, number>;
  now: () => number;
  /** Sleeps `ms`; may end early (resolve or reject) when `signal` aborts. */
  sleep: (ms: number, signal?: AbortSignal) => Promise<unknown>;
  /**
   * How long the writer stays dry before the answers go at once. A storm's writer runs dry
   * after each batch (every waiting client answered together, none has asked again yet):
   * released then, the readers went unpaced through the whole storm.
   */
  quietMs: number;
}

/** What pacing watches of the writer: whether it has work queued, and the moment it has none left. */
export type WriterQueue = Pick<Writer, 'pending' | 'onIdle'>;

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
 * has work queued, or had a moment ago (`quietMs`), each lane's answers go out one after the
 * other at the lane's rate; when it has been idle that long, at once, and every waiting
 * answer goes. A paced reader waits; a write never does.
 */
export class BulkReads {
  private readonly lanes: Record<Lane, PacedLane>;

  constructor(writer: WriterQueue, options: Partial<BulkOptions> = {}) {
    const { rates, quietMs, ...clock }: BulkOptions = {
      // 10 MB/s in all: what reads may take from a registration storm (bench/reads.ts).
      rates: { list: 5e6, sd: 5e6 },
      now: () => performance.now(),
      sleep: (ms, signal) => sleep(ms, undefined, { signal, ref: false }),
      quietMs: 500,
      ...options,
    };
    /** When the writer last ran dry (undefined: never yet). */
    let dry: number | undefined;
    const writesWaiting = () => writer.pending > 0 || (dry !== undefined && clock.now() - dry < quietMs);
    this.lanes = { list: new PacedLane(rates.list, writesWaiting, clock), sd: new PacedLane(rates.sd, writesWaiting, clock) };
    const releaseAll = () => Object.values(this.lanes).forEach((lane) => lane.release());
    const releaseIfStillDry = (since: number) => {
      if (dry !== since || writer.pending > 0) return; // it ran again: its next dry spell releases them
      releaseAll();
    };
    writer.onIdle((wrote) => {
      // Only a follow of the head ran (the ref watcher's poll): no storm, nothing to wait out.
      if (!wrote) {
        if (!writesWaiting()) releaseAll();
        return;
      }
      const since = (dry = clock.now());
      if (quietMs > 0) void clock.sleep(quietMs).then(() => releaseIfStillDry(since), () => undefined);
      else releaseIfStillDry(since);
    });
  }

  /** Waits for the turn of an answer of `bytes` in `lane` and books its share of the rate; `signal` (the client gone) ends the wait and gives the turn back. */
  turn(lane: Lane, bytes: number, signal?: AbortSignal): Promise<void> {
    return this.lanes[lane].turn(bytes, signal);
  }
}

/** One lane's queue of booked turns. A reader that goes away while it waits gives its turn back: the ones booked after it move up. */
class PacedLane {
  private next = 0;
  private readonly waiting: Waiter[] = [];

  constructor(
    private readonly bytesPerSecond: number,
    private readonly writesWaiting: () => boolean,
    private readonly clock: Pick<BulkOptions, 'now' | 'sleep'>,
  ) {}

  async turn(bytes: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return;
    const now = this.clock.now();
    const busy = this.writesWaiting();
    // Quiet for long enough, and the release that says so not run yet (a busy event loop): it runs now.
    if (!busy && this.waiting.length) this.release();
    const start = busy ? Math.max(now, this.next) : now;
    const length = (bytes / this.bytesPerSecond) * 1000;
    this.next = start + length;
    if (start <= now) return;
    const waiter: Waiter = { start, length, wake: new AbortController() };
    this.waiting.push(waiter);
    const leave = () => this.leave(waiter);
    signal?.addEventListener('abort', leave, { once: true });
    try {
      for (;;) {
        const wake = waiter.wake;
        const wait = waiter.start - this.clock.now();
        if (wait <= 0 || signal?.aborted) return;
        await this.clock.sleep(wait, wake.signal).catch(() => undefined);
        if (!wake.signal.aborted) return; // slept its time
      }
    } finally {
      signal?.removeEventListener('abort', leave);
      const index = this.waiting.indexOf(waiter);
      if (index >= 0) this.waiting.splice(index, 1);
    }
  }

  /** The writer has had nothing queued for a while: every waiting answer goes now, and the lane starts afresh. */
  release(): void {
    const now = this.clock.now();
    this.next = now;
    for (const waiter of this.waiting.splice(0)) {
      waiter.start = now;
      waiter.wake.abort();
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
