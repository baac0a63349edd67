import { createHash, hash } from 'node:crypto';
import { crc32, deflateSync } from 'node:zlib';
import { fsyncFd, openNewSync, PROCESS_TAG, syncPath, writeAllSync, type Fs } from './fs.js';
import { STALE_LOCK_MS } from './refs.js';

export type ObjectType = 'blob' | 'tree' | 'commit';

export interface TreeEntry {
  /** As the tree holds it: '100644', '100755', '120000', '40000', '160000' as written, or what another tool wrote ('040000', '100664'): `type` says what Git reads it as. */
  mode: string;
  oid: string;
  type: 'blob' | 'tree' | 'commit';
}

/**
 * An object's id: the sha1 of its header and content. A small one is hashed in one call over
 * both joined; a big one (a tree of thousands of entries, ~480 KB at 10k targets in one
 * directory) by two updates, not copied first (~0.17 ms a commit).
 */
export function hashObject(type: ObjectType, content: Uint8Array): { oid: string } {
  const header = `${type} ${content.length}\0`;
  if (content.length < 16_384) return { oid: hash('sha1', Buffer.concat([Buffer.from(header), content]), 'hex') };
  return { oid: createHash('sha1').update(header).update(content).digest('hex') };
}

export interface Person {
  name: string;
  email: string;
  /** Seconds since the epoch; pinned in tests so commit ids compare exactly. */
  timestamp: number;
  timezoneOffset?: number; // minutes, as Date#getTimezoneOffset
}

function formatPerson({ name, email, timestamp, timezoneOffset = 0 }: Person): string {
  const sign = timezoneOffset > 0 ? '-' : '+';
  const abs = Math.abs(timezoneOffset);
  const tz = `${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}${String(abs % 60).padStart(2, '0')}`;
  return `${personText(name)} <${personText(email)}> ${timestamp} ${tz}`;
}

/** Git's person fields cannot hold "<", ">" or control characters (`git fsck --strict` rejects them). */
const personText = (text: string) => text.replace(/[<>\p{Cc}]/gu, '');

/**
 * A commit message carries names that came from requests: no control characters but the
 * newlines and tabs that shape it, so `git fsck --strict` and every log reader stay happy.
 */
export function cleanMessage(message: string): string {
  return message.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]/g, '');
}

export function serializeCommit(commit: {
  tree: string;
  parents: string[];
  author: Person;
  committer: Person;
  message: string;
}): Buffer {
  const lines = [`tree ${commit.tree}`, ...commit.parents.map((p) => `parent ${p}`)];
  lines.push(`author ${formatPerson(commit.author)}`, `committer ${formatPerson(commit.committer)}`);
  const cleaned = cleanMessage(commit.message);
  const message = cleaned.endsWith('\n') ? cleaned : `${cleaned}\n`;
  return Buffer.from(`${lines.join('\n')}\n\n${message}`);
}

const PACK_TYPES: Record<ObjectType, number> = { commit: 1, tree: 2, blob: 3 };

/**
 * A commit's new objects written as one pack (and its index) with Node's native sha1, zlib
 * and crc32: two files and three fsyncs a commit, where loose objects cost one fsync an
 * object (a batch of 60 registrations writes ~130 objects). isomorphic-git's writeTree hashes
 * and deflates in JavaScript: on a 10k-entry tree that is ~60 ms a commit against ~8 ms here
 * (see MEASUREMENTS.md). Packs pile up, one a commit: `git repack` folds them together now
 * and then (see repository.ts).
 */
export class ObjectWriter {
  /**
   * Where the temp files of a pack are written: the top of the repository, not `objects/pack`
   * as git's own are. A `git clone /path/to/repo` hard-links every file under `objects/` and
   * gives up on one whose size changes under it ("hardlink different from source"), which a
   * pack being written did; renamed into `objects/pack` only whole, a pack never changes
   * there. Where that rename cannot be made (`objects/` on another file system, a top
   * directory the server may not write), `objects/pack` it is, from the first write that
   * fails at the top and works there on.
   */
  private tempDir: string;

  constructor(
    private readonly fs: Fs,
    private readonly gitdir: string,
  ) {
    this.tempDir = gitdir;
  }

