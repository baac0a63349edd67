import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { existsSync, mkdirSync, type PathLike, readdirSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { getPriority } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { clearLeftoverPackTemps, hashObject, ObjectWriter, type TreeEntry } from '../src/git/objects.js';
import { swapRef } from '../src/git/refs.js';
import { GitRepository } from '../src/git/repository.js';
import { Tree } from '../src/git/tree.js';
import { ADMIN, fixedClock, fsWith, gitCli, onCleanup, pushFiles, random as seeded, seeingSyncs, tempDir } from './helpers.js';


async function repository(now?: () => number) {
  const dir = join(tempDir(), 'repo.git');
  const repo = await GitRepository.init(dir, {
    now,
    author: ADMIN,
    files: [
      { path: 'aami.yaml', content: 'exporters: {node_exporter: {job: node, port: 9100}}\n' },
      { path: 'groups/ml.yaml', content: 'id: ml\nname: ml\nnamespace: logical\n' },
    ],
  });
  onCleanup(() => repo.close());
  return { repo, dir, git: (...args: string[]) => gitCli(dir, ...args) };
}

describe('GitRepository', () => {
  it('is a bare repository whose commits the git CLI reads: author, message, trailers, fsck --strict', async () => {
    const { repo, dir, git } = await repository();
    expect(git('rev-parse', '--is-bare-repository').trim()).toBe('true');
    expect(existsSync(join(dir, 'index'))).toBe(false);
    const head = await repo.head();
    const commit = await repo.writeCommit(head, {
      message: 'Register gpu-01',
      author: { name: 'token k3j9x2ab', email: 'k3j9x2ab@tokens.aami' },
      trailers: [['Source-Address', '10.0.0.7']],
      changes: [
        { path: 'targets/ml/gpu-01.yaml', content: 'hostname: gpu-01\n' },
        { path: 'tokens/k3j9x2ab.yaml', content: 'uses: 1\n' },
      ],
    });
    // Written, durable, but the branch has not moved: that is swap()'s job.
    expect(await repo.head()).toBe(head);
    expect(await repo.swap(head, commit!)).toEqual({ kind: 'swapped' });
    expect(git('rev-parse', 'main').trim()).toBe(commit);
    expect(git('log', '--format=%an <%ae>|%s|%(trailers:key=Source-Address,valueonly)', '-1').trim()).toBe('token k3j9x2ab <k3j9x2ab@tokens.aami>|Register gpu-01|10.0.0.7');
    expect(git('show', '--name-only', '--format=', 'HEAD').trim().split('\n')).toEqual(['targets/ml/gpu-01.yaml', 'tokens/k3j9x2ab.yaml']);
    expect(git('show', 'HEAD:targets/ml/gpu-01.yaml')).toBe('hostname: gpu-01\n');
    git('fsck', '--strict', '--no-progress');
  });

  it('removes directories a delete leaves empty, and makes no commit when the tree stays as it is', async () => {
    const { repo, git } = await repository();
    let head = (await repo.head())!;
    const add = await repo.writeCommit(head, { message: 'add', author: ADMIN, changes: [{ path: 'targets/ml/a.yaml', content: 'a\n' }] });
    await repo.swap(head, add!);
    head = add!;
    const remove = await repo.writeCommit(head, { message: 'remove', author: ADMIN, changes: [{ path: 'targets/ml/a.yaml', content: null }] });
    await repo.swap(head, remove!);
    expect(git('ls-tree', '-r', '--name-only', 'HEAD').trim().split('\n')).toEqual(['aami.yaml', 'groups/ml.yaml']);
    expect(await repo.writeCommit(remove!, { message: 'same', author: ADMIN, changes: [{ path: 'groups/ml.yaml', content: 'id: ml\nname: ml\nnamespace: logical\n' }] })).toBeNull();
    git('fsck', '--strict', '--no-progress');
  });

  it('writes blobs the git CLI reads back byte for byte, empty to over 1 MiB (each deflated with a window sized to it)', async () => {
    const { repo, dir, git } = await repository();
    const rng = seeded(77);
    const text = (size: number, alphabet: string) => Array.from({ length: size }, () => alphabet[Math.floor(rng.next() * alphabet.length)]).join('');
    const contents = [
      '', 'x', text(250, 'ab'), text(251, 'abcdefghij\n'), text(512, 'xyz: 01\n'), text(770, '0123456789abcdef'), text(5_000, 'ab c\n'),
      // Around the sizes where the window grows to zlib's whole 32 KB (with its 262-byte lookahead).
      text(32_506, 'abc\n'), text(32_507, 'abc\n'), text(40_000, 'abcdefghijklmnopqrstuvwxyz0123456789\n'), `${text(33_000, 'ab')}${'repeat me '.repeat(3_000)}`,
      'line\n'.repeat(250_000),
    ];
    const changes = contents.map((content, i) => ({ path: `checks/sizes/file-${i}.sh`, content }));
    const commit = (await repo.writeCommit(await repo.head(), { message: 'sizes', author: ADMIN, changes }))!;
    const show = (path: string) => execFileSync('git', ['--git-dir', dir, 'show', `${commit}:${path}`], { encoding: 'utf8', maxBuffer: 1 << 24 });
    for (const [i, content] of contents.entries()) expect(show(`checks/sizes/file-${i}.sh`) === content, `file-${i}`).toBe(true);
    git('fsck', '--strict', '--no-progress');
  });

  it('writes trees the git CLI reads back, small to several stored blocks of 64 KB (a directory of thousands of files)', async () => {
    const { repo, dir, git } = await repository();
    // 3,000 entries of 43 bytes: a tree of 129 KB, two of zlib's stored blocks of up to 64 KB, hashed in two updates (past 16 KB).
    const names = Array.from({ length: 3_000 }, (_, i) => `targets/big/host-${String(i).padStart(5, '0')}.yaml`);
    const first = (await repo.writeCommit(await repo.head(), { message: 'many', author: ADMIN, changes: names.map((path, i) => ({ path, content: `n: ${i}\n` })) }))!;
    // The next version of the same tree: one entry changed, one removed, one added.
    const second = (await repo.writeCommit(first, {
      message: 'one of many',
      author: ADMIN,
      changes: [
        { path: names[1_500]!, content: 'changed\n' },
        { path: names[0]!, content: null },
        { path: 'targets/big/host-99999.yaml', content: 'added\n' },
      ],
    }))!;
    const list = (commit: string) => execFileSync('git', ['--git-dir', dir, 'ls-tree', '--name-only', `${commit}:targets/big`], { encoding: 'utf8', maxBuffer: 1 << 24 }).trim().split('\n');
    expect(list(first)).toEqual(names.map((path) => path.slice('targets/big/'.length)));
    expect(list(second)).toEqual([...names.slice(1).map((path) => path.slice('targets/big/'.length)), 'host-99999.yaml']);
    expect(git('show', `${second}:${names[1_500]}`)).toBe('changed\n');
    expect(git('show', `${second}:${names[2_999]}`)).toBe('n: 2999\n');
    // Git's own id of each tree, hashed again from the bytes it reads back, is the one the commit names.
    for (const commit of [first, second]) {
      const id = git('rev-parse', `${commit}:targets/big`).trim();
      const bytes = execFileSync('git', ['--git-dir', dir, 'cat-file', 'tree', id], { maxBuffer: 1 << 24 });
      expect(execFileSync('git', ['--git-dir', dir, 'hash-object', '-t', 'tree', '--stdin'], { input: bytes, encoding: 'utf8' }).trim()).toBe(id);
    }
    git('fsck', '--strict', '--no-progress');
  });

  it('gives the same commit ids for the same changes at the same pinned time', async () => {
    const clock = fixedClock();
    const [a, b] = [await repository(clock.now), await repository(clock.now)];
    const change = { message: 'm', author: ADMIN, changes: [{ path: 'targets/ml/x.yaml', content: 'x\n' }] };
    expect(await a.repo.writeCommit(await a.repo.head(), change)).toBe(await b.repo.writeCommit(await b.repo.head(), change));
  });

  it('moves the branch only from the commit it expects: a push that came first wins and is kept', async () => {
    const { repo, dir, git } = await repository();
    const base = (await repo.head())!;
    const ours = await repo.writeCommit(base, { message: 'ours', author: ADMIN, changes: [{ path: 'targets/ml/ours.yaml', content: 'o\n' }] });
    const theirs = pushFiles(dir, { 'targets/ml/theirs.yaml': 't\n' }, 'theirs');
    expect(await repo.swap(base, ours!)).toEqual({ kind: 'moved', current: theirs });
    expect(git('rev-parse', 'main').trim()).toBe(theirs);
    // On the tip it finds, the swap goes through: the writer replays its writes there.
    expect(await repo.swap(theirs, ours!)).toEqual({ kind: 'swapped' });
  });

  it('waits out a lock another git process holds, and removes one left by a dead process', async () => {
    const { repo, dir } = await repository();
    const head = (await repo.head())!;
    const next = await repo.writeCommit(head, { message: 'n', author: ADMIN, changes: [{ path: 'x.yaml', content: 'x\n' }] });
    const lock = join(dir, 'refs/heads/main.lock');
    writeFileSync(lock, 'held\n');
    expect((await repo.swap(head, next!)).kind).toBe('locked');
    const old = new Date(Date.now() - 10 * 60_000);
    utimesSync(lock, old, old);
    expect(await repo.swap(head, next!)).toEqual({ kind: 'swapped' });
    expect(existsSync(lock)).toBe(false);
  });

  it('at start-up removes a branch lock that stays unchanged through a short wait, and leaves one taken anew', async () => {
    const { repo, dir } = await repository();
    const lock = join(dir, 'refs/heads/main.lock');
    expect(await repo.clearLeftoverLock()).toBeUndefined();
    // Left by a server killed mid-commit a moment ago: young, but nobody holds it.
    writeFileSync(lock, 'a0\n');
    expect(await repo.clearLeftoverLock()).toBe(lock);
    expect(existsSync(lock)).toBe(false);
    // A live git push releases its lock and another takes it during the wait: not ours to remove.
    writeFileSync(lock, 'a1\n');
    const cleared = repo.clearLeftoverLock();
    await new Promise((resolve) => setTimeout(resolve, 200));
    rmSync(lock);
    writeFileSync(lock, 'a2\n');
    expect(await cleared).toBeUndefined();
    expect(existsSync(lock)).toBe(true);
  });

  it('lists every file of a commit with its mode, and diffs two commits path by path', async () => {
    const { repo, dir } = await repository();
    const before = (await repo.head())!;
    const work = join(tempDir(), 'work');
    mkdirSync(work);
    gitCli(work, 'clone', '--quiet', dir, '.');
    mkdirSync(join(work, 'checks/evil'), { recursive: true });
    gitCli(work, 'rm', '--quiet', 'groups/ml.yaml');
    writeFileSync(join(work, 'checks/evil/check.yaml'), 'description: x\n');
    gitCli(work, 'add', '-A');
    gitCli(work, 'commit', '--quiet', '-m', 'evil');
    // A symlink committed as a check script: the tree says so (mode 120000), whatever its name.
    symlinkSync('/proc/self/environ', join(work, 'checks/evil/check.sh'));
    gitCli(work, 'add', '-A');
    gitCli(work, 'commit', '--quiet', '-m', 'link');
    gitCli(work, 'push', '--quiet', 'origin', 'HEAD:main');
    const after = (await repo.head())!;
    const files = await repo.listFiles(after);
    expect(files.get('checks/evil/check.sh')?.mode).toBe('120000');
    expect(files.get('aami.yaml')?.mode).toBe('100644');
    const changes = await repo.diff(before, after);
    expect(changes.map((c) => [c.path, c.before?.mode ?? null, c.after?.mode ?? null])).toEqual([
      ['checks/evil/check.sh', null, '120000'],
      ['checks/evil/check.yaml', null, '100644'],
      ['groups/ml.yaml', '100644', null],
    ]);
    expect(readdirSync(dir)).not.toContain('checks');
  });

  it('keeps file names it does not understand byte for byte: non-ASCII and invalid UTF-8 names survive its commits', async () => {
    const { repo, dir, git } = await repository();
    // A person's commit with names in UTF-8, in Latin-1 (invalid UTF-8) and with sort traps.
    const work = join(tempDir(), 'work');
    git('clone', '--quiet', dir, work);
    const names = [Buffer.from('café.md'), Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x2e, 0x6d, 0x64]), Buffer.from([0x63, 0x61, 0x66, 0xe8, 0x2e, 0x6d, 0x64]), Buffer.from('a-b'), Buffer.from('a.b'), Buffer.from('ä')];
    for (const name of names) writeFileSync(Buffer.concat([Buffer.from(`${work}/`), name]), 'x\n');
    gitCli(work, 'add', '-A');
    gitCli(work, 'commit', '--quiet', '-m', 'odd names');
    gitCli(work, 'push', '--quiet', 'origin', 'HEAD:main');
    const before = git('ls-tree', '--name-only', '-z', 'main');
    const head = (await repo.head())!;
    const commit = await repo.writeCommit(head, { message: 'api', author: ADMIN, changes: [{ path: 'groups/db.yaml', content: 'id: db\n' }] });
    await repo.swap(head, commit!);
    git('fsck', '--strict', '--no-progress');
    expect(git('ls-tree', '--name-only', '-z', 'main')).toBe(before);
  });

  it('writes each commit as one pack, and folds the packs together now and then', async () => {
    const dir = join(tempDir(), 'repo.git');
    const repo = await GitRepository.init(dir, { author: ADMIN, files: [{ path: 'aami.yaml', content: 'exporters: {}\n' }] });
    let head = (await repo.head())!;
    for (let i = 0; i < 60; i++) {
      const commit = await repo.writeCommit(head, { message: `c${i}`, author: ADMIN, changes: [{ path: `targets/g${i % 3}/h${i}.yaml`, content: `n: ${i}\n` }] });
      expect((await repo.swap(head, commit!)).kind).toBe('swapped');
      head = commit!;
    }
    await repo.close(); // waits for the repack
    const packs = readdirSync(join(dir, 'objects/pack')).filter((f) => f.endsWith('.pack'));
    expect(packs.length).toBeLessThan(15);
    expect(readdirSync(join(dir, 'objects')).filter((d) => /^[0-9a-f]{2}$/.test(d))).toEqual([]);
    gitCli(dir, 'fsck', '--strict', '--no-progress');
    expect(gitCli(dir, 'rev-list', '--count', 'main').trim()).toBe('61');
    expect(gitCli(dir, 'show', 'main:targets/g2/h59.yaml')).toBe('n: 59\n');
  });

  // Read from /proc, and told apart from the runner's own priority.
  it.runIf(process.platform === 'linux' && getPriority() !== 19)('folds the packs at the lowest priority: upkeep nothing waits for leaves the cores to the commits', async () => {
    // A git on PATH before the real one that notes its priority once lowered (or after 5 s), then becomes the real one.
    const bin = join(tempDir(), 'bin');
    mkdirSync(bin);
    const log = join(bin, 'priorities');
    const real = execFileSync('sh', ['-c', 'command -v git'], { encoding: 'utf8' }).trim();
    const nice = "$(cut -d' ' -f19 /proc/$$/stat)"; // the 19th field of a process's stat is its nice value
    writeFileSync(join(bin, 'git'), `#!/bin/sh\nif [ "$2" = repack ]; then\n  i=0\n  while [ "${nice}" != 19 ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i + 1)); done\n  echo "${nice}" >> '${log}'\nfi\nexec '${real}' "$@"\n`, { mode: 0o755 });
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    onCleanup(() => {
      process.env.PATH = path;
    });
    const dir = join(tempDir(), 'repo.git');
    const repo = await GitRepository.init(dir, { author: ADMIN, files: [{ path: 'aami.yaml', content: 'exporters: {}\n' }] });
    let head = (await repo.head())!;
    for (let i = 0; i < 50; i++) {
      const commit = await repo.writeCommit(head, { message: `c${i}`, author: ADMIN, changes: [{ path: `targets/g/h${i}.yaml`, content: `n: ${i}\n` }] });
      expect((await repo.swap(head, commit!)).kind).toBe('swapped');
      head = commit!;
    }
    await repo.close(); // waits for the repack
    expect(readFileSync(log, 'utf8')).toBe('19\n');
    expect(readdirSync(join(dir, 'objects/pack')).filter((f) => f.endsWith('.pack')).length).toBeLessThan(10);
  });

  it('writes a pack outside objects/ until it is whole: a clone by path meanwhile copies no part of it', async () => {
    const { dir, git } = await repository();
    // The writer held between "both temp files written" and "fsync'd and renamed into objects/pack".
    let reached!: () => void;
    const paused = new Promise<void>((resolve) => (reached = resolve));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const held = fsWith({ fsync: ((fd: number, callback: fs.NoParamCallback) => (reached(), void gate.then(() => fs.fsync(fd, callback)))) as typeof fs.fsync });
    const content = Buffer.from('written while a person clones\n');
    const { oid } = hashObject('blob', content);
    const writing = new ObjectWriter(held, dir).writeAll([{ oid, type: 'blob', content }]);
    await paused;
    const temps = (root: string) => (readdirSync(root, { recursive: true }) as string[]).filter((name) => /tmp/.test(name));
    expect(temps(join(dir, 'objects'))).toEqual([]);
    expect(temps(dir)).toHaveLength(2); // the pack and its index, at the top of the repository
    // A clone by path hard-links every file under objects/ (and fails on one that grows meanwhile).
    const clone = join(tempDir(), 'clone.git');
    git('clone', '--bare', '--quiet', dir, clone);
    expect(temps(join(clone, 'objects'))).toEqual([]);
    release();
    await writing;
    expect(temps(dir)).toEqual([]);
    expect(git('cat-file', 'blob', oid)).toBe(content.toString());
  });

  it('sets its push guards where its own config lacks them or says otherwise; a lock left on the config is told, not thrown', async () => {
    const { repo, dir, git } = await repository();
    const local = (key: string) => spawnSync('git', ['--git-dir', dir, 'config', '--local', '--get-all', key], { encoding: 'utf8' }).stdout.trim().split('\n');
    expect(await repo.guardPushes()).toEqual({ set: [] }); // init set them
    // Unset here, though the user's global config says true; twice false, by hand.
    git('config', '--unset', 'receive.denyNonFastForwards');
    git('config', 'receive.denyDeletes', 'false');
    git('config', '--add', 'receive.denyDeletes', 'false');
    const global = join(tempDir(), 'gitconfig');
    writeFileSync(global, '[receive]\n\tdenyNonFastForwards = true\n');
    const before = process.env.GIT_CONFIG_GLOBAL;
    process.env.GIT_CONFIG_GLOBAL = global;
    try {
      expect(await repo.guardPushes()).toEqual({ set: ['receive.denyNonFastForwards', 'receive.denyDeletes (was false)'] });
    } finally {
      if (before === undefined) delete process.env.GIT_CONFIG_GLOBAL;
      else process.env.GIT_CONFIG_GLOBAL = before;
    }
    expect([local('receive.denyNonFastForwards'), local('receive.denyDeletes')]).toEqual([['true'], ['true']]);
    // A kill during a config write leaves config.lock: every write to the config fails until it goes.
    git('config', '--unset', 'receive.denyDeletes');
    writeFileSync(join(dir, 'config.lock'), '');
    const told = await repo.guardPushes();
    expect(told.set).toEqual([]);
    expect(told.failed).toMatch(/^receive\.denyDeletes: error: could not lock config file .*remove it\)$/s);
    rmSync(join(dir, 'config.lock'));
    // A file the config includes turns a guard off after the config's own lines: told as a failure, not "set" at every start.
    writeFileSync(join(dir, 'extra.config'), '[receive]\n\tdenyDeletes = false\n');
    git('config', '--add', 'include.path', 'extra.config');
    const overridden = await repo.guardPushes();
    expect(overridden.set).toEqual([]);
    expect(overridden.failed).toMatch(/^receive\.denyDeletes is still false after it was set to true in .*: a file that config includes .* sets it after; remove it there$/);
    expect(local('receive.denyDeletes')).toEqual(['true']);
  });

  it('at start-up removes what a dead process left of a pack, older than a write takes: temp files, a pack without its index', async () => {
    const { repo, dir } = await repository();
    const dead = spawnSync('true').pid;
    const pack = (name: string) => `${dir}/objects/pack/pack-${name.repeat(40)}`;
    // Temp files of a dead pid and of this one (a container's pid 1 again), also where writes fall back to and where old servers wrote them; a pack whose index never got its name.
    const leftovers = [`${dir}/.aami-pack-${dead}-3.tmp`, `${dir}/.aami-pack-${dead}-t0a1b2c3d-8.tmp`, `${dir}/.aami-pack-${process.pid}-0.tmp`, `${dir}/objects/pack/.aami-pack-${dead}-5.tmp`, `${dir}/objects/pack/tmp_pack_${dead}_4`, `${pack('a')}.pack`];
    // A running process's (the test runner's), git's own temp pack, a file the pattern does not name, a pack with its index.
    const kept = [`${dir}/.aami-pack-${process.ppid}-1.tmp`, `${dir}/objects/pack/tmp_pack_Ab12Cd`, `${dir}/.aami-pack-x-1.tmp`, `${pack('b')}.pack`, `${pack('b')}.idx`];
    // The same as the leftovers but written a moment ago: perhaps a write at work (another server starting on this repository).
    const young = [`${dir}/.aami-pack-${dead}-6.tmp`, `${dir}/.aami-pack-${process.pid}-7.tmp`, `${pack('c')}.pack`];
    const old = new Date(Date.now() - 10 * 60_000);
    for (const path of [...leftovers, ...kept, ...young]) {
      writeFileSync(path, 'PACK');
      if (!young.includes(path)) utimesSync(path, old, old);
    }
    // The pack without its index was written long ago, but its ctime (setting the times set it) is now, as a rename into place sets it: a write at work, kept.
    const renamed = `${pack('a')}.pack`;
    expect((await repo.clearLeftoverPackTemps()).sort()).toEqual(leftovers.filter((path) => path !== renamed).sort());
    expect([...leftovers, ...kept, ...young].filter((path) => existsSync(path))).toEqual([renamed, ...kept, ...young]);
    // Two minutes on, it is a leftover.
    expect(await clearLeftoverPackTemps(fs, dir, Date.now() + 3 * 60_000)).toContain(renamed);
    expect(existsSync(renamed)).toBe(false);
    // One that cannot be removed (EACCES) is passed over: the others go, and the start goes on.
    const stuck = [`${dir}/.aami-pack-${dead}-9.tmp`, `${dir}/.aami-pack-${dead}-10.tmp`];
    for (const path of stuck) writeFileSync(path, 'PACK'), utimesSync(path, old, old);
    const refusing = fsWith({}, {
      rm: (async (path: PathLike, options?: fs.RmOptions) => {
        if (String(path) === stuck[0]) throw Object.assign(new Error(`EACCES: permission denied, rm '${String(path)}'`), { code: 'EACCES' });
        return fs.promises.rm(path, options);
      }) as typeof fs.promises.rm,
    });
    expect(await clearLeftoverPackTemps(refusing, dir)).toEqual([stuck[1]]);
    expect(stuck.map((path) => existsSync(path))).toEqual([true, false]);
  });

  it('writes its temp packs beside the packs where a rename from the top of the repository fails (objects/ on another file system)', async () => {
    const { dir, git } = await repository();
    const renames: string[] = [];
    const crossDevice = fsWith({
      renameSync: (from: PathLike, to: PathLike) => {
        renames.push(String(from));
        if (!String(from).startsWith(`${dir}/objects/`)) throw Object.assign(new Error('EXDEV: cross-device link not permitted'), { code: 'EXDEV' });
        return fs.renameSync(from, to);
      },
    });
    const writer = new ObjectWriter(crossDevice, dir);
    for (const text of ['first\n', 'second\n']) {
      const content = Buffer.from(text);
      const { oid } = hashObject('blob', content);
      await writer.writeAll([{ oid, type: 'blob', content }]);
      expect(git('cat-file', 'blob', oid)).toBe(text);
    }
    // One failed rename from the top; from then on, temp files in objects/pack only; none left anywhere.
    expect(renames.filter((from) => !from.startsWith(`${dir}/objects/`))).toHaveLength(1);
    expect(renames.filter((from) => from.startsWith(`${dir}/objects/pack/.aami-pack-`))).toHaveLength(4);
    expect((readdirSync(dir, { recursive: true }) as string[]).filter((name) => name.endsWith('.tmp'))).toEqual([]);
  });

  it('keeps its temp packs at the top after a moment the repository could not be written at all', async () => {
    const { dir, git } = await repository();
    let readOnly = true;
    const opened: string[] = [];
    const sometimesReadOnly = fsWith({
      openSync: ((path: PathLike, flags: string, mode?: number) => {
        if (flags === 'wx') opened.push(String(path));
        if (readOnly && flags === 'wx') throw Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
        return fs.openSync(path, flags, mode);
      }) as typeof fs.openSync,
    });
    const writer = new ObjectWriter(sometimesReadOnly, dir);
    const content = Buffer.from('after a read-only moment\n');
    const { oid } = hashObject('blob', content);
    await expect(writer.writeAll([{ oid, type: 'blob', content }])).rejects.toThrow(/EACCES/);
    readOnly = false;
    opened.length = 0;
    await writer.writeAll([{ oid, type: 'blob', content }]);
    expect(git('cat-file', 'blob', oid)).toBe(content.toString());
    expect(opened.map((path) => path.slice(0, path.lastIndexOf('/')))).toEqual([dir, dir]);
  });

  it('never writes a pack through a link at its temp name: the file made is new', async () => {
    const { dir, git } = await repository();
    const victim = join(tempDir(), 'victim');
    writeFileSync(victim, 'someone else\'s file\n');
    const planted: string[] = [];
    const linking = fsWith({
      openSync: ((path: PathLike, flags: string, mode?: number) => {
        if (String(path).endsWith('.tmp') && !planted.includes(String(path))) symlinkSync(victim, String(path)), planted.push(String(path));
        return fs.openSync(path, flags, mode);
      }) as typeof fs.openSync,
    });
    const content = Buffer.from('written past a planted link\n');
    const { oid } = hashObject('blob', content);
    await new ObjectWriter(linking, dir).writeAll([{ oid, type: 'blob', content }]);
    expect(planted.length).toBeGreaterThanOrEqual(2); // the pack's and its index's
    expect(fs.readFileSync(victim, 'utf8')).toBe('someone else\'s file\n');
    expect(git('cat-file', 'blob', oid)).toBe(content.toString());
    expect((readdirSync(dir, { recursive: true }) as string[]).filter((name) => name.endsWith('.tmp'))).toEqual([]);
  });

  /** This process's open descriptors: a write that fails must leave none of its own open. */
  const openFds = () => readdirSync('/proc/self/fd').length;

  it('refuses a pack the disk cannot take (a short write, then ENOSPC) whole: no temp file, no descriptor left open, nothing in objects/pack', async () => {
    const { dir, git } = await repository();
    const packsBefore = readdirSync(join(dir, 'objects/pack')).sort();
    let writes = 0;
    // The first write of each file is cut short (as at the last free blocks); the next one finds the disk full.
    const full = fsWith({
      writeSync: ((fd: number, data: Uint8Array, offset: number, length: number) => {
        if (++writes % 2 === 1) return fs.writeSync(fd, data, offset, Math.min(length, 7));
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      }) as typeof fs.writeSync,
    });
    const content = Buffer.from('more than seven bytes, to be cut short\n');
    const { oid } = hashObject('blob', content);
    const fds = openFds();
    await expect(new ObjectWriter(full, dir).writeAll([{ oid, type: 'blob', content }])).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(openFds()).toBe(fds);
    expect((readdirSync(dir, { recursive: true }) as string[]).filter((name) => name.endsWith('.tmp'))).toEqual([]);
    expect(readdirSync(join(dir, 'objects/pack')).sort()).toEqual(packsBefore);
    expect(spawnSync('git', ['--git-dir', dir, 'cat-file', '-e', oid]).status).not.toBe(0);
    git('fsck', '--strict', '--no-progress');
  });

  it('leaves the branch as it was when its new value cannot be made durable (ENOSPC on the lock, EIO on its fsync): no lock, no descriptor left open', async () => {
    const { repo, dir, git } = await repository();
    const head = (await repo.head())!;
    const next = (await repo.writeCommit(head, { message: 'never the branch', author: ADMIN, changes: [{ path: 'groups/x.yaml', content: 'id: x\nname: x\nnamespace: logical\n' }] }))!;
    const lock = join(dir, 'refs/heads/main.lock');
    const fault = (code: string) => Object.assign(new Error(`${code}: i/o fault`), { code });
    const noRoom = fsWith({ writeSync: (() => { throw fault('ENOSPC'); }) as typeof fs.writeSync });
    const failingSync = seeingSyncs((path) => {
      if (path === lock) throw fault('EIO');
    });
    for (const [faulty, code] of [[noRoom, 'ENOSPC'], [fsWith(failingSync.sync, failingSync.promises), 'EIO']] as const) {
      const fds = openFds();
      await expect(swapRef(dir, 'refs/heads/main', head, next, faulty)).rejects.toMatchObject({ code });
      expect(openFds()).toBe(fds);
      expect(existsSync(lock)).toBe(false);
      expect(await repo.head()).toBe(head);
    }
    // The lock is free: the same swap goes through once the fault is gone.
    expect(await swapRef(dir, 'refs/heads/main', head, next)).toEqual({ kind: 'swapped' });
    expect(git('rev-parse', 'main').trim()).toBe(next);
  });

  it('makes objects/pack and refs/heads for the first commit when the repository has neither', async () => {
    const dir = join(tempDir(), 'bare.git');
    execFileSync('git', ['init', '--quiet', '--bare', '--initial-branch=main', dir]);
    // Git recreates neither on its own: a repository copied without its empty directories lacks them.
    rmSync(join(dir, 'objects/pack'), { recursive: true });
    rmSync(join(dir, 'refs/heads'), { recursive: true });
    const repo = await GitRepository.open(dir);
    onCleanup(() => repo.close());
    const first = await repo.writeCommit(null, { message: 'first', author: ADMIN, changes: [{ path: 'aami.yaml', content: 'exporters: {}\n' }] });
    expect(await repo.swap(null, first!)).toEqual({ kind: 'swapped' });
    const second = await repo.writeCommit(first, { message: 'second', author: ADMIN, changes: [{ path: 'groups/ml.yaml', content: 'id: ml\n' }] });
    expect(await repo.swap(first, second!)).toEqual({ kind: 'swapped' });
    expect(readdirSync(join(dir, 'objects/pack')).filter((f) => f.endsWith('.pack'))).toHaveLength(2);
    gitCli(dir, 'fsck', '--strict', '--no-progress');
    expect(gitCli(dir, 'log', '--format=%s', 'main')).toBe('second\nfirst\n');
  });

  it('builds each commit on the trees it wrote last, and on trees read from Git after a push moved the branch', async () => {
    const { repo, dir, git } = await repository();
    const expected = new Map<string, string>([
      ['aami.yaml', 'exporters: {node_exporter: {job: node, port: 9100}}\n'],
      ['groups/ml.yaml', 'id: ml\nname: ml\nnamespace: logical\n'],
    ]);
    let head = (await repo.head())!;
    const write = async (changes: Array<{ path: string; content: string | null }>) => {
      const commit = await repo.writeCommit(head, { message: 'w', author: ADMIN, changes });
      expect((await repo.swap(head, commit!)).kind).toBe('swapped');
      head = commit!;
      for (const { path, content } of changes) content === null ? expected.delete(path) : expected.set(path, content);
    };
    const tree = () => git('ls-tree', '-r', '--format=%(path)', 'main').trim().split('\n');
    for (let i = 0; i < 12; i++) {
      // Adds in two directories, an edit, and a delete that empties a directory now and then.
      await write([
        { path: `targets/g${i % 3}/h${i}.yaml`, content: `n: ${i}\n` },
        { path: `tokens/t${i % 2}.yaml`, content: `uses: ${i}\n` },
        ...(i >= 3 && i % 3 === 0 ? [{ path: `targets/g0/h${i - 3}.yaml`, content: null }] : []),
      ]);
      if (i === 6) {
        // Someone pushes meanwhile: the next write starts from a commit this process did not write.
        pushFiles(dir, { 'targets/g1/pushed.yaml': 'p: 1\n' }, 'a push');
        expected.set('targets/g1/pushed.yaml', 'p: 1\n');
        head = git('rev-parse', 'main').trim();
      }
      expect(tree()).toEqual([...expected.keys()].sort());
    }
    for (const [path, content] of expected) expect(git('show', `main:${path}`)).toBe(content);
    git('fsck', '--strict', '--no-progress');
  });

  it('keeps the trees of its last commit, not every version of a directory it rewrote', async () => {
    const { repo, git } = await repository();
    let head = (await repo.head())!;
    // 30 commits: the 50th starts a background repack, whose deleted packs the git CLI below could trip over.
    for (let i = 0; i < 30; i++) {
      const commit = await repo.writeCommit(head, { message: `c${i}`, author: ADMIN, changes: [{ path: `targets/g0/h${i}.yaml`, content: `n: ${i}\n` }] });
      expect((await repo.swap(head, commit!)).kind).toBe('swapped');
      head = commit!;
    }
    // The trees of the last commit (groups/ as the first commit wrote it): 92 were held before.
    const cached = [...(repo as unknown as { trees: Map<string, unknown> }).trees.keys()].sort();
    expect(cached).toEqual(['main^{tree}', 'main:targets', 'main:targets/g0', 'main:groups'].map((rev) => git('rev-parse', rev).trim()).sort());
    expect(git('ls-tree', '-r', '--name-only', 'main', 'targets').trim().split('\n')).toHaveLength(30);
    git('fsck', '--strict', '--no-progress');
  });

  it('refuses a truncated tree read back, and a tree entry whose object id is not 40 hex digits', () => {
    const good = Buffer.concat([Buffer.from('100644 a.yaml\0'), Buffer.alloc(20, 0x11)]);
    const truncated = Buffer.concat([Buffer.from('100644 b.yaml\0'), Buffer.alloc(8, 0x22)]);
    expect(Tree.parse(good).raw).toEqual(good);
    expect(() => Tree.parse(Buffer.concat([good, truncated]))).toThrow('tree entry "100644 b.yaml\\u0000\\"\\"\\"\\"\\"\\"\\"\\"" is truncated');
    expect(() => Tree.parse(good).with(new Map([['b.yaml', { mode: '100644', oid: 'abc', type: 'blob' as const }]]))).toThrow('tree entry "b.yaml" has no valid object id');
    expect(() => Tree.parse(good).with(new Map([['a/b', null]]))).toThrow('cannot name a tree entry');
  });

  it('reads a zero-padded directory mode as Git does (a commit on it keeps every file), and refuses trees out of order or naming an entry twice', async () => {
    const { repo, dir, git } = await repository();
    let head = (await repo.head())!;
    const first = await repo.writeCommit(head, { message: 'two', author: ADMIN, changes: [{ path: 'targets/ml/a.yaml', content: 'a\n' }, { path: 'targets/ml/b.yaml', content: 'b\n' }] });
    await repo.swap(head, first!);
    /** A commit of `raw` as the root tree on top of main, made by git without its checks (as a push of such objects arrives). */
    const pushRoot = (raw: Buffer): string => {
      const tree = execFileSync('git', [`--git-dir=${dir}`, 'hash-object', '-t', 'tree', '-w', '--literally', '--stdin'], { input: raw }).toString().trim();
      const commit = git('commit-tree', tree, '-p', 'main', '-m', 'odd tree').trim();
      git('update-ref', 'refs/heads/main', commit);
      return commit;
    };
    const root = execFileSync('git', [`--git-dir=${dir}`, 'cat-file', 'tree', 'main^{tree}']);
    const padded = Buffer.from(root.toString('latin1').replace('40000 targets\0', '040000 targets\0'), 'latin1');
    expect(padded.length).toBe(root.length + 1);
    head = pushRoot(padded);
    expect(git('ls-tree', '-r', '--name-only', 'main', 'targets').trim().split('\n')).toEqual(['targets/ml/a.yaml', 'targets/ml/b.yaml']);
    // Read as a file, the directory was replaced by one holding only the new file: a and b were gone.
    const next = await repo.writeCommit(head, { message: 'add c', author: ADMIN, changes: [{ path: 'targets/ml/c.yaml', content: 'c\n' }] });
    expect((await repo.swap(head, next!)).kind).toBe('swapped');
    expect(git('ls-tree', '-r', '--name-only', 'main', 'targets').trim().split('\n')).toEqual(['targets/ml/a.yaml', 'targets/ml/b.yaml', 'targets/ml/c.yaml']);
    expect(git('diff', '--name-status', `${head}`, 'main').trim()).toBe('A\ttargets/ml/c.yaml');

    // The same entries out of order, and one named twice: refused, nothing committed.
    const entries = Tree.parse(execFileSync('git', [`--git-dir=${dir}`, 'cat-file', 'tree', 'main^{tree}']));
    const bytes = [...entries.entries()].map(([name, entry]) => Buffer.concat([Buffer.from(`${entry.mode} ${name}\0`, 'latin1'), Buffer.from(entry.oid, 'hex')]));
    for (const raw of [Buffer.concat([...bytes].reverse()), Buffer.concat([bytes[0]!, ...bytes])]) {
      head = pushRoot(raw);
      await expect(repo.writeCommit(head, { message: 'add d', author: ADMIN, changes: [{ path: 'targets/ml/d.yaml', content: 'd\n' }] })).rejects.toThrow(/out of Git's order or named twice/);
    }
    const entry = (mode: string, name: string) => Buffer.concat([Buffer.from(`${mode} ${name}\0`, 'latin1'), Buffer.alloc(20, 1)]);
    // A file and a directory of one name apart, with a name between them that sorts there.
    expect(() => Tree.parse(Buffer.concat([entry('100644', 'a'), entry('100644', 'a-b'), entry('40000', 'a')]))).toThrow('named twice');
    expect(Tree.parse(Buffer.concat([entry('100644', 'a-b'), entry('40000', 'a'), entry('100644', 'a0')])).size).toBe(3);
    expect(() => Tree.parse(Buffer.concat([entry('40000', 'a'), entry('100644', 'a-b')]))).toThrow("out of Git's order");
    // Modes as Git reads them: any number of digits, an unknown type is a submodule.
    expect([...Tree.parse(Buffer.concat([entry('0040000', 'd'), entry('100664', 'f'), entry('140000', 'g')])).entries()].map(([, e]) => e.type)).toEqual(['tree', 'blob', 'commit']);
    expect(() => Tree.parse(Buffer.concat([Buffer.from('10x644 a\0'), Buffer.alloc(20, 1)]))).toThrow('is malformed');
    expect(() => Tree.parse(entry('100644', 'a/b'))).toThrow('is malformed');
    expect(() => Tree.parse(Buffer.concat([Buffer.from('100644 \0'), Buffer.alloc(20, 1)]))).toThrow('is malformed');
  });

  it('changes a tree entry by entry into the bytes git mktree makes of the same entries', () => {
    // Names that sort around "/" ("a-" < "a/" < "a0"), files turning into directories and back, adds and deletes.
    const dir = join(tempDir(), 'mktree.git');
    gitCli(tempDir(), 'init', '--quiet', '--bare', dir);
    const { next: random, pick } = seeded(Number(process.env.SEED ?? 7));
    const names = ['a', 'a-', 'a.b', 'a0', 'ab', 'b', 'b-c', 'b.yaml', 'z', 'é'];
    const oid = () => Array.from({ length: 40 }, () => '0123456789abcdef'[Math.floor(random() * 16)]).join('');
    const entry = (): TreeEntry => (random() < 0.3 ? { mode: '40000', oid: oid(), type: 'tree' } : { mode: random() < 0.2 ? '100755' : '100644', oid: oid(), type: 'blob' });
    let tree = Tree.empty;
    const expected = new Map<string, TreeEntry>();
    for (let step = 0; step < 150; step++) {
      const changes = new Map<string, TreeEntry | null>();
      for (let k = Math.floor(random() * 4); k >= 0; k--) changes.set(pick(names), random() < 0.3 ? null : entry());
      tree = tree.with(changes);
      for (const [name, change] of changes) change ? expected.set(name, change) : expected.delete(name);
      expect(new Map(tree.entries())).toEqual(expected);
      expect(tree.size).toBe(expected.size);
      for (const name of names) expect(tree.get(name)).toEqual(expected.get(name));
      const input = [...expected].map(([name, e]) => `${e.mode.padStart(6, '0')} ${e.type} ${e.oid}\t${name}\n`).join('');
      const made = execFileSync('git', [`--git-dir=${dir}`, 'mktree', '--missing'], { input: Buffer.from(input, 'latin1') }).toString().trim();
      expect(hashObject('tree', tree.raw).oid).toBe(made);
      expect(Tree.parse(tree.raw).raw).toEqual(tree.raw);
    }
  });

  it('commits the tree git itself makes of the same files, through deep paths, files turned into directories and back, emptied directories, odd names, symlinks and submodules', async () => {
    // Git's own tree of a model of the files (through an index, `git write-tree`) is the oracle
    // for every commit. Now and then the process starts afresh (every tree read back from
    // Git), and now and then git itself commits (trees this process did not make).
    const dir = join(tempDir(), 'repo.git');
    const index = join(tempDir(), 'index');
    const env = { ...process.env, GIT_INDEX_FILE: index, GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null', GIT_AUTHOR_NAME: 'p', GIT_AUTHOR_EMAIL: 'p@x', GIT_COMMITTER_NAME: 'p', GIT_COMMITTER_EMAIL: 'p@x' };
    const git = (args: string[], input?: Buffer) => execFileSync('git', [`--git-dir=${dir}`, ...args], { env, input }).toString().trim();
    const { next: random, pick } = seeded(Number(process.env.SEED ?? 11));
    // Names as the repository holds them, latin1 strings of bytes: sort traps around "/", a space, UTF-8 and Latin-1 bytes.
    const names = ['a', 'a-', 'a.b', 'a0', 'a b', 'b', 'Ã©', '\xe9', 'z!', 'a\xff', '~', 'A'];
    const model = new Map<string, { mode: string; oid: string }>();
    const blob = (content: string) => ({ mode: '100644', oid: hashObject('blob', Buffer.from(content)).oid });
    let repo = await GitRepository.init(dir, { author: ADMIN, files: [{ path: 'aami.yaml', content: 'x\n' }] });
    onCleanup(() => repo.close());
    model.set('aami.yaml', blob('x\n'));
    let head = (await repo.head())!;
    const gitTree = () => {
      rmSync(index, { force: true });
      git(['update-index', '-z', '--index-info'], Buffer.concat([...model].map(([path, e]) => Buffer.concat([Buffer.from(`${e.mode} ${e.oid}\t`), Buffer.from(path, 'latin1'), Buffer.from([0])]))));
      return git(['write-tree', '--missing-ok']);
    };
    const gitCommit = () => {
      const commit = git(['commit-tree', gitTree(), '-p', head, '-m', 'git']);
      git(['update-ref', 'refs/heads/main', commit, head]);
      head = commit;
    };
    const link = git(['hash-object', '-w', '--stdin'], Buffer.from('../elsewhere'));
    // A symlink and a submodule among files the commits add and delete beside them (no change names them).
    model.set('k/link', { mode: '120000', oid: link });
    model.set('k/sub', { mode: '160000', oid: '0123456789abcdef0123456789abcdef01234567' });
    model.set('a-/Ã© x', { mode: '100755', oid: link });
    gitCommit();
    const dirsOf = (path: string) => path.split('/').slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join('/'));
    for (let step = 0; step < 150; step++) {
      const changes: Array<{ path: string; content: string | null }> = [];
      for (let k = random() < 0.1 ? 30 : 1 + Math.floor(random() * 4); k > 0; k--) {
        const depth = 1 + Math.floor(random() * (random() < 0.2 ? 5 : 2));
        const file = random() < 0.3 ? pick(names) : `${pick(names)}${Math.floor(random() * 50)}`;
        const path = random() < 0.15 ? `k/${file}` : [...Array.from({ length: depth - 1 }, () => pick(names)), file].join('/');
        // One commit never names a path and a directory of it (which would win is not defined).
        if (changes.some((c) => c.path === path || c.path.startsWith(`${path}/`) || path.startsWith(`${c.path}/`))) continue;
        const remove = random() < 0.2;
        if (remove && dirsOf(path).some((d) => model.has(d))) continue; // a delete below a file deletes the file: not made here
        changes.push({ path, content: remove ? null : `${step}.${k} ${random()}\n` });
      }
      for (const { path, content } of changes) {
        // A file replaces a directory of the same name and the files above it; a delete takes a directory whole.
        for (const key of [...model.keys()]) if (key === path || key.startsWith(`${path}/`) || (content !== null && dirsOf(path).includes(key))) model.delete(key);
        if (content !== null) model.set(path, blob(content));
      }
      if (random() < 0.1) {
        await repo.close();
        repo = await GitRepository.open(dir, {});
      }
      if (random() < 0.05) {
        for (const { content } of changes) if (content !== null) git(['hash-object', '-w', '--stdin'], Buffer.from(content));
        gitCommit();
        continue;
      }
      const commit = await repo.writeCommit(head, { message: `step ${step}`, author: ADMIN, changes });
      expect(git(['rev-parse', `${commit ?? head}^{tree}`]), `step ${step}: ${JSON.stringify(changes)}`).toBe(gitTree());
      if (!commit) continue;
      expect((await repo.swap(head, commit)).kind).toBe('swapped');
      head = commit;
    }
    expect(model.size).toBeGreaterThan(100);
    expect(git(['ls-tree', 'main', 'k/link', 'k/sub'])).toBe(`120000 blob ${link}\tk/link\n160000 commit 0123456789abcdef0123456789abcdef01234567\tk/sub`);
    expect(git(['ls-tree', '--name-only', 'main', 'k/']).split('\n').length).toBeGreaterThan(10);
    git(['fsck', '--strict', '--no-progress', '--full']);
  });

  it('stores objects of any size in a form git reads, copies and repacks: empty, at the 64 KiB block boundaries, several MB', async () => {
    const dir = join(tempDir(), 'repo.git');
    const repo = await GitRepository.init(dir, { author: ADMIN, files: [{ path: 'aami.yaml', content: '' }] });
    onCleanup(() => repo.close());
    const git = (...args: string[]) => execFileSync('git', [`--git-dir=${dir}`, ...args], { maxBuffer: 64 << 20 });
    const { next: random } = seeded(5);
    const sizes = [0, 1, 65534, 65535, 65536, 65537, 131070, 131071, 131072, 3 * 1024 * 1024 + 7];
    let head = (await repo.head())!;
    const contents = new Map<string, string>();
    for (const size of sizes) {
      // Random letters (a long run of 0xff-free bytes the adler32 sums must carry) and runs of one letter.
      const content = size % 2 ? Array.from({ length: size }, () => String.fromCharCode(97 + Math.floor(random() * 26))).join('') : 'z'.repeat(size);
      contents.set(`blobs/b${size}`, content);
      const commit = await repo.writeCommit(head, { message: `${size} bytes`, author: ADMIN, changes: [{ path: `blobs/b${size}`, content }] });
      expect((await repo.swap(head, commit!)).kind).toBe('swapped');
      head = commit!;
    }
    await repo.close();
    const check = (gitdir: string) => {
      execFileSync('git', [`--git-dir=${gitdir}`, 'fsck', '--strict', '--full', '--no-progress']);
      for (const [path, content] of contents) expect(execFileSync('git', [`--git-dir=${gitdir}`, 'cat-file', 'blob', `main:${path}`], { maxBuffer: 64 << 20 }).toString(), `${gitdir} ${path}`).toBe(content);
    };
    check(dir);
    for (const pack of readdirSync(join(dir, 'objects/pack')).filter((f) => f.endsWith('.pack'))) {
      git('verify-pack', join(dir, 'objects/pack', pack));
      git('index-pack', '--strict', '-o', join(tempDir(), 'check.idx'), join(dir, 'objects/pack', pack));
    }
    const clone = join(tempDir(), 'clone.git');
    execFileSync('git', ['clone', '--quiet', '--bare', '--no-local', dir, clone]);
    check(clone);
    git('repack', '-a', '-d', '-f', '-q');
    check(dir);
  });

  it('refuses to open a directory that is not a repository', async () => {
    await expect(GitRepository.open(tempDir())).rejects.toThrow(/not a Git repository/);
  });
});
