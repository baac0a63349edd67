import { spawn } from 'node:child_process';
import { simpleGit } from 'simple-git';
import type { HistoryEntry } from '../schema/answers.js';

const FIELD = '\x1f';
const RECORD = '\x1e';

/** The commits that touched any of the pathspecs, newest first, read with the git CLI (fast on long histories). */
export async function fileHistory(dir: string, pathspecs: string[], limit = 100): Promise<HistoryEntry[]> {
  const format = ['%H', '%an', '%ae', '%aI', '%s', '%(trailers:key=Source-Address,valueonly,separator=%x2C)'].join('%x1f') + '%x1e';
  // A git that stops answering gives its place back after 30 s (history reads run two at a time).
  const out = await simpleGit(dir, { timeout: { block: 30_000 } }).raw(['log', `--format=${format}`, '-n', String(limit), '--', ...pathspecs]);
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
 * The branch's own history, as it had each version: along first parents, each merge shown as
 * what it changed on the branch (a merge that deleted a file says so; a version on a side
 * branch that its merge did not keep is not one the branch ever had).
 */
const BRANCH_ORDER = ['--first-parent', '--diff-merges=first-parent'];

/**
 * For each path, its blob in each of the last `limit` commits that changed it, newest first,
 * with its mode, back to the last time it was deleted: a version from before then is of
 * another file (a target deleted to revoke its node's credential must not come back because
 * a broken file took its path). One `git log` for every path, the paths given on its
 * standard input: a start with thousands of broken files (an upgrade that refuses what an
 * older build took) walked the history once per file, ~0.4 s each at 30k commits. Blobs are
 * read later through the size-limited object reader, never `git show` (an old 300 MB
 * version must not be loaded whole).
 */
export async function fileVersions(dir: string, commit: string, paths: string[], limit = 20): Promise<Map<string, Array<{ oid: string; mode: string }>>> {
  const versions = new Map<string, Array<{ oid: string; mode: string }>>(paths.map((path) => [path, []]));
  if (!paths.length) return versions;
  // Literal pathspecs, one a line: a config path holds no newline, and no glob is read into one.
  const out = await gitWithInput(dir, ['--literal-pathspecs', 'log', ...BRANCH_ORDER, '--raw', '-z', '--no-renames', '--no-abbrev', '--format=%x01', '--stdin', commit], `--\n${paths.join('\n')}\n`);
  const done = new Set<string>();
  // Records: "\x01" (a commit), "\n:<old mode> <new mode> <old oid> <new oid> <status>", the path; each ended by NUL.
  const fields = out.split('\0');
  for (let i = 0; i < fields.length; i++) {
    const raw = fields[i]!.replace(/^\n/, '');
    if (!raw.startsWith(':')) continue;
    const path = fields[++i]!;
    const list = versions.get(path);
    if (!list || done.has(path)) continue;
    const [, newMode, , newOid, status] = raw.slice(1).split(' ') as [string, string, string, string, string];
    if (status === 'D') done.add(path); // the commit that deleted it
    else list.push({ oid: newOid, mode: newMode });
    if (list.length >= limit) done.add(path);
  }
  return versions;
}

/** Git's output for `args` with `input` on its standard input (paths too many for an argument list). */
function gitWithInput(dir: string, args: string[], input: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('git', [`--git-dir=${dir}`, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out).toString('utf8')) : reject(new Error(`git ${args.find((arg) => !arg.startsWith('-'))} failed (${code}): ${err.trim()}`))));
    child.stdin.on('error', () => undefined); // a git that failed early closed its input: its exit code says why
    child.stdin.end(input);
  });
}

/**
 * How early each path was added as of `commit` (its last addition: the file there now): a
 * rank, smaller for the earlier, from one `git log` over them all (paths on its standard
 * input) in the branch's order, not by dates (a commit's date is whatever its author set: a
 * backdated one must not make a newcomer the established holder of a host name).
 */
export async function addedOrder(dir: string, commit: string, paths: string[]): Promise<Map<string, number>> {
  const added = new Map<string, number>();
  if (!paths.length) return added;
  const out = await gitWithInput(dir, ['--literal-pathspecs', 'log', ...BRANCH_ORDER, '--diff-filter=A', '--format=%x01', '--name-only', '-z', '--no-renames', '--stdin', commit], `--\n${paths.join('\n')}\n`);
  // Newest first: a path's first mention is its last addition (the file there now: one added,
  // deleted and added again is as old as its return), and a later commit an earlier one.
  let position = 0;
  for (const field of out.split('\0')) {
    const name = field.replace(/^\n/, '');
    if (name.startsWith('\x01')) position++;
    else if (name && !added.has(name)) added.set(name, -position);
  }
  return added;
}
