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

  it('runs concurrent updates one at a time, each seeing the one before', async () => {
    const repo = await tmpConfigRepo();
    const updates = Array.from({ length: 20 }, (_, i) =>
      repo.writer.update({ message: `Add n${i}`, author: ADMIN }, ({ catalog }) => ({
        changes: [{ path: `targets/ml-training/n${i}.yaml`, content: targetYaml(`n${i}`, `10.0.1.${i}`) }],
        result: { before: catalog.targets.size },
      })),
    );
    const results = await Promise.all(updates);
    expect(results.map((r) => r.before).sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(repo.git('rev-list', '--count', 'HEAD').trim()).toBe('21');
    await repo.store.flushIndex();
    repo.git('fsck', '--strict', '--no-progress');
    expect(repo.git('status', '--porcelain')).toBe('');
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
