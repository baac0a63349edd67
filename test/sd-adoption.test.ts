import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { createApp } from '../src/api/app.js';
import { CLOSE, EMPTY, OPEN } from '../src/compile/compiler.js';
import { SdPublisher } from '../src/compile/publisher.js';
import { silentLogger } from '../src/log.js';
import { appDeps } from './api-helpers.js';
import { fsWith, targetYaml, tmpConfigRepo } from './helpers.js';

/** A repo with `files`, its SD files compiled once and stamped: what a restart finds. */
async function compiledOnce(files: Record<string, string>, layout?: 'file' | 'group') {
  const repo = await tmpConfigRepo();
  await repo.push(files);
  // Not tmpConfigRepo's own SD directory (its publisher writes there too).
  const sdDir = join(repo.dir, '..', 'sd-restarted');
  const identity = () => 'same-snapshot';
  const first = new SdPublisher(repo.live, { fs, sdDir, logger: silentLogger, identity, layout });
  await first.compileNow();
  await first.close();
  return { repo, sdDir, identity };
}

describe('http_sd after a restart that takes the SD files on disk', () => {
  for (const layout of ['file', 'group'] as const) {
    it(`serves every entry of the adopted files, joined (--sd-layout ${layout})`, async () => {
      const repo = await tmpConfigRepo();
      // Files of several chunks (256 hosts each) as the compile keeps them, and one of one.
      const fleet = Object.fromEntries(Array.from({ length: 600 }, (_, i) => [`targets/ml-training/gpu-${i}.yaml`, targetYaml(`gpu-${i}`, `10.0.${i >> 8}.${(i & 255) + 1}`, 'ml-training', i % 3 ? 'exporters:\n  - type: node_exporter\n  - type: dcgm_exporter\n' : undefined)]));
      await repo.push({
        ...fleet,
        'targets/ml-training/gpu-a.yaml': targetYaml('gpu-a', '10.0.9.1', 'ml-training', 'exporters:\n  - type: node_exporter\n  - type: dcgm_exporter\n'),
        'targets/databases/db-a.yaml': targetYaml('db-a', '10.0.9.2', 'databases'),
      });
      const sdDir = join(repo.dir, '..', `sd-${layout}`);
      const identity = () => 'same-snapshot';
      const first = new SdPublisher(repo.live, { fs, sdDir, logger: silentLogger, identity, layout });
      await first.compileNow();
      await first.close();
      const expected = (job: string | undefined) =>
        [...first.lastOutput!].filter(([name]) => job === undefined || name.startsWith(job)).flatMap(([, parts]) => JSON.parse(Buffer.concat(parts).toString()) as unknown[]);
      expect(expected('node').length).toBeGreaterThan(2 * 256);
      expect(expected('dcgm').length).toBeGreaterThan(256);
      // Every entry, whatever the order of the files (readdir's after a restart).
      const sorted = (entries: unknown[]) => entries.map((e) => JSON.stringify(e)).sort();
      const served = async (sd: SdPublisher, job: string | undefined) => {
        const answer = await createApp(appDeps(repo, { sd })).request(`/api/v1/sd/prometheus${job ? `?job=${job}` : ''}`);
        expect(answer.status, job).toBe(200);
        return sorted((await answer.json()) as unknown[]);
      };
      for (const job of [undefined, 'node', 'dcgm']) expect(await served(first, job), `compiled, ${job}`).toEqual(sorted(expected(job)));

      // The restart: the same snapshot, so the files on disk are taken as they are; the
      // background compile has not run yet.
      const adopted = new SdPublisher(repo.live, { fs, sdDir, logger: silentLogger, identity, layout, debounceMs: 60_000 });
      await adopted.start();
      // Read into one buffer: files read one by one left holes in the allocator's heap once the compile replaced them.
      const buffers = new Set([...adopted.lastOutput!.values()].flatMap((parts) => parts.filter((part) => part !== OPEN && part !== CLOSE && part !== EMPTY).map((part) => part.buffer)));
      expect(buffers.size).toBe(1);
      for (const job of [undefined, 'node', 'dcgm']) expect(await served(adopted, job), `adopted, ${job}`).toEqual(sorted(expected(job)));
      await adopted.close();
    });
  }

  it('reads none of the files it takes until they are served, and its compile rewrites none that are as it would write them', async () => {
    const { repo, sdDir, identity } = await compiledOnce({ 'targets/ml-training/gpu-a.yaml': targetYaml('gpu-a', '10.0.0.1', 'ml-training'), 'targets/databases/db-a.yaml': targetYaml('db-a', '10.0.0.2', 'databases') }, 'group');
    const before = new Map(['node/ml-training.json', 'node/databases.json'].map((name) => [name, fs.statSync(join(sdDir, name))]));
    // Every SD file opened, synchronously (http_sd) or not (the compile's read-back).
    const opened: string[] = [];
    const note = (how: string, path: string) => path.endsWith('.json') && opened.push(`${how} ${path.slice(sdDir.length + 1)}`);
    const watched = fsWith(
      { openSync: ((path: string, flags: string) => (note('sync', path), fs.openSync(path, flags))) as typeof fs.openSync },
      { open: ((path: string, flags: string) => (note('async', path), fs.promises.open(path, flags))) as typeof fs.promises.open },
    );
    const restarted = new SdPublisher(repo.live, { fs: watched, sdDir, logger: silentLogger, identity, layout: 'group', debounceMs: 60_000 });
    await restarted.start();
    expect(restarted.status.lastSuccessAt).toBeDefined();
    expect(opened).toEqual([]);
    // The compile compares each file with what is on disk: nothing to write.
    await restarted.compileNow();
    expect(opened.sort()).toEqual(['async node/databases.json', 'async node/ml-training.json']);
    for (const [name, stat] of before) expect(fs.statSync(join(sdDir, name)).mtimeMs, name).toBe(stat.mtimeMs);
    // Served from the compile, not read again.
    expect(Buffer.concat(restarted.lastOutput!.get('node/ml-training.json')!).toString()).toBe(fs.readFileSync(join(sdDir, 'node/ml-training.json'), 'utf8'));
    expect(opened).toHaveLength(2);
    await restarted.close();
  });

  it('does not serve a file that grows while it is read: http_sd waits for the compile, which writes it again', async () => {
    const { repo, sdDir, identity } = await compiledOnce({ 'targets/ml-training/gpu-a.yaml': targetYaml('gpu-a', '10.0.0.1', 'ml-training') });
    const compiled = fs.readFileSync(join(sdDir, 'node.json'), 'utf8');
    // A writer next to the server appends to node.json after it was listed, before it is read:
    // what is read is the whole old file, well formed; only its size afterwards tells.
    const openSync = ((path: string, flags: string) => {
      if (path.endsWith('/node.json')) fs.appendFileSync(path, 'GARBAGE');
      return fs.openSync(path, flags);
    }) as typeof fs.openSync;
    const logged: string[] = [];
    const log = (message: string, fields?: Record<string, unknown>) => logged.push(`${message} ${JSON.stringify(fields ?? {})}`);
    const logger = { ...silentLogger, info: log, warn: log };
    const restarted = new SdPublisher(repo.live, { fs: fsWith({ openSync }), sdDir, logger, identity, debounceMs: 60_000 });
    await restarted.start();
    expect(logged.some((line) => /serving them/.test(line))).toBe(true);
    const app = createApp(appDeps(repo, { sd: restarted }));
    expect((await app.request('/api/v1/health')).status).toBe(200);
    const sd = await app.request('/api/v1/sd/prometheus');
    expect(sd.status).toBe(503);
    expect(((await sd.json()) as any).error.code).toBe('not_ready');
    expect(logged.find((line) => /not as stamped/.test(line))).toMatch(/node\.json changed while it was read/);
    // Unhealthy until the compile has written them: it finds the file is not what it would write, and writes it.
    expect((await app.request('/api/v1/health')).status).toBe(503);
    await restarted.compileNow();
    expect((await app.request('/api/v1/health')).status).toBe(200);
    expect(fs.readFileSync(join(sdDir, 'node.json'), 'utf8')).toBe(compiled);
    expect(Buffer.concat(restarted.lastOutput!.get('node.json')!).toString()).toBe(compiled);
    await restarted.close();
  });

  it('compiles at start, never serving a job without its file, when a stamped SD file is gone or another was put beside them', async () => {
    for (const change of ['gone', 'not a file', 'added'] as const) {
      const { repo, sdDir, identity } = await compiledOnce({ 'targets/ml-training/gpu-a.yaml': targetYaml('gpu-a', '10.0.0.1', 'ml-training') });
      const compiled = fs.readFileSync(join(sdDir, 'node.json'), 'utf8');
      if (change === 'gone') fs.rmSync(join(sdDir, 'node.json'));
      if (change === 'not a file') fs.rmSync(join(sdDir, 'node.json')), execFileSync('mkfifo', [join(sdDir, 'node.json')]);
      if (change === 'added') fs.writeFileSync(join(sdDir, 'extra.json'), '[]\n');
      const logged: string[] = [];
      const log = (message: string) => logged.push(message);
      const restarted = new SdPublisher(repo.live, { fs, sdDir, logger: { ...silentLogger, info: log, warn: log }, identity, debounceMs: 60_000 });
      await restarted.start();
      expect(logged, change).toContain('sd files on disk are not the ones stamped for this snapshot: compiling them');
      // Compiled before start() answered: http_sd serves the job's entries, not [] for a file it did not find.
      const served = await createApp(appDeps(repo, { sd: restarted })).request('/api/v1/sd/prometheus?job=node');
      expect(await served.text(), change).toBe(compiled);
      expect(fs.lstatSync(join(sdDir, 'node.json')).isFile(), change).toBe(true);
      expect(fs.existsSync(join(sdDir, 'extra.json')), change).toBe(false);
      await restarted.close();
    }
  });

  it('takes no FIFO put in place of a stamped SD file: http_sd is not held, and the compile writes the file again', async () => {
    const { repo, sdDir, identity } = await compiledOnce({ 'targets/ml-training/gpu-a.yaml': targetYaml('gpu-a', '10.0.0.1', 'ml-training') });
    const compiled = fs.readFileSync(join(sdDir, 'node.json'), 'utf8');
    // Someone who can write the SD directory swaps node.json for a FIFO after the start listed it:
    // opened to be read as before, the open waited for a writer, and held the event loop for good.
    let swapped = false;
    const openSync = ((path: string, flags: number) => {
      // Opened to block, the FIFO would hold this test's thread for good: no timeout could fail it.
      if (path.endsWith('/node.json') && !(flags & fs.constants.O_NONBLOCK)) throw new Error('opened to block on a FIFO');
      if (path.endsWith('/node.json') && !swapped) fs.rmSync(path), execFileSync('mkfifo', [path]), (swapped = true);
      return fs.openSync(path, flags);
    }) as typeof fs.openSync;
    const logged: string[] = [];
    const log = (message: string, fields?: Record<string, unknown>) => logged.push(`${message} ${JSON.stringify(fields ?? {})}`);
    const restarted = new SdPublisher(repo.live, { fs: fsWith({ openSync }), sdDir, logger: { ...silentLogger, info: log, warn: log }, identity, debounceMs: 60_000 });
    await restarted.start();
    expect(restarted.lastOutput).toBeUndefined();
    expect(swapped).toBe(true);
    expect(logged.find((line) => /not as stamped/.test(line))).toMatch(/node\.json changed while it was read/);
    await restarted.compileNow();
    expect(fs.lstatSync(join(sdDir, 'node.json')).isFile()).toBe(true);
    expect(fs.readFileSync(join(sdDir, 'node.json'), 'utf8')).toBe(compiled);
    await restarted.close();
  });

  it('never serves the files of two snapshots as one answer: not read before the compile renamed one, they wait for it', async () => {
    const { repo, sdDir, identity } = await compiledOnce({ 'targets/ml-training/gpu-a.yaml': targetYaml('gpu-a', '10.0.0.1', 'ml-training'), 'targets/databases/db-a.yaml': targetYaml('db-a', '10.0.0.2', 'databases') }, 'group');
    // What http_sd would serve just after each SD file the compile renames into place.
    const seen: Array<string[] | undefined> = [];
    let restarted: SdPublisher | undefined;
    const served = () => {
      const output = restarted!.lastOutput;
      return output && [...output.values()].flatMap((parts) => (JSON.parse(Buffer.concat(parts).toString()) as Array<{ labels: { hostname: string } }>).map((entry) => entry.labels.hostname)).sort();
    };
    const watched = fsWith({}, { rename: async (from: fs.PathLike, to: fs.PathLike) => void (await fs.promises.rename(from, to), String(to).endsWith('.json') && seen.push(served())) });
    restarted = new SdPublisher(repo.live, { fs: watched, sdDir, logger: silentLogger, identity, layout: 'group', debounceMs: 60_000 });
    await restarted.start();
    // A change before the background compile (a registration, a pull): gpu-a moves to another group's shard.
    await repo.push({ 'targets/ml-training/gpu-a.yaml': null, 'targets/databases/gpu-a.yaml': targetYaml('gpu-a', '10.0.0.1', 'databases') });
    await restarted.compileNow();
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((hosts) => hosts === undefined)).toBe(true);
    expect(served()).toEqual(['db-a', 'gpu-a']);
    await restarted.close();
  });

  it('does not read back what http_sd read before the compile', async () => {
    const { repo, sdDir, identity } = await compiledOnce({ 'targets/ml-training/gpu-a.yaml': targetYaml('gpu-a', '10.0.0.1', 'ml-training') });
    const readBack: string[] = [];
    const watched = fsWith({}, { open: ((path: string, flags: string) => (path.endsWith('.json') && readBack.push(path), fs.promises.open(path, flags))) as typeof fs.promises.open });
    const restarted = new SdPublisher(repo.live, { fs: watched, sdDir, logger: silentLogger, identity, debounceMs: 60_000 });
    await restarted.start();
    expect((await createApp(appDeps(repo, { sd: restarted })).request('/api/v1/sd/prometheus')).status).toBe(200);
    await restarted.compileNow();
    expect(readBack).toEqual([]);
    await restarted.close();
  });
});

