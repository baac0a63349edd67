import * as fs from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LiveCatalog, Snapshot } from '../src/catalog/live.js';
import { parseFile } from '../src/catalog/parse.js';
import { hashObject } from '../src/git/objects.js';
import { createLogger } from '../src/log.js';
import { startServer } from '../src/server.js';
import { RestartImage } from '../src/writer/restart-image.js';
import { fsWith, gitCli, onCleanup, pushFiles, seeingSyncs, targetYaml, tempDir } from './helpers.js';
import { serverConfig, waitFor } from './node-helpers.js';
import { serverProcess, type ServerProcess } from './process-helpers.js';

const ADMIN = 'node-test-admin-credential-0123'; // serverConfig()'s
const auth = { authorization: `Bearer ${ADMIN}` };
const TAKEN = 'started from the snapshot the last server saved';

/** A server whose log lines are kept, and what it serves: every target and every problem. */
function restartable() {
  const lines: string[] = [];
  const config = serverConfig({ logger: createLogger((line) => lines.push(line)) });
  const image = join(config.stateDir, 'restart-image');
  let server: Awaited<ReturnType<typeof startServer>> | undefined;
  onCleanup(() => server?.close());
  return {
    config,
    image,
    lines,
    async start() {
      lines.length = 0;
      server = await startServer(config);
      return server;
    },
    async stop() {
      await server!.close();
      server = undefined;
    },
    async served() {
      const targets = await (await fetch(`${server!.url}/api/v1/targets`, { headers: auth })).json();
      const health = (await (await fetch(`${server!.url}/api/v1/health`, { headers: auth })).json()) as { status: string; compiler: { invalid_files: unknown[] } };
      return { targets, status: health.status, problems: health.compiler.invalid_files };
    },
    create: (hostname: string, ip: string) =>
      fetch(`${server!.url}/api/v1/targets`, { method: 'POST', headers: auth, body: JSON.stringify({ hostname, ip_address: ip, primary_group_id: 'ml-training' }) }),
  };
}

