import { describe, expect, it } from 'vitest';
import { BulkReads } from '../src/api/bulk.js';
import { ADMIN_TOKEN } from './api-helpers.js';
import { targetYaml, tmpConfigRepo } from './helpers.js';
import { atOnce, holdWriter, pacedApi, pacingClock, watched } from './pacing-helpers.js';

describe('the pacing queues (BulkReads)', () => {
  it('go out one after the other at the lane rate while the writer is busy, at once when it is idle', async () => {
    const clock = pacingClock();
    let busy = true;
    const writer = { get pending() { return busy ? 1 : 0; }, onIdle: () => undefined };
    // The sleeps of this test end at once: it looks at how long each turn was told to wait.
    const bulk = new BulkReads(writer, { rates: { list: 10e6, sd: 10e6 }, now: clock.now, sleep: async (ms) => clock.slept.push(ms) });
    await bulk.turn('list', 10e6); // the first goes at once and books 1 s
    await bulk.turn('list', 5e6); // the next waits for it, and books 0.5 s after it
    await bulk.turn('list', 5e6);
    expect(clock.slept).toEqual([1000, 1500]);
    clock.advance(1200); // time passed: the wait is what is left of the booked time
    await bulk.turn('list', 1e6);
    expect(clock.slept.at(-1)).toBe(800);
    busy = false; // a read that arrives while the writer is idle never waits, whatever was booked
    await bulk.turn('list', 100e6);
    expect(clock.slept).toHaveLength(3);
    busy = true; // and what an idle time booked does not hold up the next storm for long
    clock.advance(20_000);
    await bulk.turn('list', 1e6);
    expect(clock.slept).toHaveLength(3);
  });

  it('http_sd has a lane of its own: it never waits behind list reads, only behind other http_sd reads', async () => {
    const clock = pacingClock();
    const writer = { pending: 1, onIdle: () => undefined };
    const bulk = new BulkReads(writer, { rates: { list: 1000, sd: 1000 }, now: clock.now, sleep: clock.sleep });
    await bulk.turn('list', 1000); // books 1 s of the list lane
    const lists = [1, 2, 3].map(() => watched(bulk.turn('list', 1000)));
    await clock.sleeping(3);
    expect(clock.slept).toEqual([1000, 2000, 3000]);
    expect(await atOnce(clock, () => bulk.turn('sd', 500))).toBeUndefined();
    const sd = watched(bulk.turn('sd', 500));
    await clock.sleeping(4);
    expect(clock.slept.at(-1)).toBe(500); // behind the first http_sd read only
    clock.advance(500);
    await sd.promise;
    expect(lists.map((list) => list.settled)).toEqual([false, false, false]);
    clock.advance(2500);
    await Promise.all(lists.map((list) => list.promise));
  });

  it('waiting readers go the moment the writer runs dry (quietMs 0), and the next storm starts afresh', async () => {
    const { writer } = await tmpConfigRepo();
    const clock = pacingClock();
    const bulk = new BulkReads(writer, { rates: { list: 1000, sd: 1000 }, now: clock.now, sleep: clock.sleep, quietMs: 0 });
    const release = holdWriter(writer);
    await bulk.turn('list', 60_000); // a minute booked
    await bulk.turn('sd', 60_000);
    const waiting = [watched(bulk.turn('list', 60_000)), watched(bulk.turn('list', 1000)), watched(bulk.turn('sd', 1000))];
    await clock.sleeping(3);
    expect(clock.slept).toEqual([60_000, 120_000, 60_000]);
    await release();
    expect(writer.pending).toBe(0);
    expect(clock.waiting()).toBe(0); // woken as the writer ran dry
    await Promise.all(waiting.map((read) => read.promise)); // without the clock moving
    expect(clock.slept).toHaveLength(3);
    // A new storm: what the last one booked is forgotten.
    const releaseAgain = holdWriter(writer);
    await bulk.turn('list', 1000);
    const next = watched(bulk.turn('list', 1000));
    await clock.sleeping(1);
    expect(clock.slept.at(-1)).toBe(1000);
    clock.advance(1000);
    await next.promise;
    await releaseAgain();
  });

  it('a writer dry only between batches keeps them paced: they go once it has stayed dry for quietMs', async () => {
    const clock = pacingClock();
    let pending = 1;
    let ran!: (wrote: boolean) => void;
    const idle = () => ran(true); // the queue runs dry after a batch of writes
    const writer = { get pending() { return pending; }, onIdle: (listener: (wrote: boolean) => void) => void (ran = listener) };
    const bulk = new BulkReads(writer, { rates: { list: 1000, sd: 1000 }, now: clock.now, sleep: clock.sleep, quietMs: 100 });
    await bulk.turn('list', 1000); // books 1 s
    const first = watched(bulk.turn('list', 1000));
    await clock.sleeping(1);
    // A batch answered: the writer is dry for a moment, and a read that comes then is paced too.
    pending = 0;
    idle();
    await clock.sleeping(2); // the reader and the quiet window
    const second = watched(bulk.turn('list', 1000));
    await clock.sleeping(3);
    expect(clock.slept).toEqual([1000, 100, 2000]);
    clock.advance(50);
    pending = 1; // the next batch, within the window
    clock.advance(50); // the window ends with the writer busy: nobody goes
    await clock.sleeping(2);
    expect([first.settled, second.settled]).toEqual([false, false]);
    // The storm is over: dry for the whole window, every waiting answer goes.
    pending = 0;
    idle();
    await clock.sleeping(3);
    clock.advance(99);
    expect(clock.waiting()).toBe(3);
    clock.advance(1);
    await Promise.all([first.promise, second.promise]);
    expect(clock.now()).toBe(200); // not the 1 s and 2 s they had booked
  });

  it('a follow of the head alone (the ref watcher every second) starts no quiet window: an idle server never paces', async () => {
    const clock = pacingClock();
    let pending = 0;
    let ran!: (wrote: boolean) => void;
    const writer = { get pending() { return pending; }, onIdle: (listener: (wrote: boolean) => void) => void (ran = listener) };
    const bulk = new BulkReads(writer, { rates: { list: 1000, sd: 1000 }, now: clock.now, sleep: clock.sleep, quietMs: 500 });
    pending = 1; // the poll's follow runs
    await bulk.turn('list', 1000);
    const during = watched(bulk.turn('list', 1000)); // paced behind the first while it runs
    await clock.sleeping(1);
    pending = 0;
    ran(false);
    await during.promise; // released at once, not after a quiet window
    expect(await atOnce(clock, () => bulk.turn('list', 1000))).toBeUndefined();
    expect(await atOnce(clock, () => bulk.turn('list', 1000))).toBeUndefined();
    expect(clock.slept).toEqual([1000]);
  });

  it('a waiting reader that goes away gives its turn back: the readers behind it move up', async () => {
    const clock = pacingClock();
    const bulk = new BulkReads({ pending: 1, onIdle: () => undefined }, { rates: { list: 1000, sd: 1000 }, now: clock.now, sleep: clock.sleep });
    await bulk.turn('list', 10); // starts the storm: 10 ms booked
    const ghosts = Array.from({ length: 5 }, () => new AbortController());
    const waits = ghosts.map((ghost) => bulk.turn('list', 1000, ghost.signal));
    const honest = watched(bulk.turn('list', 10));
    await clock.sleeping(6);
    expect(clock.slept.at(-1)).toBe(5010);
    for (const ghost of ghosts) ghost.abort();
    await Promise.all(waits);
    // woken, the honest reader waits for the first turn only
    await clock.sleeping(1);
    expect(clock.slept.at(-1)).toBe(10);
    clock.advance(10);
    await honest.promise;
    // a reader already gone never books: the next one waits for the honest reader's 10 ms only
    await bulk.turn('list', 100_000, AbortSignal.abort());
    const after = watched(bulk.turn('list', 10));
    await clock.sleeping(1);
    expect(clock.slept.at(-1)).toBe(10);
    clock.advance(10);
    await after.promise;
  });
});

