import type * as nodeFs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { dirname } from 'node:path';

/** node:fs or a memfs volume: the store and the compiler take either. */
export type Fs = typeof nodeFs;

/**
 * Write a file so that a reader sees the old or the new content, never a torn one, and (when
 * durable) the new content survives a crash once this resolves: temp name in the same directory, fsync,
 * rename over the target, fsync the directory. The temp name starts with "." and ends in
 * ".tmp" so that neither the watcher nor Prometheus's `*.json` glob ever picks it up.
 *
 * 'contents': the bytes are on disk before the rename, so even after a power cut the name
 * holds the old file or the new one, whole; but the rename may be undone by one (for files
 * made again from Git at start-up, like the SD files: one fsync a write fewer).
 * `beforeRename` is awaited just before the new content takes the name. `data` as chunks is
 * written as they come; the file as written (its stat) is returned. `spare`: a temp name of
 * this process's whose file, if it is there (openSpare), is written over rather than a new
 * file made (big files: see SdOutput's SPARE_FROM); `kept`: the first `parts` of `data` (as
 * chunks) are in that spare already, its first `bytes`, while the file opened is still `file`:
 * only the rest is written, from there.
 */
export async function writeFileDurably(fs: Fs, path: string, data: string | Uint8Array | Buffer[] | AsyncIterable<string>, durable: boolean | 'contents' = true, mode = 0o644, beforeRename?: () => void | Promise<void>, spare?: string, kept?: { parts: number; bytes: number; file: SpareFile }): Promise<nodeFs.Stats> {
  const dir = dirname(path);
  const tmp = spare ?? tempPathOf(path, `${process.pid}.${PROCESS_TAG}.${tmpCounter++}`);
  let written: nodeFs.Stats;
  try {
    const handle = spare ? await openSpare(fs, tmp, mode) : await openNew(fs, tmp, mode);
    try {
      let size = 0;
      if (Array.isArray(data)) {
        for (const part of data) size += part.length;
        // The spare as it was left, not a file made anew in its place (openSpare: an empty one would
        // hold zeros where the kept bytes go) nor one changed or put there since (its last change too).
        const from = spare && kept && sameFile(await handle.stat(), kept.file) ? kept : { parts: 0, bytes: 0 };
        // One request, which stops without an error at a write that fails after some were made (a disk full part way).
        const { bytesWritten } = await handle.writev(from.parts ? data.slice(from.parts) : data, from.bytes);
        if (bytesWritten !== size - from.bytes) throw new Error(`${path}: ${from.bytes + bytesWritten} of ${size} bytes written (a full disk?)`);
      } else if (typeof data === 'string' || data instanceof Uint8Array) {
        await handle.writeFile(data);
        size = typeof data === 'string' ? Buffer.byteLength(data) : data.length;
      } else {
        // Streamed: written as it is made (a thrown chunk leaves no file behind).
        for await (const chunk of data) {
          await handle.writeFile(chunk);
          size += Buffer.byteLength(chunk);
        }
      }
      if (spare) await handle.truncate(size); // what is left of a longer file it held
      if (durable) await handle.sync();
      written = await handle.stat();
    } finally {
      await handle.close();
    }
    await beforeRename?.();
    await fs.promises.rename(tmp, path);
  } catch (error) {
    // A full disk or a read-only moment must not leave temp files behind.
    await fs.promises.rm(tmp, { force: true }).catch(() => undefined);
    throw error;
  }
  if (durable === true) await syncPath(fs, dir);
  return written;
}

/** A file as it was left, to be known again: its inode, size, last write and last change (a rename or link sets that). */
export type SpareFile = { ino: number; size: number; mtimeMs: number; ctimeMs: number };

export function spareFileOf(stat: nodeFs.Stats): SpareFile {
  return { ino: stat.ino, size: stat.size, mtimeMs: stat.mtimeMs, ctimeMs: stat.ctimeMs };
}

function sameFile(stat: nodeFs.Stats, file: SpareFile): boolean {
  return stat.ino === file.ino && stat.size === file.size && stat.mtimeMs === file.mtimeMs && stat.ctimeMs === file.ctimeMs;
}

let tmpCounter = 0;
/**
 * Told apart from every other process's temp names, not by the pid alone: servers in two
 * containers on one volume are both pid 1, and their temp files had one name (each
 * truncating or, made new, removing the other's mid-write: a pack renamed under the wrong
 * name, a commit whose objects are gone).
 */
export const PROCESS_TAG = `t${randomBytes(4).toString('hex')}`; // a letter first: never read as a number in a name

/**
 * Make a temp file, new (O_EXCL): a name already there is never written through. A link
 * planted there in a directory others can write (an SD directory shared with Prometheus's
 * group) would have had the server truncate and write the file it points to. Temp names are
 * this process's alone (PROCESS_TAG): what is there was put there, and is removed (a link,
 * never what it points to) before the file is made anew.
 */
export async function openNew(fs: Fs, path: string, mode: number): Promise<nodeFs.promises.FileHandle> {
  try {
    return await fs.promises.open(path, 'wx', mode);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    await fs.promises.rm(path, { force: true });
    return fs.promises.open(path, 'wx', mode);
  }
}

/** openNew, in the calling thread: see fsyncFd. */
export function openNewSync(fs: Fs, path: string, mode: number): number {
  try {
    return fs.openSync(path, 'wx', mode);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    fs.rmSync(path, { force: true });
    return fs.openSync(path, 'wx', mode);
  }
}

