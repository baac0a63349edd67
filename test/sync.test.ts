import { rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { watchRepo } from '../src/compile/watcher.js';
import { formatProblem } from '../src/catalog/problem.js';
import { AamiError } from '../src/errors.js';
import { ADMIN, onCleanup, targetYaml, tmpConfigRepo } from './helpers.js';

/** A repo whose working tree is watched, as `aami serve` will run it. */
async function watchedRepo() {
  const repo = await tmpConfigRepo();
  const watcher = watchRepo(repo.dir, (paths) => repo.sync.reload(paths), 20);
  onCleanup(() => watcher.close());
  await watcher.ready;
  return repo;
}

describe('writer', () => {
  it('commits a plan and makes it visible to the next plan and to the SD files', async () => {
    const repo = await tmpConfigRepo();
    const compiled = repo.nextCompile();
    const result = await repo.writer.update({ message: 'Add gpu-01', author: ADMIN }, () => ({
      changes: [{ path: 'targets/ml-training/gpu-01.yaml', content: targetYaml('gpu-01', '10.0.0.1') }],
      result: { hostname: 'gpu-01' },
    }));
    expect(result).toMatchObject({ hostname: 'gpu-01', commit: repo.store.head() });
    await repo.writer.update({ message: 'check', author: ADMIN }, (snapshot) => {
      expect(snapshot.catalog.targets.has('gpu-01')).toBe(true);
      return { changes: [], result: {} };
    });
    await compiled;
    expect(repo.sd('node').map((e) => e.targets[0])).toEqual(['10.0.0.1:9100']);
  });

  it('runs concurrent updates in order, each seeing the ones before, sharing commits per author', async () => {
    const repo = await tmpConfigRepo();
    const updates = Array.from({ length: 20 }, (_, i) =>
      repo.writer.update({ message: `Add n${i}`, author: i < 10 ? ADMIN : { name: 'token abc', email: 'abc@tokens.aami' } }, ({ catalog }) => ({
        changes: [{ path: `targets/ml-training/n${i}.yaml`, content: targetYaml(`n${i}`, `10.0.1.${i}`) }],
        result: { before: catalog.targets.size },
      })),
    );
    const results = await Promise.all(updates);
    expect(results.map((r) => r.before)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    // Each commit has one author, and names every change it holds.
    const log = repo.git('log', '--format=%an|%B%x00').split('\0').map((c) => c.trim()).filter(Boolean).slice(0, -1);
    const named = log.flatMap((entry) => [...entry.matchAll(/Add (n\d+)/g)].map((m) => `${entry.split('|')[0]}:${m[1]}`));
    expect(new Set(named)).toEqual(new Set(Array.from({ length: 20 }, (_, i) => `${i < 10 ? 'admin' : 'token abc'}:n${i}`)));
    expect(log.length).toBeLessThan(20);
    await repo.store.checkpoint();
    repo.git('fsck', '--strict', '--no-progress');
    expect(repo.git('status', '--porcelain')).toBe('');
  });

  it('fails only the write whose plan fails, not the others in its commit', async () => {
    const repo = await tmpConfigRepo();
    const add = (i: number, ip: string) =>
      repo.writer.update({ message: `Add n${i}`, author: ADMIN }, () => ({
        changes: [{ path: `targets/ml-training/n${i}.yaml`, content: targetYaml(`n${i}`, ip) }],
        result: {},
      }));
    const results = await Promise.allSettled([add(1, '10.0.0.1'), add(2, '10.0.0.1'), add(3, '10.0.0.3')]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(repo.git('ls-tree', '--name-only', 'HEAD', 'targets/ml-training/').trim().split('\n')).toEqual(['targets/ml-training/n1.yaml', 'targets/ml-training/n3.yaml']);
  });

  it('undoes a batch in the catalog when its commit fails, and answers every write in it with the error', async () => {
    const repo = await tmpConfigRepo();
    const commit = repo.store.commit.bind(repo.store);
    let fail = true;
    repo.store.commit = async (request) => {
      if (fail) {
        fail = false;
        throw new Error('disk full');
      }
      return commit(request);
    };
    const add = (i: number) =>
      repo.writer.update({ message: `Add n${i}`, author: ADMIN }, () => ({
        changes: [{ path: `targets/ml-training/n${i}.yaml`, content: targetYaml(`n${i}`, `10.0.0.${i}`) }],
        result: {},
      }));
    await expect(add(1)).rejects.toThrow('disk full');
    expect(repo.sync.snapshot().catalog.targets.has('n1')).toBe(false);
    await add(2);
    expect([...repo.sync.snapshot().catalog.targets.keys()]).toEqual(['n2']);
  });

  it('makes no commit when the plan throws a coded error', async () => {
    const repo = await tmpConfigRepo();
    const head = repo.store.head();
    await expect(
      repo.writer.update({ message: 'x', author: ADMIN }, () => {
        throw new AamiError('group_not_found', 'group "nope" does not exist');
      }),
    ).rejects.toMatchObject({ code: 'group_not_found' });
    expect(repo.store.head()).toBe(head);
  });

  it('refuses a plan that would make a file invalid, naming the file and field, and commits nothing', async () => {
    const repo = await tmpConfigRepo();
    await repo.writer.update({ message: 'a', author: ADMIN }, () => ({
      changes: [{ path: 'targets/ml-training/a.yaml', content: targetYaml('a', '10.0.0.1') }],
      result: {},
    }));
    const head = repo.store.head();
    const attempt = repo.writer.update({ message: 'b', author: ADMIN }, () => ({
      changes: [{ path: 'targets/ml-training/b.yaml', content: targetYaml('b', '10.0.0.1') }],
      result: {},
    }));
    await expect(attempt).rejects.toMatchObject({ code: 'invalid_config' });
    await expect(attempt).rejects.toThrow(/targets\/ml-training\/b.yaml: exporters\[0\].port: address 10.0.0.1:9100/);
    expect(repo.store.head()).toBe(head);
  });
});

describe('watcher', () => {
  it('compiles a target added by a git commit in the working tree', async () => {
    const repo = await watchedRepo();
    const compiled = repo.nextCompile();
    repo.writeFile('targets/ml-training/pr-01.yaml', targetYaml('pr-01', '10.0.5.1', 'ml-training', 'labels: {rack: r7}\n'));
    repo.commitAll('Add pr-01 by pull request');
    await compiled;
    expect(repo.sd('node')).toEqual([
      {
        targets: ['10.0.5.1:9100'],
        labels: { aami_group: 'ml-training', aami_groups: ',ml-training,', aami_namespace: 'logical', hostname: 'pr-01', rack: 'r7', role: 'ml-training' },
      },
    ]);
  });

  it('follows an edit and a delete', async () => {
    const repo = await watchedRepo();
    let compiled = repo.nextCompile();
    repo.writeFile('targets/ml-training/a.yaml', targetYaml('a', '10.0.5.1'));
    await compiled;
    compiled = repo.nextCompile();
    repo.writeFile('targets/ml-training/a.yaml', targetYaml('a', '10.0.5.2'));
    await compiled;
    expect(repo.sd('node').map((e) => e.targets[0])).toEqual(['10.0.5.2:9100']);
    compiled = repo.nextCompile();
    rmSync(`${repo.dir}/targets`, { recursive: true });
    await compiled;
    expect(repo.sd('node')).toEqual([]);
  });

  it('keeps the last good target in the SD files when its file breaks, and reports the file', async () => {
    const repo = await watchedRepo();
    let compiled = repo.nextCompile();
    repo.writeFile('targets/ml-training/a.yaml', targetYaml('a', '10.0.5.1'));
    await compiled;
    compiled = repo.nextCompile();
    repo.writeFile('targets/ml-training/a.yaml', 'hostname: a\nip_address: {{ broken\n');
    await compiled;
    expect(repo.sd('node').map((e) => e.targets[0])).toEqual(['10.0.5.1:9100']);
    expect(repo.sync.snapshot().problems.map(formatProblem)).toEqual([expect.stringMatching(/^targets\/ml-training\/a.yaml: not valid YAML/)]);
  });

  it('does not re-parse files the writer already applied', async () => {
    const repo = await watchedRepo();
    await repo.writer.update({ message: 'a', author: ADMIN }, () => ({
      changes: [{ path: 'targets/ml-training/a.yaml', content: targetYaml('a', '10.0.5.1') }],
      result: {},
    }));
    const before = repo.sync.snapshot();
    await repo.sync.reload(['targets/ml-training/a.yaml']);
    expect(repo.sync.snapshot()).toBe(before);
  });
});
