import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { nodeFlag } from '../src/v8-flags.js';
import { HeapGrowth, MemoryRelease } from '../src/memory.js';

const ROOT = new URL('..', import.meta.url).pathname;

const MB = 2 ** 20;

describe('returning memory once the server goes quiet', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  /** A release over a process of `startMb` whose size the test sets; `worked(mb, ms)` ends some work at that size and lets `ms` pass. */
  function release(startMb: number, options: { quietMs?: number; growthBytes?: number; growthShare?: number }) {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    let used = startMb * MB;
    const state = { collections: 0, afterCollection: startMb };
    const subject = new MemoryRelease({ ...options, now: () => Date.now(), resident: () => used, collect: () => ((state.collections += 1), (used = state.afterCollection * MB)) });
    const worked = (mb: number, ms: number) => {
      used = mb * MB;
      subject.worked();
      vi.advanceTimersByTime(ms);
      return state.collections;
    };
    return { subject, state, worked };
  }

  it('collects once, after the work has stopped for the quiet time, and only when the process grew by enough', () => {
    const { state, worked } = release(0, { quietMs: 1000, growthBytes: 64 * MB, growthShare: 0.5 });
    // The first quiet moment after start-up collects what start-up left (64 MB or more here).
    state.afterCollection = 100;
    expect(worked(63, 5000)).toBe(0);
    expect(worked(300, 999)).toBe(0);
    vi.advanceTimersByTime(1);
    expect(state.collections).toBe(1);
    state.afterCollection = 110;
    // Grown by 40 MB since: under both thresholds, nothing happens.
    expect(worked(140, 5000)).toBe(1);
    // Grown by 100 MB, but work keeps coming: each compile moves the collection back.
    for (let i = 0; i < 10; i++) expect(worked(200, 900)).toBe(1);
    vi.advanceTimersByTime(100);
    expect(state.collections).toBe(2);
    // The new baseline is what was left after the collection (110 MB): 60 MB more is not enough, 64 MB is.
    expect(worked(170, 1000)).toBe(2);
    expect(worked(174, 1000)).toBe(3);
  });

  it('by default waits half a second of quiet, then for 32 MB more, or a tenth more once the process is large', () => {
    const { state, worked } = release(0, {});
    state.afterCollection = 200;
    expect(worked(300, 499)).toBe(0);
    vi.advanceTimersByTime(1);
    expect(state.collections).toBe(1);
    expect(worked(231, 500)).toBe(1); // +31 MB
    expect(worked(232, 500)).toBe(2);
    state.afterCollection = 400;
    expect(worked(500, 500)).toBe(3);
    expect(worked(439, 500)).toBe(3); // +39 MB: over 32 MB, under a tenth of 400
    expect(worked(440, 500)).toBe(4);
  });

  it('counts what is left after a collection a moment later too: buffers are freed after it, in the background', () => {
    const { state, worked } = release(0, { quietMs: 10 });
    state.afterCollection = 300;
    expect(worked(500, 10)).toBe(1);
    expect(worked(250, 200)).toBe(1); // 200 ms on, 250 MB resident: the baseline
    expect(worked(281, 10)).toBe(1); // +31 MB
    expect(worked(282, 10)).toBe(2); // against 300, this would need 332
  });

  it('lets a hundred times the last collection\'s length pass before the next one, however fast the process grows', () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    let resident = 300 * MB;
    let collections = 0;
    const collect = () => {
      collections += 1;
      vi.setSystemTime(Date.now() + 400); // a collection of 400 ms
    };
    const subject = new MemoryRelease({ quietMs: 10, resident: () => resident, now: () => Date.now(), collect });
    subject.worked();
    vi.advanceTimersByTime(10);
    expect(collections).toBe(1);
    resident = 400 * MB; // grown by far more than enough
    subject.worked();
    vi.advanceTimersByTime(10);
    expect(collections).toBe(1);
    vi.advanceTimersByTime(39_000);
    expect(collections).toBe(1); // 40 s after the last one ended: not yet
    vi.advanceTimersByTime(1_000);
    expect(collections).toBe(2); // by itself, without more work
    subject.stop();
  });

  it('stop() cancels a collection that was due', () => {
    const { subject, state, worked } = release(0, { quietMs: 10 });
    expect(worked(500, 0)).toBe(0); // due in 10 ms
    subject.stop();
    vi.advanceTimersByTime(100);
    expect(state.collections).toBe(0);
  });

  it('waits another quiet time while work is under way that has not ended yet (a slow commit, a sliced compile)', () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    let busy = true;
    let collections = 0;
    const subject = new MemoryRelease({ quietMs: 10, now: () => Date.now(), resident: () => 500 * MB, busy: () => busy, collect: () => (collections += 1) });
    subject.worked();
    vi.advanceTimersByTime(100);
    expect(collections).toBe(0);
    busy = false;
    vi.advanceTimersByTime(10);
    expect(collections).toBe(1);
  });

  it('serves on when the collection cannot run, and stops trying', () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    let tries = 0;
    let used = 500 * MB;
    const subject = new MemoryRelease({ quietMs: 10, now: () => Date.now(), resident: () => used, collect: () => ((tries += 1), raise()) });
    subject.worked();
    expect(() => vi.advanceTimersByTime(10)).not.toThrow();
    used = 2000 * MB;
    subject.worked();
    vi.advanceTimersByTime(10);
    expect(tries).toBe(1);
  });

  it('really collects: garbage made before the quiet time is gone after it', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    let collected = 0;
    const release = new MemoryRelease({ quietMs: 10, growthBytes: 0, growthShare: 0, collected: () => (collected += 1) });
    // An object nothing refers to but a WeakRef, made in a function so no local keeps it.
    const make = () => new WeakRef({ payload: new Array(1000).fill('garbage') });
    const ref = make();
    // A WeakRef (and each deref()) holds its target until the current job ends.
    const nextJob = () => new Promise((resolve) => setImmediate(resolve));
    await nextJob();
    expect(ref.deref()).toBeDefined(); // nothing collected it yet: no allocation asked for a collection
    await nextJob();
    release.worked();
    vi.advanceTimersByTime(10);
    expect(collected).toBe(1); // by the release, not by a collection of V8's own meanwhile
    expect(ref.deref()).toBeUndefined();
  });
});