/** Write all of `data` at the file's offset, in the calling thread (see fsyncFd); a full disk throws ENOSPC. */
export function writeAllSync(fs: Fs, fd: number, data: Uint8Array): void {
  for (let offset = 0; offset < data.length; ) {
    const written = fs.writeSync(fd, data, offset, data.length - offset);
    if (written <= 0) throw new Error(`${offset} of ${data.length} bytes written (a full disk?)`);
    offset += written;
  }
}

/**
 * fsync an open file on the thread pool: the one step of a small durable write that waits
 * on the disk. The others (open, a write of a few KB into the page cache, close, rename) are
 * made in the calling thread: each fs.promises call cost ~35 µs of CPU to hand to a pool
 * thread and back (a FileHandle more to make), ~10× the system call itself (an open, write
 * and close of a 200-byte file: ~115 µs async, ~12 µs in the thread). A commit's pack and ref
 * took 21 such calls.
 */
export function fsyncFd(fs: Fs, fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fsync(fd, (error) => (error ? reject(error) : resolve())));
}

/**
 * A file to be written over from its start: `path` if it is a plain file of this process's
 * user with no other name, else made anew (openNew). A link, a second name of another file,
 * or another user's file put there (a state or SD directory others can write) is never
 * written through.
 */
export async function openSpare(fs: Fs, path: string, mode: number): Promise<nodeFs.promises.FileHandle> {
  try {
    const handle = await fs.promises.open(path, constants.O_RDWR | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    const stat = await handle.stat().catch(() => undefined);
    if (stat?.isFile() && stat.nlink === 1 && stat.uid === process.geteuid?.()) return handle;
    await handle.close();
  } catch {
    // gone, or a link: made anew
  }
  return openNew(fs, path, mode);
}

/** A temp name for `path`, told apart by `tag`: the one form writeFileDurably writes and clearTempsOf clears. */
export function tempPathOf(path: string, tag: string): string {
  const dir = dirname(path);
  return `${dir}/.${path.slice(dir.length + 1)}.${tag}.tmp`;
}

/**
 * Remove, best effort, the temp files (`.NAME.*.tmp`) left for `path` by a process killed
 * mid-write — writeFileDurably's, or another's named so (one file at a time: only at start-up).
 */
export function clearTempsOf(fs: Fs, path: string): void {
  const dir = dirname(path);
  const prefix = `.${path.slice(dir.length + 1)}.`;
  try {
    for (const name of fs.readdirSync(dir) as string[]) if (name.startsWith(prefix) && name.endsWith('.tmp')) fs.rmSync(`${dir}/${name}`, { force: true });
  } catch {
    // left for the next start
  }
}

/**
 * Whether `name`, last written at `mtimeMs`, is a temp file writeFileDurably made in another
 * process (`.NAME.<pid>.<tag>.<n>.tmp`, or `.NAME.<pid>.<n>.tmp` before tags; an SD file's
 * spare, `.NAME.<pid>.<tag>.spare.tmp`, and `….kept.tmp`: see SdOutput) older than a write
 * takes: a leftover of a process killed mid-write. Its name never comes back (the tag), so
 * nothing else would ever remove it.
 */
export function leftoverTemp(name: string, mtimeMs: number): boolean {
  const match = /^\..+\.\d+\.(?:(t[0-9a-f]{8})\.)?(?:\d+|spare|kept)\.tmp$/.exec(name);
  return match !== null && match[1] !== PROCESS_TAG && mtimeMs < Date.now() - 120_000;
}

/** Remove, best effort, the leftovers in `dir` (leftoverTemp); the names removed. */
export function clearLeftoverTemps(fs: Fs, dir: string): string[] {
  const removed: string[] = [];
  let entries: nodeFs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return removed; // left for the next start
  }
  for (const entry of entries) {
    const name = String(entry.name);
    if (!entry.isFile() || !name.endsWith('.tmp')) continue;
    // One that cannot be looked at or removed (gone meanwhile, EACCES) is left: not the end of the look.
    try {
      if (!leftoverTemp(name, fs.lstatSync(`${dir}/${name}`).mtimeMs)) continue;
      fs.rmSync(`${dir}/${name}`, { force: true });
      removed.push(name);
    } catch {
      // left for the next start
    }
  }
  return removed;
}

/**
 * fsync a path: a file written earlier without it, or a directory to make a rename or
 * unlink in it durable. A path that is gone has nothing to flush, and some file systems
 * cannot open or fsync a directory: both are no-ops. Any other error (EIO) is thrown: what
 * was renamed may not be on disk, so the write it belongs to must not be acknowledged. Only
 * the fsync goes to the thread pool (fsyncFd).
 */
export async function syncPath(fs: Fs, path: string): Promise<void> {
  let fd: number | undefined;
  try {
    fd = fs.openSync(path, 'r');
    await fsyncFd(fs, fd);
  } catch (error) {
    if (!NOTHING_TO_SYNC.has((error as NodeJS.ErrnoException).code ?? '')) throw error;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** syncPath, blocking: at start-up, before anything is served. */
export function syncPathSync(fs: Fs, path: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(path, 'r');
    fs.fsyncSync(fd);
  } catch (error) {
    if (!NOTHING_TO_SYNC.has((error as NodeJS.ErrnoException).code ?? '')) throw error;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
const NOTHING_TO_SYNC = new Set(['ENOENT', 'EISDIR', 'EINVAL', 'ENOTSUP', 'EOPNOTSUPP']);

export async function exists(fs: Fs, path: string): Promise<boolean> {
  try {
    await fs.promises.stat(path);
    return true;
  } catch {
    return false;
  }
}
