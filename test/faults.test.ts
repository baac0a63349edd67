import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startServer } from '../src/server.js';
import { gitCli, onCleanup, pushFiles, targetYaml, tempDir } from './helpers.js';
import { ADMIN, serverConfig, waitFor } from './node-helpers.js';

const auth = { authorization: `Bearer ${ADMIN}` };
const json = async (response: Response) => ({ status: response.status, body: (await response.json()) as any });

async function runningServer(overrides: Parameters<typeof serverConfig>[0] = {}) {
  const config = serverConfig({ refPollMs: 100, ...overrides });
  const server = await startServer(config);
  let closed = false;
  onCleanup(async () => {
    if (!closed) await server.close();
  });
  const addTarget = (hostname: string, ip: string) =>
    fetch(`${server.url}/api/v1/targets`, { method: 'POST', headers: auth, body: JSON.stringify({ hostname, ip_address: ip, primary_group_id: 'ml-training' }) }).then(json);
  const health = () => fetch(`${server.url}/api/v1/health`, { headers: auth }).then(json);
  const sdText = () => fs.readFileSync(join(config.sdDir, 'node.json'), 'utf8');
  const sdHosts = () => (JSON.parse(sdText()) as Array<{ labels: Record<string, string> }>).map((e) => e.labels.hostname).sort();
  /** Waits for health to clear, saying what it last reported if it never does. */
  const healthyAgain = async () => {
    let last: unknown;
    await waitFor('healthy again', async () => ((last = (await health()).body) as { status: string }).status === 'healthy').catch((error: Error) => {
      throw new Error(`${error.message}; last health: ${JSON.stringify(last)}`);
    });
  };
  return {
    config,
    server,
    addTarget,
    health,
    sdText,
    sdHosts,
    healthyAgain,
    async close() {
      closed = true;
      await server.close();
    },
  };
}

/** Files a failed write could leave behind: git's and ours. */
function tempFiles(...dirs: string[]): string[] {
  return dirs.flatMap((dir) => (fs.existsSync(dir) ? (fs.readdirSync(dir, { recursive: true }) as string[]).filter((name) => /tmp_obj_|tmp_pack_|\.tmp$|\.lock$/.test(name)) : []));
}

/** A tmpfs of `size` at a new directory, when this machine lets the test mount one (root in a sandbox that allows it). */
function tmpfs(size: string): string | undefined {
  const dir = tempDir('aami-tmpfs-');
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  if (mounted.status !== 0) return undefined;
  onCleanup(() => {
    spawnSync('umount', ['-l', dir]);
  });
  return dir;
}

/** Remounts a test tmpfs. The kernel refuses `ro` (EBUSY) while a file there is open for
 * writing — the server may be finishing an SD file or its stamp — so it tries again a while. */
