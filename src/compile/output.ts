import { constants } from 'node:fs';
import { type Fs, leftoverTemp, PROCESS_TAG, type SpareFile, spareFileOf, syncPath, tempPathOf, writeFileDurably } from '../git/fs.js';
import { PMap } from '../catalog/pmap.js';
import { sameParts, totalLength } from './compiler.js';
import { inLanes } from '../lanes.js';
import { dirname } from 'node:path';

/**
 * How an SD file is opened to be read back: a link is not followed, and a FIFO put in its
 * place does not block (opened to be read, it waits until a writer opens it: synchronously,
 * the event loop; by the thread pool, a thread each). The file is then checked to be a file.
 */
export const READ_FILE_ONLY = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** SD files written at once (each waits for its own fsync). */
const WRITES_IN_FLIGHT = 16;

/**
 * Files at least this big are written into a spare file kept from the write before (see
 * SdOutput.fromSpare). A new file takes pages and disk blocks, and the one it replaces gives
 * them back at the rename; where freed memory goes back to the host, as on this VM, pages
 * taken anew cost more still. Measured at 100k targets (two jobs' files of 37 MB, indented as they
 * were then; bench/idle.ts, a registration every 10.5 s): with new files, 117-119 ms of server
 * CPU a registration and the SD file 137-143 ms after its answer; written over, 21-24 ms and
 * 28-30 ms. Since, written from the chunk that changed on (fromSpare): 13-16 ms and 9-19 ms
 * for a host that sorts at the end or amid the others, ~20 ms and ~25 ms for one that sorts first.
 */
export const SPARE_FROM = 1 << 20;

/**
 * How long a replaced file is left as it was before it is written again as the spare: a
 * reader that opened it before it was replaced has long finished with it (Prometheus reads
 * the file whole at each change; a read of 37 MB takes 20-40 ms here). A reader held up
 * longer would read a torn file: Prometheus then keeps the targets it had (a file it cannot
 * read removes none), and reads the file again at the rename that follows.
 */
export const RETIRED_MS = 10_000;

/** A while after leftoverTemp takes another process's temp file as a leftover (two minutes). */
export const LOOK_AGAIN_MS = 150_000;

export interface OutputOptions {
  /** Files at least this big are written into a spare (SPARE_FROM); by default none is (a one-shot write). */
  spareFrom?: number;
  /** Milliseconds on a monotonic clock (tests move it). */
  now?: () => number;
}

export interface OutputResult {
  written: string[];
  removed: string[];
}

/**
 * Puts the compiler's files in the SD directory. Prometheus re-reads a file_sd file on every
 * change event, so a file is only rewritten when its bytes differ, each write is atomic
 * (temp name outside `*.json`, fsync, rename), and `*.json` files we no longer produce are
 * deleted so a removed job does not keep scraping stale targets.
 */
export class SdOutput {
  /** What we last wrote, so an unchanged file is not even read back. */
  private readonly written = new Map<string, Buffer[]>();
  /**
   * The files of the last write that succeeded; undefined before the first and after a
   * failed one. While every one of them is still written, no file can have gone stale.
   */
  private last: ReadonlyMap<string, Buffer | Buffer[]> | undefined;
  /** Subdirectories made (group shards), known while writes succeed. */
  private readonly dirs = new Set<string>();

  /** Names whose spare holds the file they last replaced, and when (see fromSpare). */
  private readonly retired = new Map<string, number>();
  /** Each big file this process put in place, as it wrote it (see fromSpare). */
  private readonly placed = new Map<string, { ino: number; mtimeMs: number }>();
  /**
   * What each spare holds (see fromSpare): the first chunks of the file it was, those the
   * version that replaced it shares (no others can come back: holding them would keep a whole
   * old version of the file in memory), and the spare as it was left, to be known again.
   */
  private readonly spareHolds = new Map<string, { parts: Buffer[]; file: SpareFile }>();
  private readonly spareFrom: number;
  /** Whether the first write looked for what other processes left, and the timer of the look again. */
  private leftoversLooked = false;
  private lookAgain: NodeJS.Timeout | undefined;
  private readonly now: () => number;

  constructor(
    private readonly fs: Fs,
    readonly dir: string,
    options: OutputOptions = {},
  ) {
    this.spareFrom = options.spareFrom ?? Infinity;
    this.now = options.now ?? (() => performance.now());
  }

  /** Files known to be on disk as given (read back whole by a restart): not written again while a compile gives the same bytes. */
  adopt(files: ReadonlyMap<string, Buffer[]>): void {
    for (const [name, parts] of files) this.written.set(name, parts);
  }

