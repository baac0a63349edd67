import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Snapshot } from '../src/catalog/live.js';
import { formatProblem } from '../src/catalog/problem.js';
import { addedOrder, fileVersions } from '../src/git/history.js';
import { CatalogStateFile, savedStateOf, type SavedCatalogState } from '../src/writer/catalog-state.js';
import { RepoFiles } from '../src/writer/files.js';
import { loadSnapshot } from '../src/writer/head.js';
import { ParseCache } from '../src/writer/parse-cache.js';
import { gitCli, tempDir, tmpConfigRepo } from './helpers.js';

const CREDENTIAL = 'credentials/ops.yaml';
const TARGET = 'targets/api-servers/gpu-01.yaml';
const credential = (extra = '') => `id: ops\nname: ops\nrole: admin\nsecret_hash: sha256:${'a'.repeat(64)}\n${extra}`;
const target = (ip: string, group = 'api-servers') => `hostname: gpu-01\nip_address: ${ip}\nprimary_group: ${group}\n`;
/** A file no version of which parses: what a pull request can put at any path. */
const BROKEN = 'id: [unclosed\n';

/** A server starting on the repository, without a restart image: from Git and the state directory a stopped one left (if any). */
async function start(repo: Awaited<ReturnType<typeof tmpConfigRepo>>, saved?: SavedCatalogState): Promise<Snapshot> {
  const files = new RepoFiles(repo.repo, new ParseCache(undefined));
  return loadSnapshot({ repo: repo.repo, files, saved, history: (commit, paths) => fileVersions(repo.dir, commit, paths), addedOrder: (commit, paths) => addedOrder(repo.dir, commit, paths) });
}

/** What matters here of a snapshot: who may sign in, what is scraped where, and the problems. */
const served = (snapshot: Snapshot) => ({
  credentials: [...snapshot.catalog.apiCredentials.values()].map((c) => ({ id: c.id, revoked: c.revoked })),
  targets: [...snapshot.catalog.targets.values()].map((t) => [t.hostname, t.ip_address]).sort(),
  problems: snapshot.problems.map(formatProblem),
});

