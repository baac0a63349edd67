import { describe, expect, it } from 'vitest';
import type { Snapshot } from '../src/catalog/live.js';
import { formatProblem } from '../src/catalog/problem.js';
import { fileVersions, firstAdded } from '../src/git/history.js';
import { savedStateOf, type SavedCatalogState } from '../src/writer/catalog-state.js';
import { RepoFiles } from '../src/writer/files.js';
import { loadSnapshot } from '../src/writer/head.js';
import { ParseCache } from '../src/writer/parse-cache.js';
import { tmpConfigRepo } from './helpers.js';

const CREDENTIAL = 'credentials/ops.yaml';
const TARGET = 'targets/api-servers/gpu-01.yaml';
const credential = (extra = '') => `id: ops\nname: ops\nrole: admin\nsecret_hash: sha256:${'a'.repeat(64)}\n${extra}`;
const target = (ip: string, group = 'api-servers') => `hostname: gpu-01\nip_address: ${ip}\nprimary_group: ${group}\n`;
/** A file no version of which parses: what a pull request can put at any path. */
const BROKEN = 'id: [unclosed\n';

/** A server starting on the repository, without a restart image: from Git and the state directory a stopped one left (if any). */
async function start(repo: Awaited<ReturnType<typeof tmpConfigRepo>>, saved?: SavedCatalogState): Promise<Snapshot> {
  const files = new RepoFiles(repo.repo, new ParseCache(undefined));
  return loadSnapshot({ repo: repo.repo, files, saved, history: (path) => fileVersions(repo.dir, path), firstAdded: (paths) => firstAdded(repo.dir, paths) });
}

/** What matters here of a snapshot: who may sign in, what is scraped where, and the problems. */
const served = (snapshot: Snapshot) => ({
  credentials: [...snapshot.catalog.apiCredentials.values()].map((c) => ({ id: c.id, revoked: c.revoked })),
  targets: [...snapshot.catalog.targets.values()].map((t) => [t.hostname, t.ip_address]),
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
    await repo.push({ [CREDENTIAL]: credential(), 'groups/extra.yaml': 'id: extra\nname: extra\nnamespace: logical\n', 'targets/extra/gpu-01.yaml': target('10.0.0.5', 'extra') });
    // A revocation with a typo, a group broken: each keeps serving its last good version, which the state names.
    await repo.push({ [CREDENTIAL]: credential('revoked: yes\n'), 'groups/extra.yaml': BROKEN });
    const saved = savedStateOf(repo.live.snapshot());
    expect(Object.keys(saved.last_good).sort()).toEqual([CREDENTIAL, 'groups/extra.yaml']);
    expect(served(await start(repo, saved)).credentials).toEqual([{ id: 'ops', revoked: false }]);

    // While the server is down, the credential is deleted, and the group too (its target still in it).
    const at = await repo.push({ [CREDENTIAL]: null, 'groups/extra.yaml': null });
    const restarted = served(await start(repo, saved));
    expect(restarted.credentials).toEqual([]);
    expect(restarted.targets).toEqual([['gpu-01', '10.0.0.5']]);
    expect(restarted).toEqual(served(repo.live.snapshot()));

    // Or the credential is revoked properly, then broken again (another blob): the revoked version serves.
    repo.git('update-ref', 'refs/heads/main', `${at}~1`);
    await repo.follow();
    await repo.push({ [CREDENTIAL]: credential('revoked: true\n') });
    await repo.push({ [CREDENTIAL]: credential('revoked: yes\nexpires_at: soon\n') });
    expect(served(repo.live.snapshot()).credentials).toEqual([{ id: 'ops', revoked: true }]);
    expect(served(await start(repo, saved))).toEqual(served(repo.live.snapshot()));
  });
});
