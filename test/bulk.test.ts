import { describe, expect, it } from 'vitest';
import { BulkReads } from '../src/api/bulk.js';
import { apiHarness } from './api-helpers.js';
import { targetYaml } from './helpers.js';

describe('paced big answers and clients that go away', () => {
  it('a waiting reader that disconnects gives its turn back: the readers behind it do not wait for it', async () => {
    // 1 kB/s: each ghost books a second.
    const bulk = new BulkReads(() => true, { bytesPerSecond: 1000 });
    await bulk.turn(10); // starts the storm
    const ghosts = Array.from({ length: 5 }, () => new AbortController());
    const waits = ghosts.map((ghost) => bulk.turn(1000, ghost.signal));
    const started = performance.now();
    const honest = bulk.turn(10);
    for (const ghost of ghosts) ghost.abort();
    await Promise.all(waits);
    await honest;
    // without the ghosts, the honest reader waits ~10 ms; with them booked, 5 s
    expect(performance.now() - started).toBeLessThan(1000);
    // a reader already gone never books
    const gone = AbortSignal.abort();
    const before = performance.now();
    await bulk.turn(100_000, gone);
    await bulk.turn(10);
    expect(performance.now() - before).toBeLessThan(1000);
  });

  it('GET /api/v1/targets: requests aborted while they wait their turn do not hold up the next reader', { timeout: 60_000 }, async () => {
    const api = await apiHarness();
    const files: Record<string, string> = {};
    const big = 'x'.repeat(1000);
    for (let i = 0; i < 300; i++) files[`targets/ml-training/h-${i}.yaml`] = targetYaml(`h-${i}`, `10.7.${i >> 8}.${i & 255}`, 'ml-training', `labels: {a: ${big}, b: ${big}, c: ${big}}\n`);
    await api.push(files);
    const size = (await api.get('/api/v1/targets')).text.length;
    expect(size).toBeGreaterThan(1.5e6); // 10 MB/s: > 150 ms a read
    // The writer busy: a write waits behind a held queue.
    let release!: () => void;
    const held = api.writer.exclusive(() => new Promise<void>((resolve) => (release = resolve)));
    try {
      const ghosts = Array.from({ length: 30 }, () => new AbortController());
      const waits = ghosts.map((ghost) => Promise.resolve(api.app.request('/api/v1/targets?limit=10000', { headers: { authorization: 'Bearer test-admin-credential-0123456789' }, signal: ghost.signal })).catch(() => undefined));
      await new Promise((resolve) => setTimeout(resolve, 50));
      for (const ghost of ghosts) ghost.abort();
      const started = performance.now();
      const honest = await api.app.request('/api/v1/targets', { headers: { authorization: 'Bearer test-admin-credential-0123456789' } });
      expect(honest.status).toBe(200);
      await honest.arrayBuffer();
      // its own turn (and the first ghost's, already sending) is well under 2 s; 30 ghosts booked are 5 s
      expect(performance.now() - started).toBeLessThan(2000);
      await Promise.all(waits);
    } finally {
      release();
      await held;
    }
  });
});
