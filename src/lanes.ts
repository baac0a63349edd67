/**
 * Run a lane's `each` on every item, `lanes` items at a time: a lane takes the next item as
 * soon as its last one is done (batches of `lanes` left the work idle while each batch's
 * slowest item finished). `lane` makes each lane's `each`, with whatever state a lane keeps.
 * After a failure no lane takes another item, and the first failure is thrown only once
 * every lane has finished: nothing is still running when the caller hears of it.
 */
export async function inLanes<T>(items: readonly T[], lanes: number, lane: () => (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const run = async () => {
    const each = lane();
    while (!failure && next < items.length) {
      try {
        await each(items[next++]!);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(lanes, items.length) }, run));
  if (failure) throw failure.error;
}

/**
 * `fn` run at most `running` calls at a time, with at most `waiting` more queued behind
 * them; a call past those gets `refuse()`'s error at once. For work a client can start as
 * often as it asks and the server pays for (a `git log` over a long history: ~0.4 s of a
 * core at 30k commits), so a burst of such requests waits its turn, bounded, instead of
 * running every one at once and taking every core from the writes.
 */
export function limited<A extends unknown[], R>(fn: (...args: A) => Promise<R>, limits: { running: number; waiting: number }, refuse: () => Error): (...args: A) => Promise<R> {
  let active = 0;
  const queue: Array<() => void> = [];
  return async (...args: A) => {
    if (active >= limits.running) {
      if (queue.length >= limits.waiting) throw refuse();
      // A finished call hands its place to the first in line: `active` stays counted for it.
      await new Promise<void>((resolve) => queue.push(resolve));
    } else {
      active++;
    }
    try {
      return await fn(...args);
    } finally {
      const next = queue.shift();
      if (next) next();
      else active--;
    }
  };
}
