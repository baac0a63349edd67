import type { BigIntStats } from 'node:fs';
import { dirname } from 'node:path';
import git from 'isomorphic-git';
import { type Fs, exists, syncPath, writeFileDurably } from './fs.js';
import { serializeIndex, type IndexEntry } from './git-index.js';
import { ObjectWriter, type Person, serializeCommit, serializeTree, type TreeEntry } from './objects.js';

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

export interface CommitResult {
  /** The new commit, or null when the changes left the tree as it was (no commit made). */
  commit: string | null;
  head: string;
}

type Dir = Map<string, TreeEntry>;

const BLOB_MODE = '100644';
const TREE_MODE = '40000';
/** Working-tree paths written since the last checkpoint, restored from HEAD after a crash. */
const UNSYNCED = 'aami-unsynced.json';
const COMMITTER: Author = { name: 'aami', email: 'aami@localhost' };

export interface StoreOptions {
  fs: Fs;
  dir: string;
  branch?: string;
  now?: () => number;
  /** How long after the last commit the index is rewritten and the working tree flushed, so a burst does it once. */
  idleDelayMs?: number;
}

/**
 * The Git repository as a store of files. Reads go through isomorphic-git (it understands
 * packs); writes build blobs, trees and the commit directly and move the branch ref, never
 * touching the index on the way (see git-index.ts), then bring the working tree in step.
 * Not safe for concurrent callers: the writer queue serializes every call to commit().
 */
export class GitStore {
  private readonly fs: Fs;
  readonly dir: string;
  readonly gitdir: string;
  readonly branch: string;
  private readonly now: () => number;
  private readonly objects: ObjectWriter;
  private readonly idleDelayMs: number;

  private headOid: string | null = null;
  /** Trees of HEAD by directory path ('' is the root), filled on demand. */
  private trees = new Map<string, Dir>();
  private rootOid: string | null = null;
  private stats = new Map<string, BigIntStats>();
  private unsynced = new Set<string>();
  private idleTimer: NodeJS.Timeout | undefined;
  private checkpointing: Promise<void> = Promise.resolve();

  private constructor(options: StoreOptions) {
    this.fs = options.fs;
    this.dir = options.dir;
    this.gitdir = `${options.dir}/.git`;
    this.branch = options.branch ?? 'main';
    this.now = options.now ?? Date.now;
    this.idleDelayMs = options.idleDelayMs ?? 1000;
    this.objects = new ObjectWriter(this.fs, this.gitdir);
  }

  static async open(options: StoreOptions): Promise<GitStore> {
    const store = new GitStore(options);
    if (!(await exists(options.fs, `${store.gitdir}/HEAD`))) {
      throw new Error(`${options.dir} is not a Git repository (no .git/HEAD)`);
    }
    await store.reloadHead();
    await store.recoverWorkingTree();
    return store;
  }

  /** Create a repository whose first commit holds `files`. */
  static async init(options: StoreOptions & { files: Change[]; author: Author; message?: string }): Promise<GitStore> {
    await options.fs.promises.mkdir(options.dir, { recursive: true });
    await git.init({ fs: options.fs, dir: options.dir, defaultBranch: options.branch ?? 'main' });
    const store = await GitStore.open(options);
    await store.commit({ message: options.message ?? 'Initialize config repo', author: options.author, changes: options.files });
    await store.checkpoint();
    return store;
  }

  head(): string | null {
    return this.headOid;
  }

