import { constants, PerformanceObserver } from 'node:perf_hooks';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { nodeFlag } from './v8-flags.js';

export interface MemoryReleaseOptions {
  /** How long the server stays without work before it collects. */
  quietMs?: number;
  /** Collect once the process holds this much more memory than after the last collection (and at least `growthShare` more). */
  growthBytes?: number;
  growthShare?: number;
  /** The process's resident memory now, in bytes. */
  resident?: () => number;
  /** A full collection. */
  collect?: () => void;
  /** Work under way that did not end in a call to worked() yet: the collection waits another quiet time. */
  busy?: () => boolean;
  /** Told of each collection: how long it held the event loop. */
  collected?: (info: { ms: number }) => void;
  /** Milliseconds on a monotonic clock (tests move it). */
  now?: () => number;
}

/**
 * Returns the garbage of big work to the system once the server goes quiet. V8 starts a full
 * collection only when allocation asks for one, and keeps the pages it collected for the
 * next burst: a server that rendered its whole fleet (start-up, an aami.yaml change) or took
 * a registration storm, then went idle, kept them until traffic came back — ~90 MB of RSS at
 * 100k targets after a restart, ~50 MB after a storm. A collection at 100k targets holds the
 * event loop 350-440 ms, so it runs only once the process grew by 32 MB (and a tenth of
 * itself) since the last one, and not while work runs: each call to `worked()` moves it
 * back, and `busy` (a write queued, a compile under way) puts it off by another quiet time.
 * The quiet time is short (half a second) so that registrations a second apart still let it
 * run. V8's own headroom between its collections can make that growth too, under steady
 * light traffic: so one collection never follows another sooner than a hundred times what
 * the last one took (40 s at 100k targets), which keeps it under 1 % of the event loop.
 */
export class MemoryRelease {
  private timer: NodeJS.Timeout | undefined;
  /** Resident bytes after the last collection; none before the first, so the first quiet moment after start-up collects. */
  private baseline = 0;
  /** No collection before this time: a hundred times the last one's length after it. */
  private notBefore = 0;
  /** The collection threw once (a Node that no longer hands gc() over): not tried again. */
  private failed = false;
  private readonly resident: () => number;
  private readonly collect: () => void;
  private readonly now: () => number;

  constructor(private readonly options: MemoryReleaseOptions = {}) {
    this.now = options.now ?? (() => performance.now());
    this.resident = options.resident ?? (() => process.memoryUsage.rss());
    this.collect = options.collect ?? fullCollection();
  }

  /** Work just ended (a compile): collect once the server has stayed quiet, if it grew enough. */
  worked(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.release(), this.options.quietMs ?? 500);
    this.timer.unref();
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  private release(): void {
    this.timer = undefined;
    if (this.failed) return;
    if (this.options.busy?.()) return this.worked();
    if (this.resident() - this.baseline < Math.max(this.options.growthBytes ?? 32 * 2 ** 20, (this.options.growthShare ?? 0.1) * this.baseline)) return;
    const wait = this.notBefore - this.now();
    if (wait > 0) {
      this.timer = setTimeout(() => this.release(), wait);
      this.timer.unref();
      return;
    }
    const started = this.now();
    try {
      this.collect();
    } catch {
      // Serve on without it: a throw from this timer would end the process.
      this.failed = true;
      return;
    }
    const ms = this.now() - started;
    this.notBefore = this.now() + 100 * ms;
    this.options.collected?.({ ms });
    // Buffers the collection found dead are freed by a background thread: look again a moment later (new work may have come meanwhile: the lower).
    this.baseline = this.resident();
    setTimeout(() => (this.baseline = Math.min(this.baseline, this.resident())), 200).unref();
  }
}

/**
 * V8's own `gc()`, without starting Node with `--expose-gc`: the flag is set for as long as
 * a fresh context is made to take the function from (what Jest's leak detector does). For
 * that one collection V8 runs as when it saves memory, compacting the pages it finds worth
 * it. Not every page (`--compact-on-every-full-gc`, as it was): that settled ~15-30 MB lower
 * at 100k targets, but copying the whole live old generation (~90 MB) to new pages before
 * the old ones went took the process to ~360 MB for the moment, after every storm. A plain
 * gc() settled ~30 MB higher. The young generation keeps its reserve (34 MB): V8 gives it
 * back only in a collection that finds allocation low for the last 5 s (giving it back
 * ourselves made the light traffic after it cost more CPU: tried, and left).
 */
