import { keptWhenDeleted, mayFallBackTo, type FileRecord } from '../catalog/build.js';
import { fileRecord, Snapshot, type LiveCatalog } from '../catalog/live.js';
import { claimKeys, establishedIn } from '../catalog/place.js';
import type { GitRepository } from '../git/repository.js';
import type { SavedCatalogState } from './catalog-state.js';
import type { RepoFiles } from './files.js';

/**
 * Brings the live catalog to the branch head: the tree of the new head is compared with
 * the last one, and only the files that changed are read (and parsed, unless the cache knows
 * their blob). Called in the writer's queue: before every batch, when the ref watcher sees
 * the branch move (a `git push` into this repository), and after a pull.
 */
export async function followHead(repo: GitRepository, live: LiveCatalog, files: RepoFiles): Promise<boolean> {
  const head = await repo.head();
  const base = live.snapshot();
  if (head === base.head) return false;
  // A branch that disappeared is a fault to report, never an empty config to serve.
  if (head === null) throw new Error(`the branch ${repo.branch} no longer exists in ${repo.gitdir}`);
  const updates = base.head ? await files.updates(base.head, head) : [...(await files.records(head))].map(([path, record]) => ({ path, oid: record.oid, parsed: record.parsed, text: record.text }));
  const draft = live.draft();
  draft.apply(updates);
  live.publish(draft.freeze(head));
  return true;
}

/**
 * The first snapshot: every config file of the head, with the last good versions and the
 * clashes the previous run knew (state directory), so a restart serves what the server
 * served before it stopped. A file broken at start that the state does not cover (or that
 * changed since the state was saved) is served at its newest version in Git history that
 * passes its own checks, back to the commit that last deleted it.
 */
export async function loadSnapshot(options: {
  repo: GitRepository;
  files: RepoFiles;
  saved: SavedCatalogState | undefined;
  /** Older versions of each file as of a commit (blob id and mode), newest first, back to its last deletion. */
  history: (commit: string, paths: string[]) => Promise<Map<string, Array<{ oid: string; mode: string }>>>;
  /** How early each of these paths was first added to the repository (smaller: earlier). */
  addedOrder?: (commit: string, paths: string[]) => Promise<Map<string, number>>;
}): Promise<Snapshot> {
  const { repo, files, saved } = options;
  const head = await repo.head();
  const records = head ? await files.records(head) : new Map<string, FileRecord>();
  for (const [path, oid] of Object.entries(saved?.last_good ?? {})) {
    const record = records.get(path);
    if (record && record.oid === oid) continue;
    // A file changed since the state was saved (while the server was down, say) is not the
    // file whose last good version the state names: it is recalled from its history below.
    if (record && record.oid !== saved!.current?.[path]) continue;
    const lastGood = (await files.parse(path, { oid, mode: '100644' }).catch(() => undefined))?.parsed.entity;
    if (!lastGood) continue;
    const restored = fileRecord({ oid: record?.oid ?? null, parsed: record?.parsed ?? { problems: [] }, lastGood, lastGoodOid: oid, text: record?.text });
    // A deleted file comes back only where a running server keeps it (a group, a script, the
    // settings), and only as long as something still uses it (the build decides): never a
    // deleted credential, token or target.
    if (!record && !keptWhenDeleted(restored)) continue;
    records.set(path, restored);
  }
  let established = (key: string): string | undefined => saved?.established[key];
  let snapshot = Snapshot.build(records, head, established);
  // Without the state directory, a clash is settled for the file that was in the repository first.
  if (!saved && options.addedOrder && head) {
    const byAge = await establishedByAge(snapshot, (paths) => options.addedOrder!(head, paths));
    if (byAge.size) {
      established = (key) => byAge.get(key);
      snapshot = Snapshot.build(records, head, established);
    }
  }

  let recalled = false;
  const broken = [...snapshot.problemsByFile.keys()].filter((path) => {
    const record = snapshot.files.get(path);
    return record && !record.lastGood && record.oid !== null;
  });
  const history = broken.length ? await options.history(head!, broken) : new Map<string, never[]>();
  for (const path of broken) {
    const record = snapshot.files.get(path)!;
    for (const version of history.get(path) ?? []) {
      if (version.oid === record.oid) continue; // the current, broken version
      const { entity } = (await files.parse(path, version)).parsed;
      if (!entity) continue;
      if (!mayFallBackTo(entity)) break; // a credential or token that breaks lets nobody in: nothing to recall
      records.set(path, fileRecord({ ...record, lastGood: entity, lastGoodOid: version.oid }));
      recalled = true;
      break;
    }
  }
  if (recalled) snapshot = Snapshot.build(records, head, established);
  return snapshot;
}

/** For each claim two target files make, the one added to the repository first. */
async function establishedByAge(snapshot: Snapshot, addedOrder: (paths: string[]) => Promise<Map<string, number>>): Promise<Map<string, string>> {
  const claimants = new Map<string, string[]>();
  for (const path of snapshot.problemsByFile.keys()) {
    const entity = snapshot.files.get(path)?.parsed.entity;
    if (entity?.kind !== 'target') continue;
    for (const key of claimKeys(snapshot.catalog.settings, entity.value)) {
      const holder = establishedIn(snapshot.catalog)(key);
      if (holder && holder !== path) claimants.set(key, [holder, path, ...(claimants.get(key) ?? [])]);
    }
  }
  const result = new Map<string, string>();
  if (!claimants.size) return result;
  const ages = await addedOrder([...new Set([...claimants.values()].flat())]);
  for (const [key, paths] of claimants) {
    const oldest = [...new Set(paths)].sort((a, b) => (ages.get(a) ?? Infinity) - (ages.get(b) ?? Infinity) || (a < b ? -1 : 1))[0]!;
    result.set(key, oldest);
  }
  return result;
}