describe('a start without the restart image serves what a running server serves', () => {
  it('never brings back a deleted credential or target from its history when a broken file takes its path', async () => {
    const repo = await tmpConfigRepo();
    await repo.push({ [CREDENTIAL]: credential(), [TARGET]: target('10.0.0.5') });
    // Deleted: the admin credential revoked by deletion, the node's credential with its target.
    await repo.push({ [CREDENTIAL]: null, [TARGET]: null });
    await repo.push({ [CREDENTIAL]: BROKEN, [TARGET]: BROKEN }, 'Placeholders');
    const running = served(repo.live.snapshot());
    expect(running.credentials).toEqual([]);
    expect(running.targets).toEqual([]);
    expect(running.problems).toHaveLength(2);
    // Started afresh: before, each came back at its version from before the deletion.
    expect(served(await start(repo))).toEqual(running);

    // A version since the file last appeared is recalled, as documented (a broken file keeps serving).
    await repo.push({ [TARGET]: target('10.0.0.6') });
    await repo.push({ [TARGET]: BROKEN }, 'Broken again');
    expect(served(repo.live.snapshot()).targets).toEqual([['gpu-01', '10.0.0.6']]);
    expect(served(await start(repo))).toEqual(served(repo.live.snapshot()));
  });

  it('takes a last good version from the state only for a file unchanged since it was saved, and a deleted one only if a running server keeps it', async () => {
    const repo = await tmpConfigRepo();
    const EXTRA = 'targets/extra/gpu-02.yaml';
    const extra = (ip: string) => `hostname: gpu-02\nip_address: ${ip}\nprimary_group: extra\n`;
    await repo.push({ [TARGET]: target('10.0.0.5'), 'groups/extra.yaml': 'id: extra\nname: extra\nnamespace: logical\n', [EXTRA]: extra('10.0.1.5') });
    // A target and a group broken: each keeps serving its last good version, which the state names.
    await repo.push({ [TARGET]: BROKEN, 'groups/extra.yaml': BROKEN });
    const saved = savedStateOf(repo.live.snapshot());
    expect(Object.keys(saved.last_good).sort()).toEqual(['groups/extra.yaml', TARGET]);
    expect(served(await start(repo, saved))).toEqual(served(repo.live.snapshot()));

    // While the server is down, the target is deleted, and the group too (gpu-02 still in it).
    const at = await repo.push({ [TARGET]: null, 'groups/extra.yaml': null });
    const restarted = served(await start(repo, saved));
    expect(restarted.targets).toEqual([['gpu-02', '10.0.1.5']]);
    expect(restarted).toEqual(served(repo.live.snapshot()));

    // Or the target moves to another address, then breaks again (another blob): the new address serves.
    repo.git('update-ref', 'refs/heads/main', `${at}~1`);
    await repo.follow();
    await repo.push({ [TARGET]: target('10.0.0.6') });
    await repo.push({ [TARGET]: `${BROKEN}# again\n` });
    expect(served(repo.live.snapshot()).targets).toContainEqual(['gpu-01', '10.0.0.6']);
    expect(served(await start(repo, saved))).toEqual(served(repo.live.snapshot()));
  });

  it('saves the state again when a broken file is replaced by another broken version, so a restart still takes its last good version', async () => {
    const repo = await tmpConfigRepo();
    const dir = tempDir();
    const stateFile = new CatalogStateFile(join(dir, 'catalog-state.json'));
    await repo.push({ [TARGET]: target('10.0.0.5') });
    await repo.push({ [TARGET]: BROKEN });
    await stateFile.save(savedStateOf(repo.live.snapshot()));
    const first = readFileSync(join(dir, 'catalog-state.json'), 'utf8');
    await repo.push({ [TARGET]: `${BROKEN}# still\n` });
    await stateFile.save(savedStateOf(repo.live.snapshot()));
    expect(readFileSync(join(dir, 'catalog-state.json'), 'utf8')).not.toBe(first);
    const restarted = served(await start(repo, new CatalogStateFile(join(dir, 'catalog-state.json')).load()));
    expect(restarted.targets).toEqual([['gpu-01', '10.0.0.5']]);
    expect(restarted).toEqual(served(repo.live.snapshot()));
  });

  it('without a state, settles a clash for the file added first by the order of commits, not by a date its author set', async () => {
    const repo = await tmpConfigRepo();
    await repo.push({ [TARGET]: target('10.0.0.5') });
    // A newcomer on the same address, committed with a date twenty-five years back.
    const work = join(tempDir(), 'work');
    gitCli(tempDir(), 'clone', '--quiet', '--no-local', repo.dir, work);
    mkdirSync(join(work, 'targets/api-servers'), { recursive: true });
    writeFileSync(join(work, 'targets/api-servers/gpu-99.yaml'), 'hostname: gpu-99\nip_address: 10.0.0.5\nprimary_group: api-servers\n');
    gitCli(work, 'add', '-A');
    execFileSync('git', ['-c', 'user.name=m', '-c', 'user.email=m@x', 'commit', '--quiet', '-m', 'backdated'], { cwd: work, env: { ...process.env, GIT_AUTHOR_DATE: '2001-01-01T00:00:00Z', GIT_COMMITTER_DATE: '2001-01-01T00:00:00Z' } });
    gitCli(work, 'push', '--quiet', 'origin', 'HEAD:main');
    await repo.follow();
    const running = served(repo.live.snapshot());
    expect(running.targets).toEqual([['gpu-01', '10.0.0.5']]);
    expect(served(await start(repo))).toEqual(running);
  });

  it('follows the branch as it had each version: a merge that deleted a file ends its history; a file added again is as old as its return', async () => {
    const repo = await tmpConfigRepo();
    const Y = 'targets/api-servers/gpu-02.yaml';
    await repo.push({ [TARGET]: target('10.0.0.5') });
    // A pull request merged with the target deleted in the merge itself (a conflict resolved so).
    const work = join(tempDir(), 'work');
    gitCli(tempDir(), 'clone', '--quiet', '--no-local', repo.dir, work);
    const git = (...args: string[]) => gitCli(work, '-c', 'user.name=p', '-c', 'user.email=p@x', ...args);
    git('checkout', '--quiet', '-b', 'side');
    writeFileSync(join(work, 'groups/side.yaml'), 'id: side\nname: side\nnamespace: logical\n');
    git('add', '-A');
    git('commit', '--quiet', '-m', 'side');
    git('checkout', '--quiet', 'main');
    git('merge', '--quiet', '--no-ff', '--no-commit', 'side');
    git('rm', '--quiet', TARGET);
    git('commit', '--quiet', '-m', 'merge side, without gpu-01');
    git('push', '--quiet', 'origin', 'main');
    await repo.follow();
    await repo.push({ [TARGET]: BROKEN }, 'Placeholder');
    expect(served(repo.live.snapshot()).targets).toEqual([]);
    expect(served(await start(repo))).toEqual(served(repo.live.snapshot()));

    // gpu-01 comes back on gpu-02's address after gpu-02 took it: gpu-02 is the established one.
    await repo.push({ [TARGET]: null });
    await repo.push({ [Y]: 'hostname: gpu-02\nip_address: 10.0.0.9\nprimary_group: api-servers\n' });
    await repo.push({ [TARGET]: target('10.0.0.9') });
    const running = served(repo.live.snapshot());
    expect(running.targets).toEqual([['gpu-02', '10.0.0.9']]);
    expect(served(await start(repo))).toEqual(running);
  });

  it('serves no version of a credential or token file that breaks, running or restarted: a revocation with a typo lets nobody in', async () => {
    const repo = await tmpConfigRepo();
    const token = (extra = '') => `id: tttttttt\nname: rack\nsecret_hash: sha256:${'b'.repeat(64)}\ndefault_group: api-servers\nmax_uses: 5\nexpires_at: 2099-01-01T00:00:00Z\n${extra}`;
    await repo.push({ [CREDENTIAL]: credential(), 'tokens/tttttttt.yaml': token() });
    expect(served(repo.live.snapshot()).credentials).toEqual([{ id: 'ops', revoked: false }]);
    expect([...repo.live.snapshot().catalog.tokens.keys()]).toEqual(['tttttttt']);
    await repo.push({ [CREDENTIAL]: credential('revoked: yes\n'), 'tokens/tttttttt.yaml': token('revoked: yes\n') });
    const running = repo.live.snapshot();
    expect(served(running).credentials).toEqual([]);
    expect([...running.catalog.tokens.keys()]).toEqual([]);
    expect(served(running).problems).toEqual([`${CREDENTIAL}: revoked: Invalid input: expected boolean, received string`, 'tokens/tttttttt.yaml: revoked: Invalid input: expected boolean, received string']);
    for (const restarted of [await start(repo, savedStateOf(running)), await start(repo)]) {
      expect(served(restarted)).toEqual(served(running));
      expect([...restarted.catalog.tokens.keys()]).toEqual([]);
    }
    // Fixed: in again.
    await repo.push({ [CREDENTIAL]: credential('revoked: true\n'), 'tokens/tttttttt.yaml': token() });
    expect(served(repo.live.snapshot()).credentials).toEqual([{ id: 'ops', revoked: true }]);
    expect([...repo.live.snapshot().catalog.tokens.keys()]).toEqual(['tttttttt']);
  });
});