function fullCollection(): () => void {
  let gc: (() => void) | undefined;
  // Flags set for one collection are unset after it, but never one node was started with (one given off is set and unset again: off, as given).
  const during = (flag: string, fn: () => void) => {
    if (nodeFlag(flag) === true) return fn();
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
    // It also leaves V8's next heap limit conservative until the next full collection (unless HeapGrowth holds growth): the next burst collects a little sooner.
    during('--optimize-for-size', () => gc!());
  };
}

export interface HeapGrowthOptions {
  /** What the old generation holds after a full collection at or above which growth is held to `percent` (32 MB), and below which V8 decides again (24 MB). */
  holdFrom?: number;
  releaseBelow?: number;
  percent?: number;
  /** Sets V8's growth: a percentage, or 0 for V8's own. */
  setPercent?: (percent: number) => void;
  /** Bytes the old generation holds now (read soon after a full collection). */
  used?: () => number;
}

/**
 * How far the heap may grow between full collections, for a big catalog. After each one, V8
 * lets the heap grow to up to 4× what it kept, the more the faster the program allocates
 * against how fast V8 collects: a first start (every file read and checked) and a storm
 * allocate fast. A server at 100k targets keeps ~90 MB: it held 311-319 MB of RSS after its
 * first start (a peak of 348-364), and storms of 2,000 registrations piled up to 305-362 MB
 * by their third round, none of it collected before they ended (bench:startup,
 * bench:register). Held at 25 % once the old generation holds 32 MB after a full collection
 * (~15k targets; a 100k first start reaches it half a second in): such a start holds
 * ~255 MB (peak ~266) and takes ~0.1-0.3 s longer, and storms collect as they go. V8 lets
 * the old generation reach what it kept times that, plus the young generation's 16 MB: at
 * 100k targets (~87 MB kept) held at 50 %, the third storm's peak was 288-327 MB (median 297
 * over 5 runs), at 25 % 278-299 (median 282), the first storm's p99 alike (bench:register).
 * The limit a collection sets holds until the next one: held any later, the first start's
 * peak stayed at 364 MB. A small catalog keeps V8's own growth: held there too, a fresh
 * 10k-target storm's p99 went from ~90 to ~110 ms (more collections, for memory it does not
 * need). V8 reads the flag at each collection; one given to node is left as given. While it
 * is held, it also stands for the limits V8 sets after a collection that saves memory
 * (MemoryRelease's, V8's own when idle): 1.25× what they kept, as V8 would allow 1.1-1.3×.
 */
export class HeapGrowth {
  private observer: PerformanceObserver | undefined;
  private held = false;
  private readonly setPercent: (percent: number) => void;
  private readonly used: () => number;

  constructor(private readonly options: HeapGrowthOptions = {}) {
    this.setPercent = options.setPercent ?? ((percent) => setFlagsFromString(`--heap-growing-percent=${percent}`));
    // The observer is told from the event loop, after what the program allocated since: the young generation's share of it is left out.
    this.used = options.used ?? (() => getHeapSpaceStatistics().reduce((sum, space) => (space.space_name.startsWith('new_') ? sum : sum + space.space_used_size), 0));
  }

  /** Watches full collections (none when node was given the flag). */
  start(): this {
    if (this.observer || nodeFlag('--heap-growing-percent') !== undefined) return this;
    this.observer = new PerformanceObserver((list) => {
      const major = (entry: PerformanceEntry) => (entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR;
      if (list.getEntries().some(major)) this.collected();
    });
    this.observer.observe({ entryTypes: ['gc'] });
    return this;
  }

  /** A full collection just ran: hold the growth or give it back to V8, by what it kept. */
  collected(): void {
    const used = this.used();
    if (!this.held && used >= (this.options.holdFrom ?? 32 * 2 ** 20)) {
      this.setPercent(this.options.percent ?? 25);
      this.held = true;
    } else if (this.held && used < (this.options.releaseBelow ?? 24 * 2 ** 20)) {
      this.setPercent(0);
      this.held = false;
    }
  }

  stop(): void {
    this.observer?.disconnect();
    if (this.held) this.setPercent(0);
    this.held = false;
  }
}