describe('the SD publisher\'s schedule', () => {
  it('compiles the first change after a quiet moment at once, and changes that keep coming at most every 250 ms', async () => {
    const repo = await tmpConfigRepo();
    await repo.push({ 'targets/ml-training/gpu-a.yaml': targetYaml('gpu-a', '10.0.0.1', 'ml-training') });
    // The clock moves only when told: what a compile takes on this machine counts for nothing.
    let now = 0;
    const sd = new SdPublisher(repo.live, { fs, sdDir: join(repo.dir, '..', 'sd-scheduled'), logger: silentLogger, now: () => now });
    const advance = async (ms: number) => ((now += ms), await vi.advanceTimersByTimeAsync(ms));
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      await sd.compileNow();
      const compiles = sd.status.compiles;
      // A change just after that compile (a registration stream): it waits for the 250 ms since that compile began.
      let next = sd.nextCompile();
      sd.schedule();
      await advance(249);
      expect([sd.compiling, sd.status.compiles]).toEqual([false, compiles]); // not begun
      expect(sd.due).toBe(true); // but due: the server's memory release waits for it
      await advance(1);
      expect(sd.compiling).toBe(true);
      await next;
      expect(sd.status.compiles).toBe(compiles + 1);
      // A change after a quiet second: compiled once the debounce (5 ms) is over.
      await advance(1000);
      expect(sd.due).toBe(false);
      next = sd.nextCompile();
      sd.schedule();
      await advance(4);
      expect(sd.compiling).toBe(false);
      await advance(1);
      expect(sd.compiling).toBe(true);
      await next;
      expect(sd.status.compiles).toBe(compiles + 2);
    } finally {
      vi.useRealTimers();
      await sd.close();
    }
  });

  it('compiles nothing once closed: no retry of a failed last write, no change scheduled', async () => {
    const repo = await tmpConfigRepo();
    const failing = (async () => {
      throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
    }) as typeof fs.promises.rename;
    const sd = new SdPublisher(repo.live, { fs: fsWith({}, { rename: failing }), sdDir: join(repo.dir, '..', 'sd-closed'), logger: silentLogger });
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      sd.schedule(); // a change due at close: compiled by it, and its write fails
      await sd.close();
      expect(sd.status.lastError).toContain('ENOSPC');
      const compiles = sd.status.compiles;
      await repo.push({ 'targets/ml-training/gpu-a.yaml': targetYaml('gpu-a', '10.0.0.1', 'ml-training') });
      sd.schedule();
      await vi.advanceTimersByTimeAsync(10_000);
      await sd.close(); // and anything that started meanwhile has ended
      expect(sd.status.compiles).toBe(compiles);
    } finally {
      vi.useRealTimers();
    }
  });

  it('gives the changes made during a long compile one compile when it ends, not one each', async () => {
    const repo = await tmpConfigRepo();
    await repo.push({ 'targets/ml-training/gpu-a.yaml': targetYaml('gpu-a', '10.0.0.1', 'ml-training') });
    let now = 0;
    // The compile waits at its last rename (the stamp, written by every compile) until the test lets it go: a compile of the whole fleet, seconds long.
    let release = () => {};
    let reached = () => {};
    let held = false;
    const rename = (async (from: fs.PathLike, to: fs.PathLike) => {
      if (held && String(to).endsWith('.aami-sd-identity')) await new Promise<void>((resolve) => ((release = resolve), reached()));
      return fs.promises.rename(from, to);
    }) as typeof fs.promises.rename;
    const sd = new SdPublisher(repo.live, { fs: fsWith({}, { rename }), sdDir: join(repo.dir, '..', 'sd-scheduled'), logger: silentLogger, identity: () => 'a snapshot', now: () => now });
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      await sd.compileNow();
      const compiles = sd.status.compiles;
      held = true;
      const atRename = new Promise<void>((resolve) => (reached = resolve));
      const long = sd.compileNow();
      await atRename;
      held = false;
      // Two seconds into it, changes keep coming, each after the debounce of the last.
      now += 2000;
      for (let i = 0; i < 5; i++) {
        sd.schedule();
        now += 20;
        await vi.advanceTimersByTimeAsync(20);
      }
      release();
      await long;
      expect(sd.status.compiles).toBe(compiles + 1);
      // One compile for all five, once the debounce after the long one is over; then nothing more is due.
      const next = sd.nextCompile();
      now += 20;
      await vi.advanceTimersByTimeAsync(20);
      await next;
      now += 5000;
      await vi.advanceTimersByTimeAsync(5000);
      await sd.close(); // and any compile queued meanwhile has run
      expect(sd.status.compiles).toBe(compiles + 2);
    } finally {
      vi.useRealTimers();
      await sd.close();
    }
  });
});