describe('paced routes', () => {
  const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };

  it('http_sd is answered while list reads queue behind a busy writer; HEAD books nothing; the queue goes when the writer runs dry', async () => {
    const { clock, api } = await pacedApi();
    await api.push(Object.fromEntries([1, 2, 3].map((i) => [`targets/ml-training/gpu-${i}.yaml`, targetYaml(`gpu-${i}`, `10.0.0.${i}`)])));
    await api.nextCompile();
    const list = await api.get('/api/v1/targets');
    const sd = await api.get('/api/v1/sd/prometheus?job=node');
    expect(sd.json).toHaveLength(3);
    expect(clock.slept).toEqual([]); // an idle writer: nobody waits
    clock.advance(1e6);
    const L = list.text.length;
    const S = sd.text.length;

    const release = holdWriter(api.writer);
    const [going, ...lists] = Array.from({ length: 4 }, () => watched(api.get('/api/v1/targets')));
    await clock.sleeping(3); // the first goes at once, three wait their turns
    expect(clock.slept).toEqual([L, 2 * L, 3 * L]);
    expect((await going!.promise).text).toBe(list.text);

    expect(await atOnce(clock, () => api.get('/api/v1/sd/prometheus?job=node'))).toMatchObject({ status: 200, text: sd.text });
    const second = watched(api.get('/api/v1/sd/prometheus?job=node'));
    await clock.sleeping(4);
    expect(clock.slept.at(-1)).toBe(S); // behind the other http_sd read, not the list reads

    for (const path of ['/api/v1/targets', '/api/v1/targets?limit=10', '/api/v1/sd/prometheus?job=node']) {
      const head = await atOnce(clock, async () => api.app.request(path, { method: 'HEAD', headers: auth }));
      if (head === 'waited') expect.fail(`HEAD ${path} waited for a turn`);
      expect(head.status, path).toBe(200);
      expect(await head.text(), path).toBe('');
    }
    expect(clock.slept).toHaveLength(4);
    const page = watched(api.get('/api/v1/targets?limit=10'));
    await clock.sleeping(5);
    expect(clock.slept.at(-1)).toBe(4 * L); // the HEADs booked no turn
    const waiting = [...lists, second, page];
    expect(waiting.map((read) => read.settled)).toEqual([false, false, false, false, false]);

    await release();
    expect(clock.waiting()).toBe(0); // woken as the writer ran dry
    const answers = await Promise.all(waiting.map((read) => read.promise));
    expect(answers.map((answer) => answer.status)).toEqual([200, 200, 200, 200, 200]);
    expect(answers.map((answer) => answer.text)).toEqual([list.text, list.text, list.text, sd.text, list.text]);
    expect(clock.slept).toHaveLength(5); // the clock never moved: they went when the writer ran dry
    expect(api.writer.pending).toBe(0);
  });

  it('GET /api/v1/targets: requests aborted while they wait their turn do not hold up the next reader', async () => {
    const { clock, api } = await pacedApi();
    await api.push({ 'targets/ml-training/h-1.yaml': targetYaml('h-1', '10.7.0.1') });
    const page = (await api.get('/api/v1/targets?limit=10000')).text.length;
    clock.advance(1e6);
    const release = holdWriter(api.writer);
    const ghosts = Array.from({ length: 30 }, () => new AbortController());
    const waits = ghosts.map((ghost) => Promise.resolve(api.app.request('/api/v1/targets?limit=10000', { headers: auth, signal: ghost.signal })).catch(() => undefined));
    await clock.sleeping(29); // the first is sending, 29 wait
    for (const ghost of ghosts) ghost.abort();
    await Promise.all(waits);
    const honest = watched(Promise.resolve(api.app.request('/api/v1/targets', { headers: auth })));
    await clock.sleeping(1);
    expect(clock.slept.at(-1)).toBe(page); // the first ghost's turn only, not 30
    clock.advance(page);
    const answer = await honest.promise;
    expect(answer.status).toBe(200);
    expect(await answer.json()).toHaveLength(1);
    await release();
  });
});
