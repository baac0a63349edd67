import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export interface MemoryReleaseOptions {
  /** How long the server stays without work before it collects. */
  quietMs?: number;
  /** Collect once the heap holds this much more than after the last collection (and at least `growthShare` of it). */
  growthBytes?: number;
  growthShare?: number;
  /** Bytes in use now: the heap's used size and the memory outside it (buffers). */
  inUse?: () => number;
  /** A full collection. */
  collect?: () => void;
  /** Work under way that did not end in a call to worked() yet: the collection waits another quiet time. */
  busy?: () => boolean;
  /** Told of each collection: how long it held the event loop. */
  collected?: (info: { ms: number }) => void;
}

/**
 * Returns the garbage of big work to the system once the server goes quiet. V8 starts a full
 * collection only when allocation asks for one: a server that rendered its whole fleet
 * (start-up, an aami.yaml change) or took a registration storm, then went idle, kept the dead
 * objects and their pages until traffic came back — ~90 MB of RSS at 100k targets after a
 * restart, for as long as it stayed idle. A collection at 100k targets holds the event loop
 * 350-440 ms, so it runs only after the heap grew by a share of itself, and not while work
 * runs: each call to `worked()` moves it back, and `busy` (a write queued, a compile under
 * way) puts it off by another quiet time. Registrations closer together than the quiet time
 * keep moving it back; ones further apart each get a look, which collects only once the
 * heap grew enough.
 */
export class MemoryRelease {
  private timer: NodeJS.Timeout | undefined;
  /** Bytes in use after the last collection; none before the first, so the first quiet moment after start-up (64 MB in use) collects. */
  private baseline = 0;
  /** The collection threw once (a Node that no longer hands gc() over): not tried again. */
  private failed = false;
  private readonly inUse: () => number;
  private readonly collect: () => void;

  constructor(private readonly options: MemoryReleaseOptions = {}) {
    this.inUse = options.inUse ?? inUse;
    this.collect = options.collect ?? fullCollection();
  }

  /** Work just ended (a compile): collect once the server has stayed quiet, if the heap grew enough. */
  worked(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.release(), this.options.quietMs ?? 2000);
    this.timer.unref();
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  private release(): void {
    this.timer = undefined;
    if (this.failed) return;
    if (this.options.busy?.()) return this.worked();
    const now = this.inUse();
    // V8 may have collected by itself meanwhile: then `now` is close to the baseline again.
    if (now - this.baseline < Math.max(this.options.growthBytes ?? 64 * 2 ** 20, (this.options.growthShare ?? 0.5) * this.baseline)) return;
    const started = performance.now();
    try {
      this.collect();
    } catch {
      // Serve on without it: a throw from this timer would end the process.
      this.failed = true;
      return;
    }
    this.options.collected?.({ ms: performance.now() - started });
    // Buffers the collection found dead are freed by a background thread: look again a moment later (new work may have come meanwhile: the lower).
    this.baseline = this.inUse();
    setTimeout(() => (this.baseline = Math.min(this.baseline, this.inUse())), 200).unref();
  }
}

function inUse(): number {
  // arrayBuffers, not external: V8's count of external memory lags behind frees until a scavenge.
  const { heapUsed, arrayBuffers } = process.memoryUsage();
  return heapUsed + arrayBuffers;
}

/**
 * V8's own `gc()`, without starting Node with `--expose-gc`: the flag is set for as long as
 * a fresh context is made to take the function from (what Jest's leak detector does). For
 * that one collection V8 runs as when it saves memory, and compacts the old generation: a
 * plain gc() left ~17 MB of gaps in it at 100k targets (a restart settled at ~311 MB of
 * RSS, against 293-296). The young generation keeps its reserve (34 MB): V8 gives it back
 * only in collections of its own, with the flags still set.
 */
function fullCollection(): () => void {
  let gc: (() => void) | undefined;
  // Flags set for one collection are unset after it, but never one node was started with.
  const given = (flag: string) => [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((arg) => arg.replace(/_/g, '-') === flag);
  const during = (flag: string, fn: () => void) => {
    if (given(flag)) return fn();
    setFlagsFromString(flag);
    try {
      fn();
    } finally {
      setFlagsFromString(flag.replace(/^--/, '--no-'));
    }
  };
  return () => {
    if (!gc) {
      during('--expose-gc', () => (gc = runInNewContext('gc') as () => void));
      if (typeof gc !== 'function') throw new Error('V8 did not hand gc() over');
    }
    // It also leaves V8's next heap limit conservative until the next full collection: the next burst collects a little sooner.
    during('--optimize-for-size', () => during('--compact-on-every-full-gc', () => gc!()));
  };
}