function raise(): never {
  throw new Error('no gc here');
}

describe('V8 flags the server sets for itself', () => {
  it('knows a flag node was given on or off, in any spelling, on its command line or in NODE_OPTIONS; the last one given wins', () => {
    const flag = '--always-sparkplug';
    expect(nodeFlag(flag, [], '')).toBeUndefined();
    for (const on of ['--always-sparkplug', '--always_sparkplug']) expect(nodeFlag(flag, [on], ''), on).toBe(true);
    for (const off of ['--no-always-sparkplug', '--no-always_sparkplug', '--noalways-sparkplug']) expect(nodeFlag(flag, [off], ''), off).toBe(false);
    expect(nodeFlag(flag, ['--trace-gc', '--always-sparkplug', '--no-always-sparkplug'], '')).toBe(false);
    expect(nodeFlag(flag, ['--always-sparkplug-x', '--sparkplug', '--no-sparkplug'], '')).toBeUndefined(); // other flags
    expect(nodeFlag('--max-old-space-size', [], '--max-old-space-size=512 --trace-warnings')).toBe(true); // a value after `=`
    expect(nodeFlag('--expose-gc', ['--expose_gc'], '')).toBe(true);
    expect(nodeFlag('--expose-gc', ['--no-expose-gc'], '')).toBe(false); // given off: MemoryRelease sets it for its collection, and unsets it after
    expect(nodeFlag('--expose-gc', ['--no-expose-gc'], '--expose-gc')).toBe(false); // the command line after NODE_OPTIONS, as node reads them
    expect(nodeFlag('--expose-gc', ['--expose-gc'], '--no-expose-gc')).toBe(true);
  });
});

describe('how far the heap may grow between full collections', () => {
  it('holds growth once a full collection keeps enough, and gives it back to V8 only well below that', () => {
    let used = 10 * MB;
    const set: number[] = [];
    const growth = new HeapGrowth({ used: () => used, setPercent: (percent) => set.push(percent) });
    growth.collected();
    used = 28 * MB;
    growth.collected();
    expect(set).toEqual([]); // a small catalog: V8's own growth
    used = 32 * MB;
    growth.collected();
    expect(set).toEqual([25]);
    used = 100 * MB;
    growth.collected();
    used = 28 * MB; // between the two: left as it is
    growth.collected();
    expect(set).toEqual([25]);
    used = 23 * MB;
    growth.collected();
    expect(set).toEqual([25, 0]);
    used = 60 * MB;
    growth.collected();
    growth.stop(); // V8's own growth again when the server stops (tests run servers one after another)
    expect(set).toEqual([25, 0, 25, 0]);
  });

  /** What HeapGrowth sets in a node process (started with nodeArgs) that runs one full collection, holding growth from one byte up. */
  function watchedProcess(nodeArgs: string[]): number[] {
    const script = [
      `import { HeapGrowth } from ${JSON.stringify(join(ROOT, 'src/memory.ts'))};`,
      `import { setFlagsFromString } from 'node:v8';`,
      'const set = [];',
      'const growth = new HeapGrowth({ holdFrom: 1, setPercent: (percent) => { set.push(percent); setFlagsFromString(`--heap-growing-percent=${percent}`); } }).start();',
      'globalThis.gc();',
      // The observer is told after the collection, from the event loop.
      'setTimeout(() => { growth.stop(); console.log(JSON.stringify(set)); }, 100);',
    ].join('\n');
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--expose-gc', ...nodeArgs, '--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
    return JSON.parse(out) as number[];
  }

  it('sees the full collections V8 runs, and leaves growth as node was given it', () => {
    expect(watchedProcess([])).toEqual([25, 0]);
    expect(watchedProcess(['--heap-growing-percent=30'])).toEqual([]);
  });
});
