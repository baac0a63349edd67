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
