import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { setPriority } from 'node:os';
import { promisify } from 'node:util';
import { exists, syncPath } from './fs.js';
import { clearLeftoverPackTemps, hashObject, ObjectWriter, type Person, serializeCommit, type TreeEntry } from './objects.js';
import { ObjectReader } from './reader.js';
import { clearLeftoverLock, readRef, swapRef, type SwapResult } from './refs.js';
import { Tree } from './tree.js';

const PUSH_GUARDS = ['receive.denyNonFastForwards', 'receive.denyDeletes'];

const run = promisify(execFile);

/** One file to write (text) or delete (null), by its path relative to the repo root. */
export interface Change {
  path: string;
  content: string | null;
}

export interface Author {
  name: string;
  email: string;
}

export interface CommitRequest {
  message: string;
  author: Author;
  /** Appended to the message as Git trailers ("Key: value"), e.g. the client's address; keys may repeat. */
  trailers?: Array<[string, string]>;
  changes: Change[];
}

/** A file of a commit's tree: its blob id and mode ('100644', '100755', '120000' for a symlink, '160000' for a submodule). */
export interface TreeFile {
  oid: string;
  mode: string;
}

/** A path whose file a new head changed: its old and new version (null: absent). */
export interface TreeChange {
  path: string;
  before: TreeFile | null;
  after: TreeFile | null;
}

/**
 * 'bare': the server's own repository, no working tree (the default).
 * 'working-tree': a repository of the old layout (DIR/.git): still served, its working tree
 * neither read nor written — people change config by pushing, never by editing there.
 */
export type Layout = 'bare' | 'working-tree';

/** Blobs past this size are never read into memory (config files are refused past 1 MiB anyway). */
const MAX_BLOB_READ = 64 << 20;
/** In a repository while init() makes it. */
const INITIALIZING = 'aami-initializing';

/** Commits (one pack each) between two repacks. */
const REPACK_EVERY = 50;
const COMMITTER: Author = { name: 'aami', email: 'aami@localhost' };
const TREE_MODE = '40000';
const BLOB_MODE = '100644';

/**
 * The Git repository as the store of committed config. Reads go through `git cat-file
 * --batch` and `git diff-tree`; each commit is written as one pack (never through an
 * index) and the branch moves only by compare-and-swap (refs.ts). Nothing here knows what a
 * target or a token is.
 */
export class GitRepository {
  readonly objects: ObjectReader;
  private readonly writer: ObjectWriter;
  readonly ref: string;
  /**
   * Trees by object id: immutable, so a cache never goes stale; cleared when it grows. A
   * commit takes the trees it replaced out: they were held until 4,096 trees had been cached,
   * ~14 MB after a storm of 3,000 registrations into one group of a 100k-target repository
   * (each version of that group's directory, and of the directory of all groups).
   */
  private readonly trees = new Map<string, Tree>();
  /**
   * The last commit written here and its root tree. Its trees go into the cache as written:
   * the next write on top of it (the common case: the writer's next batch) reads no object
   * back from Git.
   */
  private written: { commit: string; root: string } | undefined;
  /** Packs written since the last repack, and the repack running now. */
  private packs = 0;
  private repacking: Promise<void> | undefined;

  private constructor(
    readonly gitdir: string,
    readonly layout: Layout,
    readonly branch: string,
    private readonly now: () => number,
  ) {
    this.objects = new ObjectReader(gitdir, MAX_BLOB_READ);
    this.writer = new ObjectWriter(fs, gitdir);
    this.ref = `refs/heads/${branch}`;
  }

  /** Open DIR as a bare repository, or DIR/.git (old layout). */
  static async open(dir: string, options: { branch?: string; now?: () => number } = {}): Promise<GitRepository> {
    const branch = options.branch ?? 'main';
    if (await exists(fs, `${dir}/.git/HEAD`)) return new GitRepository(`${dir}/.git`, 'working-tree', branch, options.now ?? Date.now);
    if (await exists(fs, `${dir}/HEAD`) && (await exists(fs, `${dir}/objects`))) return new GitRepository(dir, 'bare', branch, options.now ?? Date.now);
    throw new Error(`${dir} is not a Git repository`);
  }

