import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { clearLeftoverTemps, leftoverTemp, PROCESS_TAG, tempPathOf } from '../src/git/fs.js';
import { lockStateDir } from '../src/writer/state-lock.js';
import { fsWith, onCleanup, tempDir } from './helpers.js';
import { waitFor } from './node-helpers.js';

/** A process that runs until the test ends: its pid, and the line that names it in server.pid. */
async function running() {
  const child = spawn('sleep', ['300'], { stdio: 'ignore' });
  onCleanup(() => void child.kill('SIGKILL'));
  await new Promise((resolve) => child.once('spawn', resolve));
  const stat = fs.readFileSync(`/proc/${child.pid}/stat`, 'utf8');
  const started = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  const boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  return { pid: child.pid!, line: `${child.pid} ${started} ${boot}\n` };
}

describe('the state directory lock (server.pid)', () => {
  it('names the server holding it, and refuses a second', async () => {
    const dir = join(tempDir(), 'state');
    const release = await lockStateDir(dir);
    const [pid, started, boot] = fs.readFileSync(join(dir, 'server.pid'), 'utf8').trim().split(' ');
    expect(Number(pid)).toBe(process.pid);
    expect(Number(started)).toBeGreaterThan(0);
    expect(boot).toMatch(/^[0-9a-f-]{36}$/);
    expect(fs.statSync(join(dir, 'server.pid')).mode & 0o777).toBe(0o600);
    const other = await running();
    release();
    expect(fs.existsSync(join(dir, 'server.pid'))).toBe(false);
    fs.writeFileSync(join(dir, 'server.pid'), other.line);
    await expect(lockStateDir(dir)).rejects.toThrow(`another server (pid ${other.pid}) is using the state directory ${dir}`);
    expect(fs.readFileSync(join(dir, 'server.pid'), 'utf8')).toBe(other.line);
  });

  it('takes over a file whose process is gone, or whose pid another process has now (after a crash, a reboot, a container restart)', async () => {
    const dir = join(tempDir(), 'state');
    fs.mkdirSync(dir);
    const other = await running();
    const boot = other.line.trim().split(' ')[2];
    for (const stale of [
      '999999999 1 ' + boot + '\n', // no such process
      `${other.pid} 1 ${boot}\n`, // the pid runs, but started at another time: reused
      `${other.pid} ${other.line.split(' ')[1]} 00000000-0000-0000-0000-000000000000\n`, // another boot
      `${process.pid} 1 ${boot}\n`, // this process's own pid (pid 1 of a container started again)
      '', // nothing read
    ]) {
      fs.writeFileSync(join(dir, 'server.pid'), stale);
      const release = await lockStateDir(dir);
      expect(fs.readFileSync(join(dir, 'server.pid'), 'utf8').split(' ')[0]).toBe(String(process.pid));
      release();
    }
    expect(fs.readdirSync(dir)).toEqual([]); // no temp or aside file left
  });

  it('renews its lease while it holds the directory, says so when the file is no longer its own, and renews no more once released', async () => {
    const dir = join(tempDir(), 'state');
    const file = join(dir, 'server.pid');
    const trouble: string[] = [];
    const release = await lockStateDir(dir, { renewMs: 20, trouble: (what) => trouble.push(what) });
    const mine = fs.readFileSync(file, 'utf8');
    expect(mine).toMatch(/ ns=pid:\[\d+\]\n$/);
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(file, old, old);
    await waitFor('a renewal', async () => fs.statSync(file).mtimeMs > old.getTime(), 200, 10);
    // Taken over by another server (this one's renewals stalled past a lease): told once, the other's file left alone.
    fs.writeFileSync(file, 'another server\n');
    await waitFor('the trouble told', async () => trouble.length > 0, 200, 10);
    expect(trouble).toEqual([`${file} is no longer this server's: another server may have taken the state directory over (this one's renewals stalled, or someone removed the file)`]);
    // Its own again, then released: no renewal after (it would be told of the missing file).
    fs.writeFileSync(file, mine);
    release();
    expect(fs.existsSync(file)).toBe(false);
    await new Promise((resolve) => setTimeout(resolve, 100)); // five renewals' time
    expect(trouble).toHaveLength(1);
  });

  it('looks a current file of this namespace and boot up by its pid: a live one is refused at once, a dead one taken at once', async () => {
    const dir = join(tempDir(), 'state');
    fs.mkdirSync(dir);
    const file = join(dir, 'server.pid');
    const namespace = fs.readlinkSync('/proc/self/ns/pid');
    const other = await running();
    const waited: unknown[] = [];
    fs.writeFileSync(file, `${other.line.trim()} ns=${namespace}\n`);
    await expect(lockStateDir(dir, { waiting: (holder) => waited.push(holder) })).rejects.toThrow(`another server (pid ${other.pid}) is using the state directory ${dir}`);
    fs.writeFileSync(file, `999999999 1 ${other.line.split(' ')[2]!.trim()} ns=${namespace}\n`);
    (await lockStateDir(dir, { waiting: (holder) => waited.push(holder) }))();
    expect(waited).toEqual([]);
  });

  it('watches the lease of a server on another host (another boot, the same namespace id: every host root namespace has one) as of another container', async () => {
    const dir = join(tempDir(), 'state');
    fs.mkdirSync(dir);
    const file = join(dir, 'server.pid');
    const namespace = fs.readlinkSync('/proc/self/ns/pid');
    // Its pid is this test runner's: looked up here, it would be refused as a live server, or taken over if it were gone.
    const elsewhere = `${process.ppid} 5 00000000-0000-0000-0000-000000000000 ns=${namespace}\n`;
    fs.writeFileSync(file, elsewhere);
    const renewal = setInterval(() => fs.utimesSync(file, new Date(), new Date()), 10);
    await expect(lockStateDir(dir, { leaseMs: 150 })).rejects.toThrow('on another host');
    clearInterval(renewal);
    const waited: unknown[] = [];
    (await lockStateDir(dir, { leaseMs: 150, waiting: (holder) => waited.push(holder) }))();
    expect(waited).toEqual([{ pid: process.ppid, namespace, leaseMs: 150 }]);
  });

  it('takes over the file of a server in another pid namespace (another container) once its lease ran out, never while it is renewed', async () => {
    const dir = join(tempDir(), 'state');
    fs.mkdirSync(dir);
    const file = join(dir, 'server.pid');
    // Pid 1 of another container: its pid here (if any) says nothing about it.
    const boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const other = `1 5 ${boot} ns=pid:[1]\n`;
    fs.writeFileSync(file, other);
    // Renewed while we wait: it runs.
    const renewal = setInterval(() => fs.utimesSync(file, new Date(), new Date()), 10);
    const waited: unknown[] = [];
    await expect(lockStateDir(dir, { leaseMs: 150, waiting: (holder) => waited.push(holder) })).rejects.toThrow(`another server (pid 1 in another pid namespace or on another host: another container on this volume?) is using the state directory ${dir}`);
    clearInterval(renewal);
    expect(waited).toEqual([{ pid: 1, namespace: 'pid:[1]', leaseMs: 150 }]);
    expect(fs.readFileSync(file, 'utf8')).toBe(other);
    // Not renewed for a lease (its container was killed): taken over.
    const release = await lockStateDir(dir, { leaseMs: 150 });
    expect(fs.readFileSync(file, 'utf8').split(' ')[0]).toBe(String(process.pid));
    release();
    // A lease that ran out long ago: taken at once, nobody waits.
    fs.writeFileSync(file, other);
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(file, old, old);
    waited.length = 0;
    (await lockStateDir(dir, { leaseMs: 150, waiting: (holder) => waited.push(holder) }))();
    expect(waited).toEqual([]);
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('releases only its own file', async () => {
    const dir = join(tempDir(), 'state');
    const release = await lockStateDir(dir);
    fs.writeFileSync(join(dir, 'server.pid'), 'someone else\n');
    release();
    expect(fs.readFileSync(join(dir, 'server.pid'), 'utf8')).toBe('someone else\n');
  });

  it('never writes through a link planted at its temp name, and names its temp so a later start clears what a kill left', async () => {
    const dir = join(tempDir(), 'state');
    fs.mkdirSync(dir, { mode: 0o700 });
    const victim = join(tempDir(), 'victim');
    fs.writeFileSync(victim, 'not the lock\n');
    const temp = tempPathOf(join(dir, 'server.pid'), `${process.pid}.${PROCESS_TAG}.0`);
    fs.symlinkSync(victim, temp);
    const release = await lockStateDir(dir);
    expect(fs.readFileSync(victim, 'utf8')).toBe('not the lock\n');
    expect(fs.readFileSync(join(dir, 'server.pid'), 'utf8').split(' ')[0]).toBe(String(process.pid));
    expect(fs.readdirSync(dir)).toEqual(['server.pid']);
    release();
    // Another process's temp of this form, killed before it removed it (two minutes on): a start's clean-up knows it.
    expect(leftoverTemp(temp.slice(dir.length + 1).replace(PROCESS_TAG, 't0a1b2c3d'), Date.now() - 130_000)).toBe(true);
  });
});

describe('clearing what killed servers left in the state directory', () => {
  it('passes over a leftover it cannot look at or remove, and clears the others', () => {
    const dir = tempDir();
    const old = new Date(Date.now() - 10 * 60_000);
    const names = ['.a.json.4242.t0a1b2c3d.1.tmp', '.b.json.4242.t0a1b2c3d.2.tmp', '.c.json.4242.t0a1b2c3d.3.tmp', '.d.json.4242.t0a1b2c3d.4.tmp'];
    for (const name of names) {
      fs.writeFileSync(join(dir, name), '{"partial');
      fs.utimesSync(join(dir, name), old, old);
    }
    // The first one listed cannot be looked at, the second cannot be removed (EACCES, a file gone meanwhile).
    const listed = fs.readdirSync(dir);
    const fault = (path: fs.PathLike) => Object.assign(new Error(`EACCES: ${String(path)}`), { code: 'EACCES' });
    const faulty = fsWith({
      lstatSync: ((path: fs.PathLike, ...rest: unknown[]) => {
        if (String(path).endsWith(listed[0]!)) throw fault(path);
        return (fs.lstatSync as (...args: unknown[]) => fs.Stats)(path, ...rest);
      }) as typeof fs.lstatSync,
      rmSync: ((path: fs.PathLike, options?: fs.RmOptions) => {
        if (String(path).endsWith(listed[1]!)) throw fault(path);
        fs.rmSync(path, options);
      }) as typeof fs.rmSync,
    });
    expect(clearLeftoverTemps(faulty, dir).sort()).toEqual(listed.slice(2).sort());
    expect(fs.readdirSync(dir).sort()).toEqual(listed.slice(0, 2).sort());
    // A directory that cannot be listed: nothing removed, no throw (the start goes on).
    expect(clearLeftoverTemps(fs, join(dir, 'missing'))).toEqual([]);
  });
});