  /**
   * Write the objects and make them durable: the pack and its index are written and fsync'd
   * side by side (the disk settles both in one wait, not two), and only once both are on
   * disk are they named, the pack first (Git sees a pack only once its index is there); then
   * the pack directory is fsync'd — a ref must never point at an object a crash can take
   * back. The directory the temp files left is not: after a power cut a temp name may come
   * back beside the pack's, a second name of the same file, which start-up removes
   * (clearLeftoverPackTemps). A failed write leaves no temp file.
   */
  async writeAll(objects: Array<{ oid: string; type: ObjectType; content: Buffer }>): Promise<void> {
    if (!objects.length) return;
    const pack = buildPack(objects);
    try {
      await this.writePack(pack, this.tempDir);
    } catch (error) {
      if (this.tempDir !== this.gitdir || !CANNOT_MOVE_IN.has((error as NodeJS.ErrnoException).code ?? '')) throw error;
      const beside = `${this.gitdir}/objects/pack`;
      await this.writePack(pack, beside);
      // Only once it worked there: a repository that could not be written at all for a moment (read-only) keeps its temp files at the top.
      this.tempDir = beside;
    }
  }

  private async writePack({ pack, index, name }: ReturnType<typeof buildPack>, tempDir: string): Promise<void> {
    const dir = `${this.gitdir}/objects/pack`;
    let created = false;
    const temps = [pack, index].map(() => `${tempDir}/${tempName(process.pid, tmpCounter++)}`);
    const writeBoth = () => Promise.allSettled([this.writeSynced(temps[0]!, pack), this.writeSynced(temps[1]!, index)]);
    const makeDir = async () => {
      // The first pack of a repository with no objects/pack yet: made once, not looked for on every commit.
      created = (await this.fs.promises.mkdir(dir, { recursive: true })) !== undefined;
    };
    const moveIn = async (temp: string, path: string) => {
      try {
        this.fs.renameSync(temp, path);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || created) throw error;
        await makeDir();
        this.fs.renameSync(temp, path);
      }
    };
    try {
      // Both settle before any clean-up: a temp file still being written when the other failed would be left behind.
      let written = await writeBoth();
      if (tempDir === dir && written.some((result) => result.status === 'rejected' && (result.reason as NodeJS.ErrnoException).code === 'ENOENT')) {
        await makeDir();
        written = await writeBoth();
      }
      for (const result of written) if (result.status === 'rejected') throw result.reason;
      await moveIn(temps[0]!, `${dir}/pack-${name}.pack`);
      await moveIn(temps[1]!, `${dir}/pack-${name}.idx`);
    } catch (error) {
      await Promise.all(temps.map((tmp) => this.fs.promises.rm(tmp, { force: true }).catch(() => undefined)));
      throw error;
    }
    await syncPath(this.fs, dir);
    if (created) for (const parent of [`${this.gitdir}/objects`, this.gitdir]) await syncPath(this.fs, parent);
  }

  /** Made, written and closed in this thread; only the fsync waits on the pool (fsyncFd). */
  private async writeSynced(path: string, data: Buffer): Promise<void> {
    const fd = openNewSync(this.fs, path, 0o444);
    try {
      writeAllSync(this.fs, fd, data);
      await fsyncFd(this.fs, fd);
    } finally {
      this.fs.closeSync(fd);
    }
  }
}
let tmpCounter = 0;
/** The temp files of packs being written: `<gitdir>/.aami-pack-<pid>-<PROCESS_TAG>-<n>.tmp` (or in objects/pack, see tempDir), and how start-up knows them. */
const tempName = (pid: number, n: number) => `.aami-pack-${pid}-${PROCESS_TAG}-${n}.tmp`;
/** Named by tempName, or by a server before PROCESS_TAG (no tag). */
const TEMP_NAME = /^\.aami-pack-(\d+)-(?:t[0-9a-f]{8}-)?\d+\.tmp$/;
/** What servers before them wrote in objects/pack (git's own temp packs are `tmp_pack_XXXXXX`). */
const OLD_TEMP_NAME = /^tmp_pack_(\d+)_\d+$/;
/** A temp file at the top of the repository cannot be renamed into objects/pack, or not be made there. */
const CANNOT_MOVE_IN = new Set(['EXDEV', 'EACCES', 'EPERM']);