describe('the restart image', () => {
  it('gives a restart at the same commit what the server served when it stopped, a broken file\'s last good version included', async () => {
    const s = restartable();
    await s.start();
    expect((await s.create('kept', '10.0.0.1')).status).toBe(201);
    // A push breaks the file: its last good version stays served, and it is reported.
    pushFiles(s.config.repo, { 'targets/ml-training/kept.yaml': 'hostname: kept\nip_address: not-an-ip\nprimary_group: ml-training\n' }, 'broken');
    await waitFor('the broken push followed', async () => (await s.served()).problems.length > 0);
    const before = await s.served();
    expect(before.status).toBe('degraded');
    await s.stop();
    // Only its owner reads it, nor the parse cache: they hold the catalog (credential hashes among it).
    expect(fs.statSync(s.image).mode & 0o777).toBe(0o600);
    expect(fs.statSync(join(s.config.stateDir, 'parse-cache.log')).mode & 0o777).toBe(0o600);
    // What a save killed half-way leaves is cleared at the next start.
    const leftover = join(s.config.stateDir, '.restart-image.4242.0.tmp');
    fs.writeFileSync(leftover, 'half');

    await s.start();
    expect(s.lines.join('\n')).toContain(TAKEN);
    expect(fs.existsSync(s.image)).toBe(false);
    expect(fs.existsSync(leftover)).toBe(false);
    // The first thing asked: an address the broken file's last good version holds (a catalog
    // from the image makes its IP index after the start, or at the first write).
    const clash = await s.create('clash', '10.0.0.1');
    expect(clash.status).toBe(409);
    expect(JSON.stringify(await clash.json())).toContain('kept');
    expect(await s.served()).toEqual(before);
    // It takes writes, and they reach the SD file.
    expect((await s.create('after', '10.0.0.2')).status).toBe(201);
    await waitFor('the SD file', async () => fs.readFileSync(join(s.config.sdDir, 'node.json'), 'utf8').includes('10.0.0.2:9100'));
    const after = await s.served();
    await s.stop();

    // A start without the image (as after a kill -9) builds the same from Git, the state and the parse cache.
    fs.rmSync(s.image);
    await s.start();
    expect(s.lines.join('\n')).not.toContain(TAKEN);
    expect(await s.served()).toEqual(after);
  });

  it('takes the long way when the image does not fit: cut short, another commit, another program', async () => {
    const s = restartable();
    await s.start();
    expect((await s.create('one', '10.0.0.1')).status).toBe(201);
    const one = await s.served();
    await s.stop();

    // Cut short: the last line lost.
    const text = fs.readFileSync(s.image, 'utf8');
    fs.writeFileSync(s.image, text.slice(0, text.trimEnd().lastIndexOf('\n') + 1));
    await s.start();
    expect(s.lines.join('\n')).not.toContain(TAKEN);
    expect(s.lines.join('\n')).toContain('the image was cut short');
    expect(fs.existsSync(s.image)).toBe(false);
    expect(await s.served()).toEqual(one);
    await s.stop();

    // Another commit: a push while it was down.
    pushFiles(s.config.repo, { 'targets/ml-training/two.yaml': 'hostname: two\nip_address: 10.0.0.2\nprimary_group: ml-training\n' }, 'two');
    await s.start();
    expect(s.lines.join('\n')).not.toContain(TAKEN);
    expect(s.lines.join('\n')).toMatch(/it shows commit [0-9a-f]{40}, and the branch is at [0-9a-f]{40}/);
    const two = await s.served();
    expect((two.targets as Array<{ hostname: string }>).map((t) => t.hostname).sort()).toEqual(['one', 'two']);
    await s.stop();

    // Another program saved it.
    const [header, ...rest] = fs.readFileSync(s.image, 'utf8').split('\n');
    const fields = JSON.parse(header!) as unknown[];
    fields[1] = 'another build';
    fs.writeFileSync(s.image, [JSON.stringify(fields), ...rest].join('\n'));
    await s.start();
    expect(s.lines.join('\n')).not.toContain(TAKEN);
    expect(s.lines.join('\n')).toContain('another build of the server saved it');
    expect(await s.served()).toEqual(two);
    await s.stop();

    // And with nothing wrong, it is taken.
    await s.start();
    expect(s.lines.join('\n')).toContain(TAKEN);
    expect(await s.served()).toEqual(two);
  });
});

const SAVED = 'saved the snapshot for a quick start after a crash or a kill';