  /**
   * Each file is given whole or as the buffers that make it up (see Compiler.compile); a
   * name may sit one directory down (`node/gpu.json`, the group layout). Given the next
   * version of the persistent map it last wrote, only the files that map names as changed
   * are looked at: a registration at 100k targets in the group layout looks at its group's
   * shards, not 2,000 (a walk of every name and two sets of them, ~1 ms a compile).
   * `beforeChange` is called before each file is renamed into place or removed.
   */
  async write(files: ReadonlyMap<string, Buffer | Buffer[]>, beforeChange?: () => void): Promise<OutputResult> {
    // A write that fails part way may have put a file we will not name again: list the directory next time.
    const last = this.last;
    this.last = undefined;
    const changed = last instanceof PMap && files instanceof PMap ? files.changedSince(last) : undefined;
    if (!changed) {
      this.dirs.clear();
      await this.fs.promises.mkdir(this.dir, { recursive: true });
    }
    const result: OutputResult = { written: [], removed: [] };
    const remove = async (name: string) => {
      if (name.includes('/')) await this.shardDirectory(name.slice(0, name.lastIndexOf('/')));
      beforeChange?.();
      await this.fs.promises.rm(`${this.dir}/${name}`, { force: true });
      this.written.delete(name); // gone, even if its spare cannot be removed: written again if it comes back
      await this.dropSpare(name);
      result.removed.push(name);
    };
    const removedFrom = new Set<string>();
    const one = async (name: string, readBack: { buffer?: Buffer }) => {
      const content = files.get(name);
      const sub = name.includes('/') ? name.slice(0, name.lastIndexOf('/')) : undefined;
      if (content === undefined) {
        // Named by the last write only (a shard whose group has no target left): a removed group must not keep scraping.
        await remove(name);
        removedFrom.add(sub ? `${this.dir}/${sub}` : this.dir);
        return;
      }
      const parts = Array.isArray(content) ? content : [content];
      const previous = this.written.get(name);
      if (sameParts(previous, parts)) {
        if (previous !== parts) this.written.set(name, parts); // hold the compile's parts: the same bytes read from disk (adopted) can go
        return;
      }
      if (sub) {
        if (!this.dirs.has(sub)) {
          await this.fs.promises.mkdir(`${this.dir}/${sub}`, { recursive: true });
          this.dirs.add(sub);
        }
        // At every write, not once: one lstat beside the write's fsync.
        await this.shardDirectory(sub);
      }
      // Only when we have not written this file yet (a restart) is it worth reading it back.
      if (previous || !(await this.onDiskAlready(name, parts, readBack))) {
        // Whole before it is named (Prometheus never reads half a file, even after a power cut), but the
        // rename is not synced: a crash that undoes it is no worse than one just before this write, and
        // the next start compiles again (a file it takes as it is is checked by the compile that follows).
        if (totalLength(parts) >= this.spareFrom) await this.fromSpare(name, parts, previous, beforeChange);
        else {
          await this.dropSpare(name);
          await writeFileDurably(this.fs, `${this.dir}/${name}`, parts, 'contents', undefined, beforeChange);
        }
        result.written.push(name);
      }
      this.written.set(name, parts);
    };
    // Several files at a time: each write waits for its fsync, and one after the other the
    // 2,000 shards of a first start at 100k targets (group layout) took ~7 s, the server idle.
    // Every lane finishes before the write answers, failed or not: a file still being written
    // after a failure was answered could be renamed over by the retry's newer one.
    await inLanes([...(changed ?? files.keys())], WRITES_IN_FLIGHT, () => {
      const readBack: { buffer?: Buffer } = {};
      return (name) => one(name, readBack);
    });
    for (const dir of removedFrom) await syncPath(this.fs, dir);
    // Files we no longer produce go, one directory down too: a removed job or group must not keep scraping.
    const removeStale = async (sub: string) => {
      const dir = sub ? `${this.dir}/${sub}` : this.dir;
      let removed = false;
      for (const entry of await this.fs.promises.readdir(dir, { withFileTypes: true })) {
        const name = sub ? `${sub}/${String(entry.name)}` : String(entry.name);
        if (!sub && entry.isDirectory()) await removeStale(name);
        if (!entry.isFile() || !name.endsWith('.json') || files.has(name)) continue;
        await remove(name);
        removed = true;
      }
      if (removed) await syncPath(this.fs, dir);
    };
    // Only a first write (files left by an earlier run), one after a failure and one that dropped a name can leave a stale file.
    if (!changed && (!last || [...last.keys()].some((name) => !files.has(name)))) await removeStale('');
    if (!last && !this.leftoversLooked) {
      // What other processes left, at the first write and once more later: a server killed and started again at once left files younger than leftoverTemp takes.
      this.leftoversLooked = true;
      await this.removeLeftovers().catch(() => undefined); // best effort: they are not this write's
      this.lookAgain = setTimeout(() => void this.removeLeftovers().catch(() => undefined), LOOK_AGAIN_MS);
      this.lookAgain.unref();
    }
    this.last = files;
    // In name order, whatever order the lanes and the directory listing took them in.
    result.written.sort();
    result.removed.sort();
    return result;
  }

