import { simpleGit } from 'simple-git';
import type { HistoryEntry } from '../schema/answers.js';

const FIELD = '\x1f';
const RECORD = '\x1e';

/** The commits that touched any of the pathspecs, newest first, read with the git CLI (fast on long histories). */
export async function fileHistory(dir: string, pathspecs: string[], limit = 100): Promise<HistoryEntry[]> {
  const format = ['%H', '%an', '%ae', '%aI', '%s', '%(trailers:key=Source-Address,valueonly,separator=%x2C)'].join('%x1f') + '%x1e';
  const out = await simpleGit(dir).raw(['log', `--format=${format}`, '-n', String(limit), '--', ...pathspecs]);
  return out
    .split(RECORD)
    .map((record) => record.trim())
    .filter(Boolean)
    .map((record) => {
      const [commit, author, email, date, message, source] = record.split(FIELD) as [string, string, string, string, string, string | undefined];
      return { commit, author, email, date, message, source_address: source?.trim() || null };
    });
}

/**
 * The blob of a file in each of the last commits that changed it, newest first, with its
 * mode, back to the last time it was deleted: a version from before then is of another file
 * (a target deleted to revoke its node's credential must not come back because a broken file
 * took its path). Read through the size-limited object reader, never `git show` (an old
 * 300 MB version must not be loaded whole).
 */
export async function fileVersions(dir: string, path: string, limit = 20): Promise<Array<{ oid: string; mode: string }>> {
  const git = simpleGit(dir);
  const commits = (await git.raw(['log', '--format=%H', '-n', String(limit), '--', path])).split('\n').filter(Boolean);
  const versions: Array<{ oid: string; mode: string }> = [];
  for (const commit of commits) {
    // "<mode> blob <oid>\t<path>", or nothing when the commit deleted it
    const [mode, type, oid] = (await git.raw(['ls-tree', commit, '--', path])).split(/\s+/);
    if (!oid) break; // the commit that deleted it
    if (type === 'blob' && mode) versions.push({ oid, mode });
  }
  return versions;
}

/** When each path was first added (commit time, seconds), from one `git log` over them all. */
export async function firstAdded(dir: string, paths: string[]): Promise<Map<string, number>> {
  const added = new Map<string, number>();
  if (!paths.length) return added;
  const out = await simpleGit(dir).raw(['log', '--diff-filter=A', '--format=%x00%ct', '--name-only', '--no-renames', '--', ...paths]);
  // Newest first: a path's last mention is its first addition.
  for (const block of out.split('\0').filter((b) => b.trim())) {
    const [time, ...names] = block.split('\n').filter(Boolean);
    for (const name of names) added.set(name, Number(time));
  }
  return added;
}