  /**
   * A new bare repository at `dir` with one commit of `files`. Pushes into it may not rewrite
   * or delete the branch: the server's acknowledged writes live there. A marker file says it is being
   * made until it is whole: a process killed before (a kill in the first second of a first
   * start) leaves a repository without its branch or its push guards, which `unfinished()`
   * tells and a second `init` completes (in place: `dir` may be a volume's mount point).
   */
  static async init(dir: string, options: { branch?: string; now?: () => number; files: Change[]; author: Author; message?: string }): Promise<GitRepository> {
    const branch = options.branch ?? 'main';
    await fs.promises.mkdir(dir, { recursive: true });
    await fs.promises.writeFile(`${dir}/${INITIALIZING}`, 'a repository being made: the server finishes it at its next start\n');
    await run('git', ['init', '--quiet', '--bare', `--initial-branch=${branch}`, dir]);
    await run('git', [`--git-dir=${dir}`, 'config', 'core.logAllRefUpdates', 'false']);
    const repo = await GitRepository.open(dir, options);
    const { failed } = await repo.guardPushes();
    if (failed) throw new Error(`cannot set the push guards of ${dir}: ${failed}`);
    await syncPath(fs, dir);
    if ((await repo.head()) === null) {
      const commit = await repo.writeCommit(null, { message: options.message ?? 'Initialize config repo', author: options.author, changes: options.files });
      const swapped = await repo.swap(null, commit!);
      if (swapped.kind !== 'swapped') throw new Error(`cannot create branch ${branch} in ${dir}: ${swapped.kind}`);
    }
    await fs.promises.rm(`${dir}/${INITIALIZING}`);
    await syncPath(fs, dir);
    return repo;
  }

  /**
   * Pushes into the repository may not rewrite or delete the branch: the server's acknowledged
   * writes live there. Checked at every start in the repository's own config (a global value
   * does not count) and set where missing or not true: a clone or a first start killed before
   * it set them would otherwise never get them, and a `false` put there by hand would let a
   * push undo acknowledged writes. Answers what it set, and what it could not (a config.lock a
   * kill left, say: the server serves on and says so).
   */
  async guardPushes(): Promise<{ set: string[]; failed?: string }> {
    const set: string[] = [];
    // The value git uses: the last if the key is there more than once, files the repository's config includes read too; none: exit 1. (--bool: git before 2.18 has no --type.)
    const used = (key: string) =>
      run('git', [`--git-dir=${this.gitdir}`, 'config', '--local', '--includes', '--bool', '--get', key]).then(
        ({ stdout }) => String(stdout).trim(),
        () => undefined,
      );
    for (const key of PUSH_GUARDS) {
      const value = await used(key);
      if (value === 'true') continue;
      try {
        await run('git', [`--git-dir=${this.gitdir}`, 'config', '--local', '--replace-all', key, 'true']);
      } catch (error) {
        const said = String((error as { stderr?: unknown }).stderr ?? error).trim();
        const hint = /could not lock config file/.test(said) ? ` (if no git runs on it, a killed one left ${this.gitdir}/config.lock: remove it)` : '';
        return { set, failed: `${key}: ${said}${hint}` };
      }
      // Set in the config's own lines, yet a file it includes ([include] path) can say otherwise after them: git reads that last.
      const after = await used(key);
      if (after !== 'true') return { set, failed: `${key} is still ${after ?? 'unset'} after it was set to true in ${this.gitdir}/config: a file that config includes ([include] or [includeIf] path) sets it after; remove it there` };
      set.push(value === undefined ? key : `${key} (was ${value})`);
    }
    return { set };
  }

  /** Whether `dir` is a repository `init` did not finish. */
  static unfinished(dir: string): Promise<boolean> {
    return exists(fs, `${dir}/${INITIALIZING}`);
  }

  /** The branch's commit now (null: no commit yet). */
  head(): Promise<string | null> {
    return readRef(this.gitdir, this.ref);
  }

  /** At start-up: remove a lock on the branch left by a process that died holding it (refs.ts). */
  clearLeftoverLock(): Promise<string | undefined> {
    return clearLeftoverLock(this.gitdir, this.ref);
  }

  /** At start-up: remove what a process that died mid-write left of a pack (objects.ts). */
  clearLeftoverPackTemps(): Promise<string[]> {
    return clearLeftoverPackTemps(fs, this.gitdir);
  }

  swap(expected: string | null, next: string): Promise<SwapResult> {
    return swapRef(this.gitdir, this.ref, expected, next);
  }

