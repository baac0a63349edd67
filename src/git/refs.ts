import * as nodeFs from 'node:fs';
import { dirname } from 'node:path';
import { type Fs, fsyncFd, syncPath, writeAllSync } from './fs.js';

/**
 * The value of a branch ref: its loose file, else its line in packed-refs; null when the
 * branch does not exist. Throws when the repository itself cannot be read (moved away,
 * unreadable): that is a fault to report, not an empty branch.
 */
export async function readRef(gitdir: string, ref: string, fs: Fs = nodeFs): Promise<string | null> {
  try {
    // Read synchronously: 41 bytes from the page cache take ~10 µs, where an fs.promises
    // readFile (open, stat, read, close: four trips to the thread pool) costs ~200 µs of
    // CPU, and the writer reads the ref several times a commit.
    const text = fs.readFileSync(`${gitdir}/${ref}`, 'utf8');
    const oid = text.trim();
    if (/^[0-9a-f]{40}$/.test(oid)) return oid;
    throw new Error(`${gitdir}/${ref} does not hold an object id`);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  await fs.promises.access(`${gitdir}/HEAD`); // the repository is there at all
  const packed = await fs.promises.readFile(`${gitdir}/packed-refs`, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return '';
    throw error;
  });
  for (const line of packed.split('\n')) {
    if (line.endsWith(` ${ref}`) && /^[0-9a-f]{40} /.test(line)) return line.slice(0, 40);
  }
  return null;
}

export type SwapResult = { kind: 'swapped' } | { kind: 'moved'; current: string | null } | { kind: 'locked'; since: Date };

/** A lock older than this is left over by a process that died holding it, not one at work. */
export const STALE_LOCK_MS = 120_000;

/**
 * At start-up: a lock on the ref that is still there, unchanged, after `waitMs` was left by
 * a process that died holding it (a server killed mid-commit, say), and is removed, so
 * writes need not wait STALE_LOCK_MS for it. A live `git push` holds it for milliseconds;
 * one that takes the lock anew during the wait makes a new file, which is left alone.
 * Answers the path removed, if any.
 */
export async function clearLeftoverLock(gitdir: string, ref: string, waitMs = 2000): Promise<string | undefined> {
  const lock = `${gitdir}/${ref}.lock`;
  const first = await nodeFs.promises.stat(lock).catch(() => undefined);
  if (!first) return undefined;
  for (const started = Date.now(); Date.now() - started < waitMs; ) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    const now = await nodeFs.promises.stat(lock).catch(() => undefined);
    if (!now || now.ino !== first.ino || now.mtimeMs !== first.mtimeMs) return undefined;
  }
  await nodeFs.promises.rm(lock, { force: true });
  return lock;
}

/**
 * Move a ref from `expected` to `next` by git's own lock-file protocol: create `<ref>.lock`
 * exclusively, check the current value under the lock, write the new one into the lock,
 * fsync, rename over the ref, fsync the directory. `git push` into this repository and
 * `git update-ref` take the same lock, so neither side can overwrite the other's commit:
 * whoever comes second sees the ref moved and replays on top of it.
 *
 * A lock held by someone else answers 'locked'; one older than STALE_LOCK_MS is removed
 * (its holder is gone) and the swap is tried again.
 */
export async function swapRef(gitdir: string, ref: string, expected: string | null, next: string, fs: Fs = nodeFs, madeDir = false): Promise<SwapResult> {
  const path = `${gitdir}/${ref}`;
  const lock = `${path}.lock`;
  // The lock is made, written, closed and renamed in this thread; only the fsyncs wait on the pool (fsyncFd).
  let fd: number | undefined;
  try {
    fd = fs.openSync(lock, 'wx', 0o644);
  } catch (error) {
    // The first commit of a branch whose directory is not there yet (refs/heads in a new repository): made once, not looked for on every swap.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' && !madeDir) {
      await fs.promises.mkdir(dirname(path), { recursive: true });
      return swapRef(gitdir, ref, expected, next, fs, true);
    }
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    const stat = await fs.promises.stat(lock).catch(() => undefined);
    if (!stat) return swapRef(gitdir, ref, expected, next, fs); // released meanwhile
    if (Date.now() - stat.mtimeMs > STALE_LOCK_MS) {
      await fs.promises.rm(lock, { force: true });
      return swapRef(gitdir, ref, expected, next, fs);
    }
    return { kind: 'locked', since: stat.mtime };
  }
  let renamed = false;
  try {
    const current = await readRef(gitdir, ref, fs);
    if (current !== expected) return { kind: 'moved', current };
    writeAllSync(fs, fd, Buffer.from(`${next}\n`));
    await fsyncFd(fs, fd);
    const closing = fd;
    fd = undefined; // closed even when close reports an error
    fs.closeSync(closing);
    fs.renameSync(lock, path);
    renamed = true;
  } finally {
    if (!renamed) {
      if (fd !== undefined) {
        try {
          fs.closeSync(fd);
        } catch {
          // closed all the same
        }
      }
      await fs.promises.rm(lock, { force: true }).catch(() => undefined);
    }
  }
  await syncPath(fs, dirname(path));
  return { kind: 'swapped' };
}