  /**
   * Apply the changes as one commit on the branch. Resolves once the objects and the ref are
   * durable and the working tree shows the commit. Working-tree files are not fsync'd one
   * by one: their paths go into a durable list first, so after a crash they are rewritten
   * from HEAD, and they are flushed together when the writer goes idle (checkpoint).
   */
  async commit(request: CommitRequest): Promise<CommitResult> {
    await this.reloadHeadIfMoved();
    const staged = new Map<string, Dir>();
    const prepared: Array<{ oid: string; write: () => Promise<void> }> = [];
    const dirOf = async (path: string): Promise<Dir> => {
      let entries = staged.get(path);
      if (!entries) {
        entries = new Map(await this.readDir(path));
        staged.set(path, entries);
      }
      return entries;
    };

    for (const change of request.changes) {
      const parts = change.path.split('/');
      const name = parts.pop()!;
      const parent = await dirOf(parts.join('/'));
      if (change.content === null) {
        parent.delete(name);
      } else {
        const blob = this.objects.prepare('blob', Buffer.from(change.content));
        prepared.push(blob);
        parent.set(name, { mode: BLOB_MODE, oid: blob.oid, type: 'blob' });
      }
      // Every directory on the way down must be staged so its new oid reaches the root.
      for (let depth = parts.length - 1; depth >= 0; depth--) await dirOf(parts.slice(0, depth).join('/'));
    }

    const byDepth = [...staged.keys()].sort((a, b) => depthOf(b) - depthOf(a));
    for (const path of byDepth) {
      const entries = staged.get(path)!;
      if (path === '') continue;
      const parent = staged.get(parentOf(path))!;
      const name = path.slice(path.lastIndexOf('/') + 1);
      if (entries.size === 0) {
        parent.delete(name); // Git has no empty directories
        continue;
      }
      const tree = this.objects.prepare('tree', serializeTree(entries));
      prepared.push(tree);
      parent.set(name, { mode: TREE_MODE, oid: tree.oid, type: 'tree' });
    }
    const root = this.objects.prepare('tree', serializeTree(staged.get('') ?? (await dirOf(''))));
    if (root.oid === this.rootOid) return { commit: null, head: this.headOid! };
    prepared.push(root);

    const when = Math.floor(this.now() / 1000);
    const commit = this.objects.prepare(
      'commit',
      serializeCommit({
        tree: root.oid,
        parents: this.headOid ? [this.headOid] : [],
        author: { ...request.author, timestamp: when } satisfies Person,
        committer: { ...COMMITTER, timestamp: when },
        message: withTrailers(request.message, request.trailers),
      }),
    );
    prepared.push(commit);

    // The unsynced list may name paths of a commit that never lands: rewriting them from HEAD is harmless.
    for (const { path } of request.changes) this.unsynced.add(path);
    await Promise.all([
      ...prepared.map((object) => object.write()),
      writeFileDurably(this.fs, `${this.gitdir}/${UNSYNCED}`, JSON.stringify([...this.unsynced])),
    ]);
    await this.syncObjectDirs(prepared.map((object) => object.oid));
    await writeFileDurably(this.fs, `${this.gitdir}/refs/heads/${this.branch}`, `${commit.oid}\n`);

    // The commit is durable; adopt its trees, then make the working tree match.
    for (const [path, entries] of staged) this.trees.set(path, entries);
    for (const path of staged.keys()) if (!this.isLive(path)) this.trees.delete(path);
    this.headOid = commit.oid;
    this.rootOid = root.oid;
    await this.writeWorkingTree(request.changes);
    this.scheduleCheckpoint();
    return { commit: commit.oid, head: commit.oid };
  }

  /** Every file at HEAD, by path. */
  async listFiles(): Promise<Map<string, string>> {
    const files = new Map<string, string>();
    const walk = async (path: string): Promise<void> => {
      for (const [name, entry] of await this.readDir(path)) {
        const full = path ? `${path}/${name}` : name;
        if (entry.type === 'tree') await walk(full);
        else if (entry.type === 'blob') files.set(full, entry.oid);
      }
    };
    if (this.rootOid) await walk('');
    return files;
  }

  async readBlob(oid: string): Promise<string> {
    const { blob } = await git.readBlob({ fs: this.fs, gitdir: this.gitdir, oid });
    return Buffer.from(blob).toString('utf8');
  }

  /** Flush the working tree and write the index for HEAD now, instead of when the writer goes idle. */
  async checkpoint(): Promise<void> {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.checkpointing = this.checkpointing.then(async () => {
      await this.syncWorkingTree();
      await this.writeIndex();
    });
    await this.checkpointing;
  }

  async close(): Promise<void> {
    await this.checkpoint();
  }

