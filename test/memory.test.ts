import { afterEach, describe, expect, it, vi } from 'vitest';
import { MemoryRelease } from '../src/memory.js';

const MB = 2 ** 20;

describe('returning memory once the server goes quiet', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('collects once, after the work has stopped for the quiet time, and only when the heap grew by enough', () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    let used = 100 * MB;
    let collections = 0;
    const release = new MemoryRelease({ quietMs: 1000, growthBytes: 64 * MB, growthShare: 0.5, inUse: () => used, collect: () => ((collections += 1), (used = 110 * MB)) });

    // Grown by 40 MB: under both thresholds, nothing happens.
    used = 140 * MB;
    release.worked();
    vi.advanceTimersByTime(5000);
    expect(collections).toBe(0);

    // Grown by 100 MB, but work keeps coming: each compile moves the collection back.
    used = 200 * MB;
    for (let i = 0; i < 10; i++) {
      release.worked();
      vi.advanceTimersByTime(900);
    }
    expect(collections).toBe(0);
    vi.advanceTimersByTime(100);
    expect(collections).toBe(1);

    // The new baseline is what was left after the collection (110 MB): 60 MB more is not enough...
    used = 170 * MB;
    release.worked();
    vi.advanceTimersByTime(1000);
    expect(collections).toBe(1);
    // ...64 MB more is.
    used = 174 * MB;
    release.worked();
    vi.advanceTimersByTime(1000);
    expect(collections).toBe(2);
  });

  it('asks for half the heap again once the heap is large, not a fixed amount', () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    let used = 400 * MB;
    let collections = 0;
    const release = new MemoryRelease({ quietMs: 10, inUse: () => used, collect: () => (collections += 1) });
    used = 590 * MB; // +190 MB: over 64 MB, under half of 400
    release.worked();
    vi.advanceTimersByTime(10);
    expect(collections).toBe(0);
    used = 601 * MB;
    release.worked();
    vi.advanceTimersByTime(10);
    expect(collections).toBe(1);
  });

  it('stop() cancels a collection that was due', () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    let used = 0;
    let collections = 0;
    const release = new MemoryRelease({ quietMs: 10, inUse: () => used, collect: () => (collections += 1) });
    used = 500 * MB;
    release.worked();
    release.stop();
    vi.advanceTimersByTime(100);
    expect(collections).toBe(0);
  });

  it('really collects: garbage made before the quiet time is gone after it', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const release = new MemoryRelease({ quietMs: 10, growthBytes: 0, growthShare: 0 });
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
    expect(ref.deref()).toBeUndefined();
  });
});