  /** Every file of a commit, by path (symlinks and submodules included, with their modes). */
  async listFiles(commit: string): Promise<Map<string, TreeFile>> {
    const { stdout } = await run('git', [`--git-dir=${this.gitdir}`, 'ls-tree', '-r', '-z', '--full-tree', commit], { maxBuffer: 1 << 30, encoding: 'buffer' });
    const files = new Map<string, TreeFile>();
    // "<mode> <type> <oid>\t<path>\0", each field decoded from the bytes on its own: a path or
    // blob id cut from one decoded string of the whole listing kept all of it alive (~10 MB
    // at 100k files) for as long as the catalog kept that file.
    for (const [start, end] of nulRecords(stdout)) {
      const tab = stdout.indexOf(9, start);
      const mode = stdout.toString('latin1', start, stdout.indexOf(32, start));
      const oid = stdout.toString('latin1', stdout.lastIndexOf(32, tab) + 1, tab);
      files.set(stdout.toString('utf8', tab + 1, end), { oid, mode });
    }
    return files;
  }

  /** What changed between two commits, path by path (no rename detection: a move is a delete and an add). */
  async diff(from: string, to: string): Promise<TreeChange[]> {
    const { stdout } = await run('git', [`--git-dir=${this.gitdir}`, 'diff-tree', '-r', '-z', '--no-renames', '--no-commit-id', from, to], { maxBuffer: 1 << 30, encoding: 'buffer' });
    const records = splitNul(stdout);
    const changes: TreeChange[] = [];
    for (let i = 0; i + 1 < records.length; i += 2) {
      // ":<old mode> <new mode> <old oid> <new oid> <status>" then the path
      const [oldMode, newMode, oldOid, newOid] = records[i]!.slice(1).split(' ') as [string, string, string, string];
      const absent = (mode: string) => /^0+$/.test(mode);
      changes.push({
        path: records[i + 1]!,
        before: absent(oldMode) ? null : { oid: oldOid, mode: oldMode },
        after: absent(newMode) ? null : { oid: newOid, mode: newMode },
      });
    }
    return changes;
  }