  private scheduleCheckpoint(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => void this.checkpoint().catch(() => this.scheduleCheckpoint()), this.idleDelayMs);
    this.idleTimer.unref?.();
  }

  private async syncWorkingTree(): Promise<void> {
    if (!this.unsynced.size) return;
    const paths = [...this.unsynced];
    await Promise.all(paths.map((path) => syncPath(this.fs, `${this.dir}/${path}`)));
    await Promise.all([...new Set(paths.map((path) => dirname(`${this.dir}/${path}`)))].map((dir) => syncPath(this.fs, dir)));
    // Paths written while we flushed stay listed for the next checkpoint.
    for (const path of paths) this.unsynced.delete(path);
    if (this.unsynced.size) await writeFileDurably(this.fs, `${this.gitdir}/${UNSYNCED}`, JSON.stringify([...this.unsynced]));
    else await this.fs.promises.rm(`${this.gitdir}/${UNSYNCED}`, { force: true });
  }

  private async writeIndex(): Promise<void> {
    const entries: IndexEntry[] = [];
    for (const [path, oid] of await this.listFiles()) {
      let stat = this.stats.get(path);
      if (!stat) {
        stat = await this.fs.promises.lstat(`${this.dir}/${path}`, { bigint: true }).catch(() => undefined);
        if (stat) this.stats.set(path, stat);
      }
      entries.push({ path, oid, mode: 0o100644, stat });
    }
    // Take index.lock as Git does, so a `git` command running at the same moment fails cleanly instead of racing us.
    const lock = `${this.gitdir}/index.lock`;
    let handle;
    try {
      handle = await this.fs.promises.open(lock, 'wx');
    } catch {
      this.scheduleCheckpoint(); // a git command holds it: try again later
      return;
    }
    try {
      await handle.writeFile(serializeIndex(entries));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await this.fs.promises.rename(lock, `${this.gitdir}/index`);
  }

  private async writeWorkingTree(changes: Change[]): Promise<void> {
    await Promise.all(
      changes.map(async ({ path, content }) => {
        const full = `${this.dir}/${path}`;
        this.stats.delete(path);
        if (content === null) {
          await this.fs.promises.rm(full, { force: true });
          await this.removeEmptyParents(dirname(path));
          return;
        }
        await this.fs.promises.mkdir(dirname(full), { recursive: true });
        await writeFileDurably(this.fs, full, content, false);
      }),
    );
  }

  private async removeEmptyParents(path: string): Promise<void> {
    for (let dir = path; dir !== '.' && dir !== ''; dir = dirname(dir)) {
      try {
        await this.fs.promises.rmdir(`${this.dir}/${dir}`);
      } catch {
        return; // not empty (or already gone)
      }
    }
  }

  /**
   * Move the branch to another commit whose objects are already here (a fetched remote tip,
   * or the commit before one the remote refused) and bring these paths of the working tree
   * to it. Returns the paths' new contents (null: deleted).
   */
  async moveTo(commit: string, paths: string[]): Promise<Change[]> {
    for (const path of paths) this.unsynced.add(path);
    await writeFileDurably(this.fs, `${this.gitdir}/${UNSYNCED}`, JSON.stringify([...this.unsynced]));
    await writeFileDurably(this.fs, `${this.gitdir}/refs/heads/${this.branch}`, `${commit}\n`);
    await this.reloadHead();
    const changes = await this.contentsAtHead(paths);
    await this.writeWorkingTree(changes);
    this.scheduleCheckpoint();
    return changes;
  }

  private async contentsAtHead(paths: string[]): Promise<Change[]> {
    const files = await this.listFiles();
    return Promise.all(paths.map(async (path) => ({ path, content: files.has(path) ? await this.readBlob(files.get(path)!) : null })));
  }

  /** After a crash, the files written since the last checkpoint may be stale or torn: rewrite them from HEAD. */
  private async recoverWorkingTree(): Promise<void> {
    const marker = `${this.gitdir}/${UNSYNCED}`;
    if (!(await exists(this.fs, marker))) return;
    const paths = JSON.parse(await this.fs.promises.readFile(marker, 'utf8')) as string[];
    await this.writeWorkingTree(await this.contentsAtHead(paths));
    for (const path of paths) this.unsynced.add(path);
    await this.checkpoint();
  }

  private isLive(path: string): boolean {
    if (path === '') return true;
    const parent = this.trees.get(parentOf(path));
    return parent?.get(path.slice(path.lastIndexOf('/') + 1))?.type === 'tree' && this.isLive(parentOf(path));
  }

  private async readDir(path: string): Promise<Dir> {
    const cached = this.trees.get(path);
    if (cached) return cached;
    let oid: string | undefined;
    if (path === '') {
      oid = this.rootOid ?? undefined;
    } else {
      const entry = (await this.readDir(parentOf(path))).get(path.slice(path.lastIndexOf('/') + 1));
      oid = entry?.type === 'tree' ? entry.oid : undefined;
    }
    const entries: Dir = new Map();
    if (oid) {
      const { tree } = await git.readTree({ fs: this.fs, gitdir: this.gitdir, oid });
      // isomorphic-git reports sub-trees as "040000"; Git writes (and fsck wants) "40000".
      for (const e of tree) entries.set(e.path, { mode: e.type === 'tree' ? TREE_MODE : e.mode, oid: e.oid, type: e.type });
    }
    this.trees.set(path, entries);
    return entries;
  }

  private async reloadHead(): Promise<void> {
    this.headOid = await git.resolveRef({ fs: this.fs, gitdir: this.gitdir, ref: `refs/heads/${this.branch}` }).catch(() => null);
    this.rootOid = this.headOid
      ? (await git.readCommit({ fs: this.fs, gitdir: this.gitdir, oid: this.headOid })).commit.tree
      : null;
    this.trees.clear();
  }

  /** Someone else (the `git` CLI, a pull) moved the branch: forget the cached trees. */
  private async reloadHeadIfMoved(): Promise<void> {
    const current = await git.resolveRef({ fs: this.fs, gitdir: this.gitdir, ref: `refs/heads/${this.branch}` }).catch(() => null);
    if (current !== this.headOid) await this.reloadHead();
  }

  private async syncObjectDirs(oids: string[]): Promise<void> {
    const dirs = new Set(oids.map((oid) => `${this.gitdir}/objects/${oid.slice(0, 2)}`));
    await Promise.all([...dirs].map((dir) => syncPath(this.fs, dir)));
  }
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
