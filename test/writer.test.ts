import * as fs from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AamiError } from '../src/errors.js';
import { watchRef } from '../src/writer/watch.js';
import { ADMIN, gitCli, onCleanup, pushFiles, targetYaml, tmpConfigRepo } from './helpers.js';

const add = (repo: Awaited<ReturnType<typeof tmpConfigRepo>>, host: string, ip: string, author = ADMIN) =>
  repo.writer.update({ message: `Add ${host}`, author }, ({ catalog }) => ({
    changes: [{ path: `targets/ml-training/${host}.yaml`, content: targetYaml(host, ip) }],
    result: { before: catalog.targets.size },
  }));

describe('writer', () => {
  it('commits a plan and makes it visible to the next plan and to the SD files', async () => {
    const repo = await tmpConfigRepo();
    const compiled = repo.nextCompile();
    const result = await add(repo, 'gpu-01', '10.0.0.1');
    expect(result.commit).toBe(await repo.repo.head());
    expect(repo.live.snapshot().head).toBe(result.commit);
    await repo.writer.update({ message: 'check', author: ADMIN }, ({ catalog }) => {
      expect(catalog.targets.has('gpu-01')).toBe(true);
      return { changes: [], result: {} };
    });
    await compiled;
    expect(repo.sdFile('node').map((e) => e.targets[0])).toEqual(['10.0.0.1:9100']);
  });

  it('tells its idle listeners whether writes ran since it last ran dry (a follow of the head alone is not a write)', async () => {
    const repo = await tmpConfigRepo();
    const seen: boolean[] = [];
    const dry = () => new Promise<void>((resolve) => repo.writer.onIdle(() => resolve()));
    repo.writer.onIdle((wrote) => seen.push(wrote));
    let next = dry();
    await repo.follow();
    await next;
    next = dry();
    await add(repo, 'gpu-01', '10.0.0.1');
    await next;
    expect(seen).toEqual([false, true]);
  });

  it('runs concurrent updates in order, each seeing the ones before, sharing commits per author', async () => {
    const repo = await tmpConfigRepo();
    const token = { name: 'token abc', email: 'abc@tokens.aami' };
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => add(repo, `n${i}`, `10.0.1.${i}`, i < 10 ? ADMIN : token)));
    expect(results.map((r) => r.before)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    // Each commit has one author, and names every change it holds.
    const log = repo.git('log', '--format=%an|%B%x00').split('\0').map((c) => c.trim()).filter(Boolean).slice(0, -1);
    const named = log.flatMap((entry) => [...entry.matchAll(/Add (n\d+)/g)].map((m) => `${entry.split('|')[0]}:${m[1]}`));
    expect(new Set(named)).toEqual(new Set(Array.from({ length: 20 }, (_, i) => `${i < 10 ? 'admin' : 'token abc'}:n${i}`)));
    expect(log.length).toBeLessThan(20);
    repo.git('fsck', '--strict', '--no-progress');
  });

  it('refuses a write that breaks files it does not change, naming them, with a message for callers who may not read them', async () => {
    const repo = await tmpConfigRepo();
    await repo.writer.update({ message: 'a', author: ADMIN }, () => ({ changes: [{ path: 'targets/ml-training/a.yaml', content: 'hostname: a\nip_address: 10.0.0.1\nprimary_group: ml-training\nexporters:\n  - type: dcgm_exporter\n' }], result: {} }));
    const refused = await repo.writer.update({ message: 'b', author: ADMIN }, () => ({ changes: [{ path: 'aami.yaml', content: 'exporters:\n  node_exporter:\n    job: node\n    port: 9100\n' }], result: {} })).catch((error: unknown) => error);
    expect(refused).toMatchObject({ code: 'invalid_config', message: expect.stringContaining('targets/ml-training/a.yaml: exporters[0].type: unknown exporter type "dcgm_exporter"') });
    expect((refused as AamiError).toAnyone).toEqual({ message: "the change would make the config repo invalid: 1 problem on other files it does not change (the request's line in the server log names them)", details: { problems: [] } });
  });

  it('fails only the write whose plan fails, not the others in its commit', async () => {
    const repo = await tmpConfigRepo();
    const results = await Promise.allSettled([add(repo, 'n1', '10.0.0.1'), add(repo, 'n2', '10.0.0.1'), add(repo, 'n3', '10.0.0.3')]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(repo.git('ls-tree', '--name-only', 'HEAD', 'targets/ml-training/').trim().split('\n')).toEqual(['targets/ml-training/n1.yaml', 'targets/ml-training/n3.yaml']);
  });

  it('never shows readers a write before its commit is durable, and nothing of a commit that failed', async () => {
    const repo = await tmpConfigRepo();
    const writeCommit = repo.repo.writeCommit.bind(repo.repo);
    let seenDuring: boolean | undefined;
    let failNext = true;
    repo.repo.writeCommit = async (parent, request) => {
      seenDuring = repo.live.snapshot().catalog.targets.has('n1');
      if (failNext) {
        failNext = false;
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      }
      return writeCommit(parent, request);
    };
    await expect(add(repo, 'n1', '10.0.0.1')).rejects.toMatchObject({ code: 'storage_unavailable' });
    expect(seenDuring).toBe(false);
    expect(repo.live.snapshot().catalog.targets.has('n1')).toBe(false);
    expect(repo.writer.lastFailure?.message).toContain('ENOSPC');
    await add(repo, 'n2', '10.0.0.2');
    expect([...repo.live.snapshot().catalog.targets.keys()]).toEqual(['n2']);
    expect(repo.writer.lastFailure).toBeUndefined();
  });

  it('makes no commit when the plan throws a coded error', async () => {
    const repo = await tmpConfigRepo();
    const head = await repo.repo.head();
    await expect(
      repo.writer.update({ message: 'x', author: ADMIN }, () => {
        throw new AamiError('group_not_found', 'group "nope" does not exist');
      }),
    ).rejects.toMatchObject({ code: 'group_not_found' });
    expect(await repo.repo.head()).toBe(head);
  });

  it('refuses a plan that would make a file invalid, naming the file and field, and commits nothing', async () => {
    const repo = await tmpConfigRepo();
    await add(repo, 'a', '10.0.0.1');
    const head = await repo.repo.head();
    const attempt = add(repo, 'b', '10.0.0.1');
    await expect(attempt).rejects.toMatchObject({ code: 'invalid_config' });
    await expect(attempt).rejects.toThrow(/targets\/ml-training\/b.yaml: exporters\[0\].port: address 10.0.0.1:9100/);
    expect(await repo.repo.head()).toBe(head);
  });

  it('replays its writes on top of a push that moved the branch while it committed: both are kept, and the replay is counted', async () => {
    const replays: string[] = [];
    const repo = await tmpConfigRepo({ writer: { observeReplay: (reason) => replays.push(reason) } });
    const writeCommit = repo.repo.writeCommit.bind(repo.repo);
    let pushed = false;
    repo.repo.writeCommit = async (parent, request) => {
      // A person pushes between the plan and the swap: the swap finds the branch moved.
      if (!pushed) {
        pushed = true;
        pushFiles(repo.dir, { 'targets/ml-training/from-pr.yaml': targetYaml('from-pr', '10.0.9.9') }, 'Merge pull request');
      }
      return writeCommit(parent, request);
    };
    const result = await add(repo, 'by-api', '10.0.0.1');
    expect(repo.git('ls-tree', '-r', '--name-only', 'HEAD', 'targets').trim().split('\n')).toEqual(['targets/ml-training/by-api.yaml', 'targets/ml-training/from-pr.yaml']);
    expect(repo.git('log', '--format=%s', '-2').trim().split('\n')).toEqual(['Add by-api', 'Merge pull request']);
    expect(result.commit).toBe(await repo.repo.head());
    expect([...repo.live.snapshot().catalog.targets.keys()].sort()).toEqual(['by-api', 'from-pr']);
    // The replayed plan saw the pushed target.
    expect(result.before).toBe(1);
    expect(replays).toEqual(['moved']);
    repo.git('fsck', '--strict', '--no-progress');
  });
});