describe('the restart image while the server serves', () => {
  it('is saved once the server is quiet: a start after a kill -9 takes it, and one after a later change takes the long way', { timeout: 120_000 }, async () => {
    const base = tempDir();
    const repo = join(base, 'repo');
    const args = ['--repo', repo, '--sd-dir', join(base, 'sd'), '--state-dir', join(base, 'state')];
    const image = join(base, 'state', 'restart-image');
    const create = (server: ServerProcess, hostname: string, ip: string) => server.call('POST', '/api/v1/targets', { hostname, ip_address: ip, primary_group_id: 'ml-training' });
    const kill = async (server: ServerProcess) => {
      server.child.kill('SIGKILL');
      await server.exited;
    };
    // Quiet for 5 s (the default) at the branch's head: saved while it serves.
    const savedAtHead = (server: ServerProcess) => {
      const head = gitCli(repo, 'rev-parse', 'refs/heads/main').trim();
      return waitFor(`the image of ${head} saved`, async () => server.log().split('\n').some((line) => line.includes(SAVED) && line.includes(`head=${head}`)), 300);
    };

    let server = await serverProcess(args);
    expect((await create(server, 'a', '10.0.0.1')).status).toBe(201);
    await savedAtHead(server);
    expect(fs.statSync(image).mode & 0o777).toBe(0o600);
    const served = (await server.call('GET', '/api/v1/targets')).json;
    await kill(server);

    server = await serverProcess(args);
    expect(server.log()).toContain(TAKEN);
    expect((await server.call('GET', '/api/v1/targets')).json).toEqual(served);
    // The first write: a clash on the address the image's target holds.
    const clash = await create(server, 'clash', '10.0.0.1');
    expect(clash.status).toBe(409);
    expect(JSON.stringify(clash.json)).toContain('"a"');
    // A change, and a kill before the server was quiet again: no image of what it served.
    expect((await create(server, 'b', '10.0.0.2')).status).toBe(201);
    const changed = (await server.call('GET', '/api/v1/targets')).json;
    await kill(server);

    server = await serverProcess(args);
    expect(server.log()).not.toContain(TAKEN);
    expect((await server.call('GET', '/api/v1/targets')).json).toEqual(changed);
    // A clean stop after the quiet save writes nothing more: the image is the one it saved.
    await savedAtHead(server);
    const saved = fs.statSync(image).mtimeMs;
    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    expect(fs.statSync(image).mtimeMs).toBe(saved);
    server = await serverProcess(args);
    expect(server.log()).toContain(TAKEN);
    expect((await server.call('GET', '/api/v1/targets')).json).toEqual(changed);
    // A change once started from the image: saved once quiet as the files changed since the
    // base that start took over, which a start after a kill -9 reads with it.
    const baseId = () => (JSON.parse(fs.readFileSync(`${image}.base`, 'utf8').split('\n')[0]!) as unknown[])[2];
    const tookOver = baseId();
    expect((await create(server, 'c', '10.0.0.3')).status).toBe(201);
    await savedAtHead(server);
    expect(server.log()).toMatch(/saved the snapshot for a quick start after a crash or a kill" head=[0-9a-f]{40} changed_files=1 /);
    expect(baseId()).toBe(tookOver);
    const third = (await server.call('GET', '/api/v1/targets')).json;
    await kill(server);
    server = await serverProcess(args);
    expect(server.log()).toContain(TAKEN);
    expect((await server.call('GET', '/api/v1/targets')).json).toEqual(third);
  });
});

describe('the restart image kept while serving', () => {
  /** A snapshot of `n` targets at `head`: more files than one chunk of the image holds. */
  function snapshotOf(n: number, head: string): Snapshot {
    const records = new Map();
    const add = (path: string, text: string) => records.set(path, { oid: hashObject('blob', Buffer.from(text)).oid, parsed: parseFile(path, text) });
    add('groups/ml-training.yaml', 'id: ml-training\nname: ml-training\nnamespace: logical\n');
    for (let i = 0; i < n; i++) add(`targets/ml-training/n${i}.yaml`, targetYaml(`n${i}`, `10.1.${i >> 8}.${i & 255}`));
    return Snapshot.build(records, head);
  }
  /** A commit that adds one target, or changes it. */
  function publish(live: LiveCatalog, head: string, hostname: string, ip = '10.2.0.1'): void {
    const path = `targets/ml-training/${hostname}.yaml`;
    const text = targetYaml(hostname, ip);
    const draft = live.draft();
    draft.apply([{ path, oid: hashObject('blob', Buffer.from(text)).oid, parsed: parseFile(path, text) }]);
    live.publish(draft.freeze(head));
  }
  /** A commit that deletes a target. */
  function remove(live: LiveCatalog, head: string, hostname: string): void {
    const draft = live.draft();
    draft.apply([{ path: `targets/ml-training/${hostname}.yaml`, oid: null }]);
    live.publish(draft.freeze(head));
  }
  /** Calls `then` once a base is being written in `dir` (its temp file is there), looked for at every turn of the event loop. */
  function whileBaseWritten(dir: string, then: () => void): void {
    const watch = () => (temps(dir).some((name) => name.startsWith('.restart-image.base.')) ? then() : setImmediate(watch));
    setImmediate(watch);
  }
  const headOf = (file: string) => (JSON.parse(fs.readFileSync(file, 'utf8').split('\n')[0]!) as unknown[])[2];
  /** The id of the base the image `file` names, read from the base itself. */
  const baseId = (file: string) => (JSON.parse(fs.readFileSync(`${file}.base`, 'utf8').split('\n')[0]!) as unknown[])[2];
  /** The paths of the file lines a base or an image holds (a deleted file's too). */
  const fileLines = (file: string) =>
    fs
      .readFileSync(file, 'utf8')
      .trimEnd()
      .split('\n')
      .slice(1, -1)
      .map((line) => JSON.parse(line) as unknown[])
      .filter((line) => line[0] !== '=')
      .map((line) => line[0]);
  /** What a start at `head` takes. */
  const take = (image: RestartImage, head: string) => {
    const taken = image.take(head);
    if (!taken || 'reason' in taken) throw new Error(`not taken: ${JSON.stringify(taken)}`);
    return taken.snapshot;
  };
  /** A snapshot as compared: its head, each file's record, problems and contribution, and the targets served. */
  const expected = (snapshot: Snapshot) => ({
    head: snapshot.head,
    files: new Map([...snapshot.files].sort(([a], [b]) => (a < b ? -1 : 1))),
    problems: new Map(snapshot.problemsByFile),
    rejected: [...snapshot.rejected.keys()].sort(),
    targets: [...snapshot.catalog.targets.keys()].sort(),
  });
  const temps = (dir: string) => fs.readdirSync(dir).filter((name) => name.endsWith('.tmp'));

  // Its first save's wait is thirty times a base of 5000 files written (~1 s, longer under load).
  it('writes a base through changes, stops an image that is no longer served, saves what is served once quiet, and removes it at the next change', { timeout: 60_000 }, async () => {
    const dir = tempDir();
    const file = join(dir, 'restart-image');
    const live = new LiveCatalog(snapshotOf(5000, 'a'.repeat(40)));
    const lines: string[] = [];
    let busy = false;
    // Every path it opens in its thread (a directory is opened so to be synced: syncPath).
    const opened: string[] = [];
    const image = new RestartImage(file, fsWith({ openSync: ((path: fs.PathLike, ...rest: [never, never]) => (opened.push(String(path)), fs.openSync(path, ...rest))) as typeof fs.openSync }));
    // The branch moves on while the base (five chunks) is written: the base is written whole,
    // as of the snapshot it started from; the image over it (of that snapshot too) is stopped.
    let moved = false;
    whileBaseWritten(dir, () => {
      publish(live, 'b'.repeat(40), 'late');
      moved = true;
    });
    image.keep(live, { busy: () => busy, logger: createLogger((line) => lines.push(line)), quietMs: 10 });
    await waitFor('the new snapshot saved', async () => lines.some((line) => line.includes(SAVED)), 1000, 20);
    expect(moved).toBe(true);
    // One save only, of the snapshot served now: the image of the one file changed since the base.
    expect(lines.filter((line) => line.includes(SAVED))).toEqual([expect.stringMatching(new RegExp(`head=${'b'.repeat(40)} changed_files=1 `))]);
    expect(fs.readdirSync(dir).sort()).toEqual(['restart-image', 'restart-image.base']);
    expect(headOf(file)).toBe('b'.repeat(40));
    expect(fileLines(file)).toEqual(['targets/ml-training/late.yaml']);
    expect(fileLines(`${file}.base`)).toHaveLength(5001);
    const base = baseId(file);
    // A change: the image no longer shows what is served, and goes (a start at b must not take it). The base stays.
    // The removal is synced (its directory opened) before any save writes the image again.
    opened.length = 0;
    // Work under way from now: no save of c starts while the directory is looked at.
    busy = true;
    publish(live, 'c'.repeat(40), 'later');
    await waitFor('the outdated image removed, its directory synced', async () => !fs.existsSync(file) && opened.includes(dir), 100, 10);
    expect(fs.readdirSync(dir)).toEqual(['restart-image.base']);
    // A stop writes what is served: the files changed since the base. A second one, with nothing new, writes nothing.
    await image.save(live.snapshot());
    expect(headOf(file)).toBe('c'.repeat(40));
    expect(fileLines(file)).toEqual(['targets/ml-training/late.yaml', 'targets/ml-training/later.yaml']);
    expect(baseId(file)).toBe(base);
    const mtime = fs.statSync(file).mtimeMs;
    await image.save(live.snapshot());
    expect(fs.statSync(file).mtimeMs).toBe(mtime);
    expect(lines.filter((line) => line.includes(SAVED))).toHaveLength(1);
    expect(fs.readdirSync(dir).sort()).toEqual(['restart-image', 'restart-image.base']);
    const restored = new RestartImage(file).take('c'.repeat(40));
    expect(restored && 'snapshot' in restored && expected(restored.snapshot)).toEqual(expected(live.snapshot()));
  });

  it('does not save while work is under way, and a stop during a save stops it and writes the whole image itself', async () => {
    const dir = tempDir();
    const file = join(dir, 'restart-image');
    const live = new LiveCatalog(snapshotOf(3000, 'c'.repeat(40)));
    const lines: string[] = [];
    let busy = true;
    const image = new RestartImage(file);
    image.keep(live, { busy: () => busy, logger: createLogger((line) => lines.push(line)), quietMs: 10 });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(fs.readdirSync(dir)).toEqual([]);
    // Quiet: a save starts; while it writes the base (three chunks), the server stops.
    let stopped: Promise<void> | undefined;
    whileBaseWritten(dir, () => (stopped = image.save(live.snapshot())));
    busy = false;
    await waitFor('the stop', async () => stopped !== undefined, 300, 10);
    await stopped;
    // The save under way ended without a word; the stop wrote the base and the image, whole.
    expect(lines).toEqual([]);
    expect(fs.readdirSync(dir).sort()).toEqual(['restart-image', 'restart-image.base']);
    const restored = new RestartImage(file).take('c'.repeat(40));
    expect(restored && 'snapshot' in restored && restored.snapshot.files.size).toBe(3001);
    // Stopped: none after it.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(lines).toEqual([]);
    expect(fs.readdirSync(dir)).toEqual(['restart-image.base']);
  });

  it('writes the files changed since its base, a new base once they pass a tenth of the files, and a start takes the base over', async () => {
    const dir = tempDir();
    const file = join(dir, 'restart-image');
    let live = new LiveCatalog(snapshotOf(100, 'a'.repeat(40)));
    const lines: string[] = [];
    const quietly = (what: string, n: number) => waitFor(what, async () => lines.filter((line) => line.includes(SAVED)).length === n, 500, 10);
    const keep = (image: RestartImage) => image.keep(live, { busy: () => false, logger: createLogger((line) => lines.push(line)), quietMs: 10 });
    const first = new RestartImage(file);
    keep(first);
    await quietly('the first save', 1);
    const base = baseId(file);
    // Two changes of a file each, one a deletion: the image holds both, over the same base.
    publish(live, 'b'.repeat(40), 'n1', '10.2.0.1');
    remove(live, 'c'.repeat(40), 'n2');
    await quietly('the second save', 2);
    expect(fileLines(file)).toEqual(['targets/ml-training/n1.yaml', 'targets/ml-training/n2.yaml']);
    expect(baseId(file)).toBe(base);
    expect(lines.at(-1)).toContain('changed_files=2');
    // Killed; the next start takes the image, serves it, and goes on over its base.
    first.stop();
    const second = new RestartImage(file);
    const taken = take(second, 'c'.repeat(40));
    expect(expected(taken)).toEqual(expected(live.snapshot()));
    live = new LiveCatalog(taken);
    await waitFor('the image taken away', async () => fs.readdirSync(dir).join() === 'restart-image.base', 100, 10);
    keep(second);
    // 2 + 7 files changed of 107: the image holds them, over the same base.
    for (let i = 0; i < 7; i++) publish(live, `d${i}`.padEnd(40, '0'), `m${i}`, `10.3.0.${i}`);
    await quietly('a save of 9 files', 3);
    expect(fileLines(file)).toHaveLength(9);
    expect(baseId(file)).toBe(base);
    // 11 of 109, more than a tenth: a new base, and an image of no file over it.
    for (let i = 7; i < 9; i++) publish(live, `d${i}`.padEnd(40, '0'), `m${i}`, `10.3.0.${i}`);
    await quietly('a save with a new base', 4);
    expect(fileLines(file)).toEqual([]);
    expect(baseId(file)).not.toBe(base);
    expect(fileLines(`${file}.base`)).toHaveLength(109);
    second.stop();
    expect(expected(take(new RestartImage(file), `d8`.padEnd(40, '0')))).toEqual(expected(live.snapshot()));
    // The image went with the start that took it: a start after this one (killed at once) takes the long way, and the base goes too (nothing names it).
    expect(new RestartImage(file).take(`d8`.padEnd(40, '0'))).toBeUndefined();
    await waitFor('the base removed', async () => fs.readdirSync(dir).length === 0, 100, 10);
  });

  it('counts in its image the changes published before it looked (a start that saves what it took, and changed)', async () => {
    const dir = tempDir();
    const file = join(dir, 'restart-image');
    await new RestartImage(file).save(snapshotOf(100, 'a'.repeat(40)));
    const image = new RestartImage(file);
    const live = new LiveCatalog(take(image, 'a'.repeat(40)));
    // Published before keep() (or while no base counted changes): no subscriber saw it.
    publish(live, 'b'.repeat(40), 'n1', '10.2.0.1');
    await image.save(live.snapshot());
    expect(fileLines(file)).toEqual(['targets/ml-training/n1.yaml']);
    expect(expected(take(new RestartImage(file), 'b'.repeat(40)))).toEqual(expected(live.snapshot()));
  });

  it('leaves no image when its directory cannot be synced once it took its name (no change would remove it)', async () => {
    const dir = tempDir();
    const file = join(dir, 'restart-image');
    // The directory's sync after each rename fails: the base's first, then the image's.
    for (const failing of [1, 2]) {
      let syncs = 0;
      const failingSyncs = seeingSyncs((path) => {
        if (path === dir && ++syncs === failing) throw Object.assign(new Error('EIO: i/o error'), { code: 'EIO' });
      });
      await expect(new RestartImage(file, fsWith(failingSyncs.sync, failingSyncs.promises)).save(snapshotOf(10, 'a'.repeat(40)))).rejects.toThrow('EIO');
      expect(fs.readdirSync(dir)).toEqual(failing === 1 ? [] : ['restart-image.base']);
    }
  });

  it('takes the long way when the base is not the one the image names, or is missing', async () => {
    const dir = tempDir();
    const file = join(dir, 'restart-image');
    const live = new LiveCatalog(snapshotOf(10, 'a'.repeat(40)));
    await new RestartImage(file).save(live.snapshot());
    const image = fs.readFileSync(file);
    // Another base took its name (a kill between a new base and the image over it).
    await new RestartImage(join(dir, 'other')).save(live.snapshot());
    fs.renameSync(join(dir, 'other.base'), `${file}.base`);
    expect(new RestartImage(file).take('a'.repeat(40))).toEqual({ reason: "the image's base is not the one the image names" });
    // Neither is of any use now.
    await waitFor('both removed', async () => fs.readdirSync(dir).join() === 'other', 100, 10);
    fs.writeFileSync(file, image);
    expect(new RestartImage(file).take('a'.repeat(40))).toEqual({ reason: expect.stringMatching(/^the image's base cannot be read \(ENOENT/) });
  });

  it('tries a save that failed again while the server stays quiet', async () => {
    const dir = join(tempDir(), 'state');
    const file = join(dir, 'restart-image');
    const live = new LiveCatalog(snapshotOf(10, 'e'.repeat(40)));
    const lines: string[] = [];
    // Its directory is missing: the first save fails.
    const image = new RestartImage(file);
    image.keep(live, { busy: () => false, logger: createLogger((line) => lines.push(line)), quietMs: 10, retryMs: 300 });
    await waitFor('the failure', async () => lines.some((line) => line.includes('saving the snapshot for the next start failed')), 100, 10);
    fs.mkdirSync(dir);
    await waitFor('the image saved', async () => lines.some((line) => line.includes(SAVED)), 200, 20);
    expect(headOf(file)).toBe('e'.repeat(40));
    expect(lines.filter((line) => line.includes('failed'))).toHaveLength(1);
    await image.save(live.snapshot());
  });
});