  /** Whether `ancestor` is `descendant` or one of its ancestors. */
  async isAncestor(ancestor: string, descendant: string): Promise<boolean> {
    try {
      await run('git', [`--git-dir=${this.gitdir}`, 'merge-base', '--is-ancestor', ancestor, descendant]);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Write a commit on top of `parent` holding `changes`: blobs, the trees on the way to the
   * root, the commit, all durable. The branch does not move (swap() does that). Only the
   * directories on the changed paths are read and rewritten: one group's directory, not the
   * whole repo. Null when the changes leave the tree as it was.
   */
  async writeCommit(parent: string | null, request: CommitRequest): Promise<string | null> {
    const rootOid = !parent ? null : parent === this.written?.commit ? this.written.root : await this.objects.commitTree(parent);
    // Each directory on a changed path: its tree in the parent, and its entries that change.
    const before = new Map<string, Tree>();
    /** The parent's trees this commit replaces: out of the cache once it is written (see cacheTree). */
    const superseded: string[] = [];
    const changed = new Map<string, Map<string, TreeEntry | null>>();
    const objects: Array<{ oid: string; type: 'blob' | 'tree' | 'commit'; content: Buffer }> = [];
    const add = (type: 'blob' | 'tree' | 'commit', content: Buffer): string => {
      const { oid } = hashObject(type, content);
      objects.push({ oid, type, content });
      return oid;
    };
    const dirOf = async (path: string): Promise<Map<string, TreeEntry | null>> => {
      let entries = changed.get(path);
      if (!entries) {
        const { oid, tree } = await this.treeAt(rootOid, path);
        before.set(path, tree);
        if (oid) superseded.push(oid);
        entries = new Map();
        changed.set(path, entries);
      }
      return entries;
    };
    const inRoot = await dirOf('');
    for (const change of request.changes) {
      const parts = change.path.split('/');
      const name = parts.pop()!;
      // Every directory on the way is loaded: each gets its child's new id below.
      let entries = inRoot;
      for (let depth = 1; depth <= parts.length; depth++) entries = await dirOf(parts.slice(0, depth).join('/'));
      entries.set(name, change.content === null ? null : { mode: BLOB_MODE, oid: add('blob', Buffer.from(change.content)), type: 'blob' });
    }
    // Deepest directories first, so each parent gets its children's new ids.
    const written: Array<[string, Tree]> = [];
    const treeOf = (path: string): Tree => before.get(path)!.with(changed.get(path)!);
    for (const path of [...changed.keys()].sort(deeperFirst)) {
      if (path === '') continue;
      const tree = treeOf(path);
      const name = path.slice(path.lastIndexOf('/') + 1);
      // Git has no empty directories.
      const entry: TreeEntry | null = tree.size ? { mode: TREE_MODE, oid: add('tree', tree.raw), type: 'tree' } : null;
      if (entry) written.push([entry.oid, tree]);
      changed.get(parentOf(path))!.set(name, entry);
    }
    const rootTree = treeOf('');
    const root = hashObject('tree', rootTree.raw);
    written.push([root.oid, rootTree]);
    if (root.oid === rootOid) return null;
    objects.push({ oid: root.oid, type: 'tree', content: rootTree.raw });
    const when = Math.floor(this.now() / 1000);
    const commit = serializeCommit({
      tree: root.oid,
      parents: parent ? [parent] : [],
      author: { ...request.author, timestamp: when } satisfies Person,
      committer: { ...COMMITTER, timestamp: when },
      message: withTrailers(request.message, request.trailers),
    });
    const oid = add('commit', commit);
    await this.writer.writeAll(objects);
    for (const old of superseded) this.trees.delete(old);
    for (const [treeOid, tree] of written) this.cacheTree(treeOid, tree);
    this.written = { commit: oid, root: root.oid };
    if (++this.packs >= REPACK_EVERY) this.repack();
    return oid;
  }

  /**
   * Fold the small packs of the last commits (and any loose objects) together, in the
   * background: every object lookup looks at every pack. `--geometric=2` rewrites only the
   * smallest packs, so the cost follows the commits since the last time, not the size of
   * the repository; `-d` deletes only packs it has copied, so a commit written meanwhile is safe.
   */
  private repack(): void {
    if (this.repacking) return;
    this.packs = 0;
    const job = run('git', [`--git-dir=${this.gitdir}`, 'repack', '-d', '-q', '--geometric=2']);
    // Upkeep that nothing waits for: at the lowest priority it leaves the cores to the commits
    // of a storm (on 2 cores, a 10k storm's second round: p99 63 ms, against 94 at the server's own).
    try {
      if (job.child.pid !== undefined) setPriority(job.child.pid, 19);
    } catch {
      // not allowed here (a seccomp profile), or done already (ESRCH): it runs at the server's priority
    }
    this.repacking = job
      .then(() => undefined, () => undefined)
      .finally(() => (this.repacking = undefined));
  }

  /** The text of a blob (null: too large to read). */
  async readText(oid: string): Promise<string | null> {
    return (await this.objects.readBlob(oid))?.toString('utf8') ?? null;
  }

  async close(): Promise<void> {
    await this.repacking;
    await this.objects.close();
  }

  /** The entries of the directory at `path` in the tree `root` (empty when it does not exist). */
  private async treeAt(root: string | null, path: string): Promise<{ oid: string | null; tree: Tree }> {
    let oid = root;
    for (const part of path ? path.split('/') : []) {
      if (!oid) break;
      const entry = (await this.tree(oid)).get(part);
      oid = entry?.type === 'tree' ? entry.oid : null;
    }
    return { oid, tree: oid ? await this.tree(oid) : Tree.empty };
  }

  private async tree(oid: string): Promise<Tree> {
    let tree = this.trees.get(oid);
    if (!tree) {
      tree = await this.objects.readTree(oid);
      this.cacheTree(oid, tree);
    }
    return tree;
  }

  private cacheTree(oid: string, tree: Tree): void {
    if (this.trees.size > 4096) this.trees.clear();
    this.trees.set(oid, tree);
  }
}

/** Where each record of git's -z output starts and ends (its NUL, or the end of the output). */
function* nulRecords(buffer: Buffer): Generator<[start: number, end: number]> {
  for (let start = 0; start < buffer.length; ) {
    const nul = buffer.indexOf(0, start);
    const end = nul < 0 ? buffer.length : nul;
    yield [start, end];
    start = end + 1;
  }
}

/** Git's -z output, each record decoded on its own (a cut of one string of the whole output keeps all of it alive). */
function splitNul(buffer: Buffer): string[] {
  return Array.from(nulRecords(buffer), ([start, end]) => buffer.toString('utf8', start, end));
}

/** A module function, not an arrow made on every commit (see sameCuts in compiler.ts). */
function deeperFirst(a: string, b: string): number {
  return depthOf(b) - depthOf(a);
}

function depthOf(path: string): number {
  return path === '' ? 0 : path.split('/').length;
}

function parentOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash === -1 ? '' : path.slice(0, slash);
}

function withTrailers(message: string, trailers: Array<[string, string]> | undefined): string {
  const lines = (trailers ?? []).map(([key, value]) => `${key}: ${value.replace(/\n/g, ' ')}`);
  return lines.length ? `${message.trimEnd()}\n\n${lines.join('\n')}\n` : message;
}