describe('following the branch', () => {
  it('takes a person\'s push: adds, edits and deletes reach the catalog and the SD files', async () => {
    const repo = await tmpConfigRepo();
    await repo.push({ 'targets/ml-training/a.yaml': targetYaml('a', '10.0.5.1'), 'targets/ml-training/b.yaml': targetYaml('b', '10.0.5.2') });
    await repo.sd.compileNow();
    expect(repo.sdFile('node').map((e) => e.targets[0])).toEqual(['10.0.5.1:9100', '10.0.5.2:9100']);
    await repo.push({ 'targets/ml-training/a.yaml': null, 'targets/ml-training/b.yaml': targetYaml('b', '10.0.5.3') });
    await repo.sd.compileNow();
    expect(repo.sdFile('node').map((e) => e.targets[0])).toEqual(['10.0.5.3:9100']);
  });

  it('keeps the last good target in the SD files when its file breaks, and reports the file', async () => {
    const repo = await tmpConfigRepo();
    await repo.push({ 'targets/ml-training/a.yaml': targetYaml('a', '10.0.5.1') });
    await repo.push({ 'targets/ml-training/a.yaml': 'hostname: a\nip_address: [broken\n' });
    await repo.sd.compileNow();
    expect(repo.sdFile('node').map((e) => e.targets[0])).toEqual(['10.0.5.1:9100']);
    expect(repo.live.snapshot().problems.map((p) => p.file)).toEqual(['targets/ml-training/a.yaml']);
  });

  it('keeps a group deleted by a push while targets and checks still use it', async () => {
    const repo = await tmpConfigRepo();
    await repo.push(Object.fromEntries(['a', 'b', 'c', 'd'].map((h, i) => [`targets/ml-training/${h}.yaml`, targetYaml(h, `10.0.6.${i}`)])));
    const checksBefore = [...repo.live.snapshot().catalog.checks.keys()];
    await repo.push({ 'groups/ml-training.yaml': null }, 'Remove ml-training');
    await repo.sd.compileNow();
    expect(repo.sdFile('node')).toHaveLength(4);
    expect([...repo.live.snapshot().catalog.checks.keys()]).toEqual(checksBefore);
    expect(repo.live.snapshot().problems).toEqual([expect.objectContaining({ file: 'groups/ml-training.yaml', message: expect.stringContaining('was deleted, but it is still used by') })]);
  });
});