async function remount(dir: string, mode: 'ro' | 'rw'): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const result = spawnSync('mount', ['-o', `remount,${mode}`, dir], { encoding: 'utf8' });
    if (result.status === 0) return;
    if (attempt >= 100 || !/busy/i.test(result.stderr)) throw new Error(`mount -o remount,${mode} ${dir}: ${result.stderr.trim()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('faults degrade, never destroy', () => {
  it('keeps serving the last good SD when the repository moves away, says why, refuses writes with 503, and recovers when it is back', async () => {
    const s = await runningServer();
    expect((await s.addTarget('before-1', '10.0.0.1')).status).toBe(201);
    await waitFor('the target in the SD file', async () => s.sdHosts().includes('before-1'));
    const sdBefore = s.sdText();

    fs.renameSync(s.config.repo, `${s.config.repo}.away`);
    const degraded = await waitFor('health to say the repository is gone', async () => {
      const { body } = await s.health();
      return body.repo.error && body;
    });
    expect(degraded.status).toBe('degraded');
    expect(degraded.repo.error).toContain('cannot read the branch main');
    expect(await s.addTarget('during', '10.0.0.2')).toMatchObject({ status: 503, body: { error: { code: 'repo_unavailable' } } });
    // Prometheus keeps every target: the SD file is never emptied because of an error.
    expect(s.sdText()).toBe(sdBefore);
    expect((await fetch(`${s.server.url}/api/v1/targets`, { headers: auth }).then(json)).body.map((t: any) => t.hostname)).toEqual(['before-1']);

    fs.renameSync(`${s.config.repo}.away`, s.config.repo);
    await waitFor('health to recover', async () => (await s.health()).body.status === 'healthy');
    expect((await s.addTarget('after', '10.0.0.3')).status).toBe(201);
    await waitFor('the new target in the SD file', async () => s.sdHosts().join() === 'after,before-1');
    expect(tempFiles(s.config.repo, s.config.sdDir)).toEqual([]);
    gitCli(s.config.repo, 'fsck', '--strict', '--no-progress');
  });

  it('answers a full disk with 503 storage_unavailable, leaves no temp file, and works again once there is room', async () => {
    const disk = tmpfs('4m');
    const base = disk ?? tempDir();
    const s = await runningServer({ repo: join(base, 'repo'), sdDir: join(base, 'sd') });
    expect((await s.addTarget('first', '10.0.0.1')).status).toBe(201);
    await waitFor('first in the SD file', async () => s.sdHosts().includes('first'));
    const sdBefore = s.sdText();
    let release: () => void;
    if (disk) {
      // Fill the file system to the last block.
      const filler = join(disk, 'filler');
      const fd = fs.openSync(filler, 'w');
      const block = Buffer.alloc(64 * 1024);
      try {
        for (;;) fs.writeSync(fd, block);
      } catch (error) {
        expect((error as NodeJS.ErrnoException).code).toBe('ENOSPC');
      }
      fs.closeSync(fd);
      release = () => fs.rmSync(filler);
    } else {
      // No tmpfs here: make the object store refuse new files instead (an injected write error).
      const objects = join(s.config.repo, 'objects');
      const mode = fs.statSync(objects).mode;
      fs.chmodSync(objects, 0o500);
      for (const dir of fs.readdirSync(objects)) fs.chmodSync(join(objects, dir), 0o500);
      release = () => {
        fs.chmodSync(objects, mode);
        for (const dir of fs.readdirSync(objects)) fs.chmodSync(join(objects, dir), 0o755);
      };
      if (process.getuid?.() === 0) return; // root writes through permissions: nothing to inject this way
    }
    const refused = await s.addTarget('while-full', '10.0.0.2');
    expect(refused).toMatchObject({ status: 503, body: { error: { code: 'storage_unavailable' } } });
    const health = (await s.health()).body;
    expect(health.status).toBe('degraded');
    expect(health.writer.last_failure.message).toMatch(/ENOSPC|EACCES/);
    expect(tempFiles(s.config.repo)).toEqual([]);
    expect(s.sdText()).toBe(sdBefore);
    expect(gitCli(s.config.repo, 'ls-tree', '-r', '--name-only', 'main', 'targets').trim().split('\n')).toEqual(['targets/ml-training/first.yaml']);

    release();
    expect((await s.addTarget('after', '10.0.0.3')).status).toBe(201);
    // The SD side recovers by itself, on the compile that follows: a compile that was still
    // writing when the disk filled (the SD stamp goes after the files) failed and says so until then.
    await s.healthyAgain();
    await waitFor('after in the SD file', async () => s.sdHosts().join() === 'after,first');
    gitCli(s.config.repo, 'fsck', '--strict', '--no-progress');
  });

  it('keeps the SD files through a read-only moment of their directory and rewrites them by itself when it clears', async () => {
    const disk = tmpfs('4m');
    if (!disk) return expect(disk, 'this machine cannot mount a tmpfs: covered by the permission test above').toBeUndefined();
    const s = await runningServer({ sdDir: join(disk, 'sd') });
    expect((await s.addTarget('first', '10.0.0.1')).status).toBe(201);
    await waitFor('first in the SD file', async () => s.sdHosts().includes('first'));
    await remount(disk, 'ro');
    try {
      expect((await s.addTarget('second', '10.0.0.2')).status).toBe(201);
      const health = await waitFor('health to report the SD write failing', async () => {
        const { body } = await s.health();
        return body.compiler.last_error && body;
      });
      expect(health.status).toBe('degraded');
      expect(health.compiler.last_error).toMatch(/EROFS/);
      expect(s.sdHosts()).toEqual(['first']);
    } finally {
      await remount(disk, 'rw');
    }
    await waitFor('the SD file to catch up without another write', async () => s.sdHosts().join() === 'first,second', 100);
    // The compile clears its error once the SD stamp, written after the files, is down too.
    await s.healthyAgain();
    expect(tempFiles(s.config.sdDir)).toEqual([]);
  });

  it('bounds host names before anything is written: 250 characters are a clonable file name, 251 are refused with 400', async () => {
    const s = await runningServer();
    const label = (c: string) => c.repeat(62);
    const name250 = [label('a'), label('b'), label('c'), label('d')].join('.').slice(0, 248) + 'zz';
    expect(name250).toHaveLength(250);
    expect((await s.addTarget(name250, '10.0.0.1')).status).toBe(201);
    const tooLong = await s.addTarget(`${name250.slice(0, 249)}xy`, '10.0.0.2');
    expect(tooLong).toMatchObject({ status: 400, body: { error: { code: 'validation_failed', details: [{ field: 'hostname', message: expect.stringContaining('at most 250') }] } } });
    // Everyone can still clone the repository (the file name fits NAME_MAX).
    const clone = join(tempDir(), 'clone');
    gitCli(tempDir(), 'clone', '--quiet', s.config.repo, clone);
    expect(fs.existsSync(join(clone, `targets/ml-training/${name250}.yaml`))).toBe(true);
  });

  it('serves a repository of the old layout from its commits only: files in the working tree never go live, and commits there are stopped', async () => {
    const base = tempDir();
    const repo = join(base, 'legacy');
    gitCli(base, 'init', '--quiet', '--initial-branch=main', repo);
    pushFilesInto(repo);
    const s = await runningServer({ repo });
    expect((await s.health()).body.repo).toMatchObject({ layout: 'working-tree', warning: expect.stringContaining('git clone --bare') });
    // Never committed: never live.
    fs.mkdirSync(join(repo, 'targets/ml-training'), { recursive: true });
    fs.writeFileSync(join(repo, 'targets/ml-training/untracked.yaml'), targetYaml('untracked', '10.0.9.9'));
    expect((await s.addTarget('by-api', '10.0.0.1')).status).toBe(201);
    // A push is followed; the untracked file still is not.
    pushFiles(repo, { 'targets/ml-training/pushed.yaml': targetYaml('pushed', '10.0.0.2') }, 'A pushed target');
    await waitFor('the pushed target', async () => s.sdHosts().includes('pushed'));
    expect(s.sdHosts()).toEqual(['by-api', 'pushed']);
    // A commit in the stale working tree would undo acknowledged writes: the hook stops it.
    const commit = spawnSync('git', ['commit', '-q', '-am', 'from the working tree'], { cwd: repo, encoding: 'utf8' });
    expect(commit.status).not.toBe(0);
    expect(commit.stderr).toContain('served by aami');
  });
});

/** The starter config committed into a fresh non-bare repository (the old layout). */
function pushFilesInto(repo: string): void {
  fs.writeFileSync(join(repo, 'aami.yaml'), 'exporters:\n  node_exporter: {job: node, port: 9100}\n');
  fs.mkdirSync(join(repo, 'groups'));
  fs.writeFileSync(join(repo, 'groups/ml-training.yaml'), 'id: ml-training\nname: ml-training\nnamespace: logical\n');
  gitCli(repo, 'add', '-A');
  gitCli(repo, 'commit', '--quiet', '-m', 'old layout');
}