  /**
   * Throws unless a job's shard directory (the group layout) is a directory, not a link: one
   * put in its place (an SD directory others can write) would have the server write and
   * remove its files wherever it points. The write fails, the files keep what they had, and
   * health names the path until it is put right. A link swapped in between this look and the
   * write is not seen (Node has no openat): the SD directory stays the server's alone.
   */
  private async shardDirectory(sub: string): Promise<void> {
    const path = `${this.dir}/${sub}`;
    const stat = await this.fs.promises.lstat(path).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined; // nothing there: nothing to write through
      throw error;
    });
    if (stat && !stat.isDirectory()) throw new Error(`${path} is not a directory (a link?): the SD files of job "${sub}" are not written through it`);
  }

  /** Removes the spare files (best effort): a later process makes its own. */
  async close(): Promise<void> {
    clearTimeout(this.lookAgain);
    for (const name of [...this.retired.keys()]) await this.dropSpare(name).catch(() => undefined);
  }

  /**
   * Removes, here and one directory down, the temp files and spares other processes left
   * (leftoverTemp): dot files Prometheus's glob skips, but an SD file's can be tens of MB.
   */
  private async removeLeftovers(sub = ''): Promise<void> {
    const dir = sub ? `${this.dir}/${sub}` : this.dir;
    for (const entry of await this.fs.promises.readdir(dir, { withFileTypes: true })) {
      const name = String(entry.name);
      if (!sub && entry.isDirectory()) await this.removeLeftovers(name);
      if (!entry.isFile() || !name.endsWith('.tmp')) continue;
      // One gone meanwhile (this process's own temp renamed, another's removed) is passed over, not the end of the look.
      const stat = await this.fs.promises.lstat(`${dir}/${name}`).catch(() => undefined);
      if (stat && leftoverTemp(name, stat.mtimeMs)) await this.fs.promises.rm(`${dir}/${name}`, { force: true }).catch(() => undefined);
    }
  }

  /**
   * Writes a big file as writeFileDurably does ('contents': whole and synced before it is
   * named), but into the file it replaced the time before, kept as this name's spare: its
   * pages and disk blocks are written over, not taken anew and given back (see SPARE_FROM).
   * The spare is written only once it was replaced RETIRED_MS ago (a younger one is left to
   * be replaced in turn); one that is not a plain file of one name is never written through
   * (openSpare). Spare names are this process's own, like temp names: two servers on one
   * directory never write one file.
   *
   * The spare holds the chunks of the file it was (`previous` then): the chunks the new
   * version shares with it from the start (the compiler hands back unchanged chunks as the
   * same buffers) are there already, and only the rest is written, from the first that
   * differs: a registration at 100k targets writes the 37 MB file from the host it adds on
   * (at the end: one chunk; at the start: all of it). Only while the spare is the file this
   * process left (its inode, size, last write and last change): one changed or put there by
   * anyone else is written whole.
   */
  private async fromSpare(name: string, parts: Buffer[], previous: Buffer[] | undefined, beforeChange?: () => void): Promise<void> {
    const path = `${this.dir}/${name}`;
    const spare = spareOf(path);
    const retired = this.retired.get(name);
    const reuse = retired !== undefined && this.now() - retired >= RETIRED_MS;
    let kept: { parts: number; bytes: number; file: SpareFile } | undefined;
    if (reuse) {
      // The renames that made it the spare were not synced: a power cut before they are on disk must not find it the SD file, half written.
      await syncPath(this.fs, dirname(path));
      this.retired.delete(name); // written over from here on: not a spare until it is one again below
      const holds = this.spareHolds.get(name);
      this.spareHolds.delete(name);
      const shared = holds ? sharedStart(holds.parts, parts) : undefined;
      if (shared?.parts) kept = { ...shared, file: holds!.file };
    }
    // The file it replaces is kept under a second name first, to become the next spare: only
    // the file this process put there (another's, kept, could be of another user or mode).
    const keptPath = tempPathOf(path, `${process.pid}.${PROCESS_TAG}.kept`);
    const placed = this.placed.get(name);
    let keeps = false;
    const keep = async () => {
      beforeChange?.();
      if (placed === undefined) return;
      try {
        await this.fs.promises.rm(keptPath, { force: true });
        await this.fs.promises.link(path, keptPath);
        // The inode number and the time it was last written: a number freed is soon given to a new file.
        const stat = await this.fs.promises.lstat(keptPath);
        keeps = stat.ino === placed.ino && stat.mtimeMs === placed.mtimeMs;
      } catch {
        // nothing there, or no hard links on this file system: no spare, only a saving lost
      }
      if (!keeps) await this.fs.promises.rm(keptPath, { force: true }).catch(() => undefined);
    };
    this.placed.delete(name);
    try {
      this.placed.set(name, await writeFileDurably(this.fs, path, parts, 'contents', 0o644, keep, reuse ? spare : undefined, kept));
    } catch (error) {
      await this.fs.promises.rm(keptPath, { force: true }).catch(() => undefined);
      throw error;
    }
    if (!keeps) return;
    // The new file is in place: a spare that cannot be kept is only a saving lost.
    this.spareHolds.delete(name); // what the spare held goes now, whatever comes of the rename
    try {
      await this.fs.promises.rename(keptPath, spare);
    } catch {
      await this.fs.promises.rm(keptPath, { force: true }).catch(() => undefined);
      return;
    }
    this.retired.set(name, this.now());
    // Known again by its inode, size, last write and last change (a rename sets that: looked at after it).
    const file = await this.fs.promises.lstat(spare).catch(() => undefined);
    const shared = previous ? sharedStart(previous, parts).parts : 0;
    if (file && shared) this.spareHolds.set(name, { parts: previous!.slice(0, shared), file: spareFileOf(file) });
  }

  /** Removes a name's spare (the file it belonged to is removed, or small now). */
  private async dropSpare(name: string): Promise<void> {
    this.placed.delete(name);
    if (!this.retired.has(name)) return;
    await this.fs.promises.rm(spareOf(`${this.dir}/${name}`), { force: true });
    this.retired.delete(name);
    this.spareHolds.delete(name);
  }

  /**
   * Whether the file on disk holds these bytes already, read into one buffer reused for every
   * file a lane of a write checks: a buffer each (2,000 shards of ~35 KB at 100k targets, group layout) was
   * taken from the allocator's heap between the compile's slabs, and freed left holes the
   * process kept (~30 MB of RSS after a start-up that compiled).
   */
  private async onDiskAlready(name: string, parts: Buffer[], readBack: { buffer?: Buffer }): Promise<boolean> {
    const size = totalLength(parts);
    let handle: Awaited<ReturnType<Fs['promises']['open']>> | undefined;
    try {
      handle = await this.fs.promises.open(`${this.dir}/${name}`, READ_FILE_ONLY);
      const stat = await handle.stat();
      if (!stat.isFile() || stat.size !== size) return false;
      if (!readBack.buffer || readBack.buffer.length < size) readBack.buffer = Buffer.allocUnsafeSlow(size);
      const bytes = readBack.buffer.subarray(0, size);
      const { bytesRead } = await handle.read(bytes, 0, size, 0);
      // Grown while it was read (a writer next to the server): not what it was.
      return bytesRead === size && (await handle.stat()).size === size && sameParts([bytes], parts);
    } catch {
      return false; // missing or unreadable: written
    } finally {
      await handle?.close().catch(() => undefined);
    }
  }
}

/** How many of the first chunks of `a` and `b` are the same bytes in memory, and their length. */
function sharedStart(a: Buffer[], b: Buffer[]): { parts: number; bytes: number } {
  let parts = 0;
  let bytes = 0;
  for (const n = Math.min(a.length, b.length); parts < n && sameBytes(a[parts]!, b[parts]!); parts++) bytes += a[parts]!.length;
  return { parts, bytes };
}

/** Whether two chunks are the same bytes in memory: one buffer, or views of one stretch of it. */
function sameBytes(a: Buffer, b: Buffer): boolean {
  return a === b || (a.buffer === b.buffer && a.byteOffset === b.byteOffset && a.length === b.length);
}

/** The spare of an SD file (SdOutput.fromSpare): a temp name of this process's, outside `*.json`. */
const spareOf = (path: string) => tempPathOf(path, `${process.pid}.${PROCESS_TAG}.spare`);