describe('watchRef', () => {
  it('tells when the branch or packed-refs changes, with no poll to fall back on, and not for the temp packs written beside them', async () => {
    const { repo, dir } = await tmpConfigRepo();
    let calls = 0;
    let changed: () => void = () => undefined;
    const watcher = watchRef(dir, repo.ref, () => (calls++, changed()), 3_600_000, 0);
    onCleanup(() => watcher.close());
    const next = () => new Promise<void>((resolve) => (changed = resolve));

    // A file at the top of the repository that is neither, seen by a watcher of our own. Both
    // watchers hear of it in the same turn of the event loop (one inotify watch): after that
    // turn (setImmediate) the watcher under test has set its timer if it reacted, and it
    // runs before one set after it.
    const seen = new Promise<void>((resolve) => {
      const own = fs.watch(dir, (_, name) => name === '.aami-pack-1-1.tmp' && (own.close(), resolve()));
    });
    fs.writeFileSync(join(dir, '.aami-pack-1-1.tmp'), 'PACK');
    await seen;
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(calls).toBe(0);

    const head = (await repo.head())!;
    let changes = next();
    gitCli(dir, 'update-ref', repo.ref, gitCli(dir, 'commit-tree', '-p', head, '-m', 'pushed', `${head}^{tree}`).trim());
    await changes;
    changes = next();
    gitCli(dir, 'pack-refs', '--all');
    await changes;
  });
});