/**
 * At start-up: remove what a process that died mid-write left of a pack. Its temp files at
 * the top of the repository — and in `objects/pack`, where writes fall back to and where
 * servers before wrote them (OLD_TEMP_NAME) — and a pack whose
 * index never got its name (a crash between the two renames: git cannot read it, and
 * `git count-objects` calls it garbage). Only what is older than STALE_LOCK_MS: a write
 * renames its files within milliseconds, so a younger one may belong to a write at work
 * (another server starting on the same repository, whose pid another container hides).
 * A temp file is also left alone while the process it names runs (the pid may be another
 * program's now: the file then waits for a later start); our own pid's is a leftover too
 * (in a container every start is pid 1). Answers the paths removed.
 */
export async function clearLeftoverPackTemps(fs: Fs, gitdir: string, now = Date.now()): Promise<string[]> {
  const removed: string[] = [];
  const remove = async (path: string, renamed: boolean) => {
    const stat = await fs.promises.stat(path).catch(() => undefined);
    // A pack's rename into place sets its ctime, not its mtime: one written over minutes and
    // renamed a moment ago is a write at work, whose index gets its name next.
    if (!stat || now - (renamed ? Math.max(stat.mtimeMs, stat.ctimeMs) : stat.mtimeMs) < STALE_LOCK_MS) return;
    // One that cannot be removed (EACCES) is left for a later start: not the end of the look, nor of this start.
    if (await fs.promises.rm(path, { force: true }).then(() => true, () => false)) removed.push(path);
  };
  const packDir = `${gitdir}/objects/pack`;
  for (const dir of [gitdir, packDir]) {
    const names = new Set(await fs.promises.readdir(dir).catch(() => [] as string[]));
    for (const name of names) {
      const temp = TEMP_NAME.exec(name) ?? (dir === packDir ? OLD_TEMP_NAME.exec(name) : null);
      const deadTemp = temp !== null && (Number(temp[1]) === process.pid || !running(Number(temp[1])));
      const orphanPack = dir === packDir && /^pack-[0-9a-f]{40,64}\.pack$/.test(name) && !names.has(name.replace(/\.pack$/, '.idx'));
      if (deadTemp || orphanPack) await remove(`${dir}/${name}`, orphanPack);
    }
  }
  return removed;
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'; // there, but someone else's
  }
}

/**
 * A version 2 pack of whole (undeltified) objects, and its version 2 index. The pack is
 * written straight into one buffer, its entries' checksums taken over slices of it: a 480 KB
 * tree was copied three times (its entry, the body, the body and its sum).
 */
export function buildPack(objects: Array<{ oid: string; type: ObjectType; content: Buffer }>): { pack: Buffer; index: Buffer; name: string } {
  const unique = [...new Map(objects.map((o) => [o.oid, o])).values()];
  const parts = unique.map(({ oid, type, content }) => {
    // Type and size: 3 bits of type and 4 of size in the first byte, 7 bits of size in each next one.
    const head: number[] = [];
    let size = content.length;
    let byte = (PACK_TYPES[type] << 4) | (size & 0x0f);
    size >>>= 4;
    while (size > 0) {
      head.push(byte | 0x80);
      byte = size & 0x7f;
      size >>>= 7;
    }
    head.push(byte);
    // Trees stored (see stored()); blobs and commits deflated: Git reuses an object's bytes when it
    // repacks, so a blob stored here would stay uncompressed in every pack and clone after.
    return { oid, head, data: type === 'tree' ? stored(content) : deflated(content) };
  });
  let length = 12 + 20;
  for (const { head, data } of parts) length += head.length + data.length;
  const pack = Buffer.allocUnsafe(length);
  pack.write('PACK', 0, 'latin1');
  pack.writeUInt32BE(2, 4);
  pack.writeUInt32BE(unique.length, 8);
  const entries: Array<{ oid: string; offset: number; crc: number }> = [];
  let offset = 12;
  for (const { oid, head, data } of parts) {
    const start = offset;
    for (const byte of head) pack[offset++] = byte;
    offset += data.copy(pack, offset);
    entries.push({ oid, offset: start, crc: crc32(pack.subarray(start, offset)) });
  }
  const packSum = hash('sha1', pack.subarray(0, offset), 'buffer');
  packSum.copy(pack, offset);

  entries.sort(byOid);
  const fanout = Buffer.alloc(256 * 4);
  for (let i = 0, e = 0; i < 256; i++) {
    while (e < entries.length && parseInt(entries[e]!.oid.slice(0, 2), 16) <= i) e++;
    fanout.writeUInt32BE(e, i * 4);
  }
  const names = Buffer.concat(entries.map((e) => Buffer.from(e.oid, 'hex')));
  const crcs = Buffer.alloc(entries.length * 4);
  const offsets = Buffer.alloc(entries.length * 4);
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    crcs.writeUInt32BE(e.crc, i * 4);
    // A version 2 index keeps offsets past 2^31 in a table of its own: never needed for one commit's objects.
    if (e.offset >= 2 ** 31) throw new Error(`a pack of ${pack.length} bytes is too large for one commit`);
    offsets.writeUInt32BE(e.offset, i * 4);
  }
  const indexBody = Buffer.concat([Buffer.from([0xff, 0x74, 0x4f, 0x63, 0, 0, 0, 2]), fanout, names, crcs, offsets, packSum]);
  const index = Buffer.concat([indexBody, hash('sha1', indexBody, 'buffer')]);
  return { pack, index, name: packSum.toString('hex') };
}

