import * as fs from 'node:fs';
import { join } from 'node:path';
import { Volume, createFsFromVolume } from 'memfs';
import { describe, expect, it } from 'vitest';
import type { Fs } from '../src/repo/fs.js';
import { GitStore } from '../src/repo/store.js';
import { ADMIN, fixedClock, gitCli, tempDir } from './helpers.js';

async function newStore(now = fixedClock().now) {
  const dir = join(tempDir(), 'repo');
  const store = await GitStore.init({
    fs,
    dir,
    now,
    author: ADMIN,
    files: [
      { path: 'aami.yaml', content: 'exporters: {node_exporter: {job: node, port: 9100}}\n' },
      { path: 'groups/ml.yaml', content: 'id: ml\nname: ml\nnamespace: logical\n' },
    ],
  });
  return { dir, store, git: (...args: string[]) => gitCli(dir, ...args) };
}

describe('GitStore', () => {
  it('commits a change set as one commit that the git CLI reads, with author, message and trailers', async () => {
    const { store, git } = await newStore();
    const result = await store.commit({
      message: 'Register gpu-01',
      author: { name: 'token k3j9x2ab', email: 'k3j9x2ab@tokens.aami' },
      trailers: [['Source-Address', '10.0.0.7']],
      changes: [
        { path: 'targets/ml/gpu-01.yaml', content: 'hostname: gpu-01\n' },
        { path: 'tokens/k3j9x2ab.yaml', content: 'uses: 1\n' },
      ],
    });
    expect(result.commit).toMatch(/^[0-9a-f]{40}$/);
    expect(git('rev-parse', 'HEAD').trim()).toBe(result.commit);
    expect(git('log', '--format=%an <%ae>|%s|%(trailers:key=Source-Address,valueonly)', '-1').trim()).toBe(
      'token k3j9x2ab <k3j9x2ab@tokens.aami>|Register gpu-01|10.0.0.7',
    );
    expect(git('show', '--name-only', '--format=', 'HEAD').trim().split('\n')).toEqual(['targets/ml/gpu-01.yaml', 'tokens/k3j9x2ab.yaml']);
    expect(git('show', 'HEAD:targets/ml/gpu-01.yaml')).toBe('hostname: gpu-01\n');
    await store.checkpoint();
    git('fsck', '--strict', '--no-progress');
    expect(git('status', '--porcelain')).toBe('');
  });

  it('keeps the working tree in step, removing directories a delete leaves empty', async () => {
    const { dir, store, git } = await newStore();
    await store.commit({ message: 'add', author: ADMIN, changes: [{ path: 'targets/ml/a.yaml', content: 'a\n' }] });
    expect(fs.readFileSync(join(dir, 'targets/ml/a.yaml'), 'utf8')).toBe('a\n');
    await store.commit({ message: 'remove', author: ADMIN, changes: [{ path: 'targets/ml/a.yaml', content: null }] });
    expect(fs.existsSync(join(dir, 'targets'))).toBe(false);
    expect(git('ls-tree', '-r', '--name-only', 'HEAD').trim().split('\n')).toEqual(['aami.yaml', 'groups/ml.yaml']);
    await store.checkpoint();
    expect(git('status', '--porcelain')).toBe('');
  });

  it('makes no commit when the change leaves the tree as it is', async () => {
    const { store, git } = await newStore();
    const head = store.head();
    const result = await store.commit({ message: 'same', author: ADMIN, changes: [{ path: 'groups/ml.yaml', content: 'id: ml\nname: ml\nnamespace: logical\n' }] });
    expect(result).toEqual({ commit: null, head });
    expect(git('rev-list', '--count', 'HEAD').trim()).toBe('1');
  });

  it('gives the same commit ids for the same changes at the same pinned time', async () => {
    const a = await newStore();
    const b = await newStore();
    const change = { message: 'add', author: ADMIN, changes: [{ path: 'targets/ml/a.yaml', content: 'a\n' }] };
    expect((await a.store.commit(change)).commit).toBe((await b.store.commit(change)).commit);
  });

  it('builds on commits made by the git CLI in the same repo', async () => {
    const { dir, store, git } = await newStore();
    await store.checkpoint();
    fs.mkdirSync(join(dir, 'targets/ml'), { recursive: true });
    fs.writeFileSync(join(dir, 'targets/ml/by-pr.yaml'), 'pr\n');
    git('add', '-A');
    git('commit', '-q', '-m', 'Merge pull request');
    await store.commit({ message: 'api', author: ADMIN, changes: [{ path: 'targets/ml/by-api.yaml', content: 'api\n' }] });
    expect(git('ls-tree', '-r', '--name-only', 'HEAD', 'targets').trim().split('\n')).toEqual(['targets/ml/by-api.yaml', 'targets/ml/by-pr.yaml']);
    expect(git('log', '--format=%s').trim().split('\n')).toEqual(['api', 'Merge pull request', 'Initialize config repo']);
    await store.checkpoint();
    expect(git('status', '--porcelain')).toBe('');
    git('fsck', '--strict', '--no-progress');
  });

  it('rewrites from HEAD the working-tree files a crash may have left stale', async () => {
    const { dir, store } = await newStore();
    await store.commit({ message: 'add', author: ADMIN, changes: [{ path: 'targets/ml/a.yaml', content: 'a\n' }] });
    // A crash before the checkpoint: the files listed as unsynced may be torn or missing.
    expect(JSON.parse(fs.readFileSync(join(dir, '.git/aami-unsynced.json'), 'utf8'))).toEqual(['targets/ml/a.yaml']);
    fs.writeFileSync(join(dir, 'targets/ml/a.yaml'), '');
    await GitStore.open({ fs, dir });
    expect(fs.readFileSync(join(dir, 'targets/ml/a.yaml'), 'utf8')).toBe('a\n');
    expect(fs.existsSync(join(dir, '.git/aami-unsynced.json'))).toBe(false);
  });

  it('flushes the working tree and forgets the unsynced list at a checkpoint', async () => {
    const { dir, store, git } = await newStore();
    await store.commit({ message: 'add', author: ADMIN, changes: [{ path: 'targets/ml/a.yaml', content: 'a\n' }] });
    await store.checkpoint();
    expect(fs.existsSync(join(dir, '.git/aami-unsynced.json'))).toBe(false);
    expect(git('status', '--porcelain')).toBe('');
  });

  it('refuses to open a directory that is not a repository', async () => {
    await expect(GitStore.open({ fs, dir: tempDir() })).rejects.toThrow(/not a Git repository/);
  });

  it('runs on memfs for fast tests', async () => {
    const mfs = createFsFromVolume(new Volume()) as unknown as Fs;
    const store = await GitStore.init({ fs: mfs, dir: '/repo', author: ADMIN, now: fixedClock().now, files: [{ path: 'a.yaml', content: 'a\n' }] });
    for (let i = 0; i < 20; i++) {
      await store.commit({ message: `t${i}`, author: ADMIN, changes: [{ path: `targets/g/t${i}.yaml`, content: `${i}\n` }] });
    }
    expect((await store.listFiles()).size).toBe(21);
    expect(mfs.readFileSync('/repo/targets/g/t19.yaml', 'utf8')).toBe('19\n');
    await store.close();
  });
});
