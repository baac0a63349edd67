import { apiHarness } from './api-helpers.js';
import { onCleanup } from './helpers.js';

/**
 * The clock and sleep BulkReads takes, moved by the test: a sleep ends when advance() passes
 * its end, or rejects when its signal aborts. `slept` is every sleep asked for, in order.
 */
export function pacingClock() {
  let now = 0;
  const sleepers = new Set<{ until: number; wake: () => void }>();
  const watchers = new Set<{ count: number; resolve: () => void }>();
  const changed = () => {
    for (const watcher of watchers) {
      if (watcher.count !== sleepers.size) continue;
      watchers.delete(watcher);
      watcher.resolve();
    }
  };
  const slept: number[] = [];
  return {
    now: () => now,
    slept,
    sleep: (ms: number, signal?: AbortSignal) =>
      new Promise<void>((resolve, reject) => {
        slept.push(ms);
        if (signal?.aborted) return reject(signal.reason);
        const aborted = () => {
          sleepers.delete(sleeper);
          changed();
          reject(signal!.reason);
        };
        const sleeper = {
          until: now + ms,
          wake: () => {
            signal?.removeEventListener('abort', aborted);
            resolve();
          },
        };
        signal?.addEventListener('abort', aborted, { once: true });
        sleepers.add(sleeper);
        changed();
      }),
    advance(ms: number) {
      now += ms;
      for (const sleeper of sleepers) {
        if (sleeper.until > now) continue;
        sleepers.delete(sleeper);
        sleeper.wake();
      }
      changed();
    },
    /** How many sleeps are pending. */
    waiting: () => sleepers.size,
    /** Resolves once exactly `count` sleeps are pending. While turns move up (a reader went away) the count passes through other values: wait on it when nothing moves. */
    sleeping: (count: number) =>
      new Promise<void>((resolve) => {
        watchers.add({ count, resolve });
        changed();
      }),
  };
}

/** The answer of `request()`, or 'waited' as soon as it sits down to wait for a turn instead (it may do so before it first yields). */
export function atOnce<T>(clock: ReturnType<typeof pacingClock>, request: () => Promise<T>): Promise<T | 'waited'> {
  const waited = clock.sleeping(clock.waiting() + 1).then(() => 'waited' as const);
  return Promise.race([request(), waited]);
}

/** A promise and whether it has settled yet. */
export function watched<T>(promise: Promise<T>) {
  const state = { promise, settled: false };
  void promise.finally(() => (state.settled = true)).catch(() => undefined);
  return state;
}

/** Holds the writer's queue busy (as a write waiting behind a commit does) until the returned function, or the test's end, lets it go. */
export function holdWriter(writer: { exclusive: <T>(fn: () => Promise<T>) => Promise<T> }) {
  let release!: () => void;
  const held = writer.exclusive(() => new Promise<void>((resolve) => (release = resolve)));
  const letGo = async () => {
    release();
    await held;
  };
  onCleanup(letGo);
  return letGo;
}

/**
 * The API with its big answers paced on a pacingClock at 1 kB/s: a turn's length in ms is the
 * answer's size in bytes. Waiting answers go the moment the writer runs dry (quietMs 0: the
 * quiet window has a test of its own).
 */
export async function pacedApi() {
  const clock = pacingClock();
  const api = await apiHarness({ pacing: { rates: { list: 1000, sd: 1000 }, now: clock.now, sleep: clock.sleep, quietMs: 0 } });
  return { clock, api };
}