/** A module function, not an arrow made on every call (see sameCuts in compiler.ts). */
function byOid(a: { oid: string }, b: { oid: string }): number {
  return a.oid < b.oid ? -1 : 1;
}

/**
 * `content` deflated by zlib with a window and a hash table no bigger than it needs: whole
 * ones (32 KB, ~256 KB of compressor state to allocate and clear) for every small blob cost
 * a one-client registration ~0.58 ms of main thread for its three objects, ~0.44 ms sized
 * (a deflateSync is ~30 µs in a loop: the server's are cold). A window that holds the whole
 * input (and zlib's 262-byte lookahead) compresses about as well (the smaller hash table
 * costs a few bytes on some inputs of a few KB); any zlib reader takes the stream (its
 * header names the window).
 */
function deflated(content: Buffer): Buffer {
  const windowBits = Math.min(15, Math.max(9, Math.ceil(Math.log2(content.length + 262))));
  // Output room for a small input's whole stream (zlib's compressBound, which counts its header
  // and Adler-32), not zlib's default 16 KB: for inputs under ~4 KB (the files of one target or
  // token, a commit) the output buffer then comes from Node's shared pool. A buffer of 16 KB for
  // each blob and commit, three a registration, was a quarter of the buffer memory one client's
  // registrations took (bench:register, 10k targets), each freed only by a collection. An output
  // past the room takes a second chunk: never wrong.
  const n = content.length;
  const chunkSize = Math.min(16 * 1024, Math.max(64, n + (n >>> 12) + (n >>> 14) + (n >>> 25) + 13));
  return deflateSync(content, { level: 1, windowBits, memLevel: Math.max(1, windowBits - 7), chunkSize });
}

/**
 * `content` as a zlib stream of stored (uncompressed) blocks, what Git's `core.compression 0`
 * writes. A commit writes the trees on its changed paths again, some of thousands of entries,
 * mostly object ids that do not compress: each deflateSync at level 1 cost ~260 µs for a
 * 19 KB tree (~80 µs of it setting up the compressor), where storing costs a copy and an
 * Adler-32. zlib's level 0 does both natively in one output buffer: ~0.16 ms for a 480 KB
 * tree, where blocks cut and summed in JavaScript took ~0.8 ms. `git repack` (repository.ts)
 * then stores most trees as compressed deltas against other versions: 400 one-registration
 * commits grew the packs 9-14 % more than deflating them.
 */
function stored(content: Buffer): Buffer {
  // A stored block holds up to 65,535 bytes behind a 5-byte header; 2 bytes of zlib header and a 4-byte Adler-32 around them.
  const size = content.length + 5 * (Math.ceil(content.length / 65_535) + 1) + 6;
  return deflateSync(content, { level: 0, windowBits: 9, memLevel: 1, chunkSize: Math.max(64, size) });
}
