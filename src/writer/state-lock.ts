import * as fs from 'node:fs';
import { join } from 'node:path';
import { openNew, PROCESS_TAG, tempPathOf } from '../git/fs.js';

interface LockOptions {
  /** How often the holder renews its lease: server.pid's mtime (default 5 s). */
  renewMs?: number;
  /** A lease not renewed for this long is a dead holder's (default three renewals). */
  leaseMs?: number;
  /** Told when a start waits for the lease of a holder in another pid namespace or on another host. */
  waiting?: (holder: { pid: number; namespace: string; leaseMs: number }) => void;
  /** Told, once each, when a renewal fails or finds the file another server's: two servers may now use the directory. */
  trouble?: (what: string) => void;
}

/**
 * One server to a state directory. Two would append to one parse cache, each numbering the
 * values it shares its own way (a line of one then reads values the other redefined: a later
 * start served a target in another group than Git says), and overwrite each other's catalog
 * state, heartbeats and restart image.
 *
 * `server.pid` names the server using it: its pid, its start time, the boot it runs in and its
 * pid namespace (`ns=`; Linux's /proc). Made whole under a temp name and linked into place, so nobody
 * reads it half written. A file whose process is gone — not running, or another process now
 * (a pid reused after a crash or a reboot) — is taken over. A server in another pid namespace
 * (another container on the same volume, both pid 1) or on another host cannot be looked up:
 * its lease tells instead. The holder renews the file's mtime every `renewMs`; a start that
 * finds such a file waits one lease and takes it over only if it was not renewed meanwhile (a
 * container killed: its successor's start waits a lease, 15 s), at once if it was last renewed
 * long ago. A holder whose renewal fails or finds another's file says so (`trouble`). Returns
 * the release.
 */
export async function lockStateDir(dir: string, options: LockOptions = {}): Promise<() => void> {
  const renewMs = options.renewMs ?? 5000;
  const leaseMs = options.leaseMs ?? 3 * renewMs;
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, 'server.pid');
  const mine = `${identity(process.pid)} ns=${NAMESPACE}\n`;
  // This process's own name (a container's servers are all pid 1), which clearLeftoverTemps
  // knows: what a kill left there is removed at a later start.
  const temp = tempPathOf(file, `${process.pid}.${PROCESS_TAG}.0`);
  for (let attempt = 1; attempt <= 5; attempt++) {
    // Made new: a link planted at the name is removed, never written through.
    const handle = await openNew(fs, temp, 0o600);
    try {
      await handle.writeFile(mine);
    } finally {
      await handle.close();
    }
    try {
      fs.linkSync(temp, file);
      const told = new Set<string>();
      const renewal = setInterval(() => {
        const what = renew(file, mine);
        if (what && !told.has(what)) {
          told.add(what);
          options.trouble?.(what);
        }
      }, renewMs);
      renewal.unref();
      return () => {
        clearInterval(renewal);
        // Only its own: a file another server took over after this one was thought gone stays.
        if (read(file) === mine) fs.rmSync(file, { force: true });
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    } finally {
      fs.rmSync(temp, { force: true });
    }
    const held = read(file);
    if (held === undefined) continue; // gone meanwhile: try again
    const fields = held.trim().split(' ');
    const namespace = fields.find((field) => field.startsWith('ns='))?.slice(3);
    const named = fields.filter((field) => !field.startsWith('ns=')).join(' ');
    const pid = Number(fields[0]);
    // Its pid can be looked up here only in this pid namespace of this boot: every host's root
    // namespace has the same id, and containers on two hosts can have one too. (`ns=` is absent
    // from the files of servers before it: looked up as before.)
    if (namespace !== undefined && (namespace !== NAMESPACE || fields[2] !== BOOT)) {
      const lease = await leaseOf(file, held, leaseMs, () => options.waiting?.({ pid, namespace, leaseMs }));
      if (lease === 'renewed') {
        throw new Error(`another server (pid ${pid} in another pid namespace or on another host: another container on this volume?) is using the state directory ${dir}: each server needs its own --state-dir (if none runs, remove ${file})`);
      }
      if (lease === 'changed') continue;
    } else if (pid !== process.pid && identity(pid) === named) {
      throw new Error(`another server (pid ${pid}) is using the state directory ${dir}: each server needs its own --state-dir (stop that one first, or give this one another directory; if no server runs, remove ${file})`);
    }
    // Its server is gone. Taken aside first and looked at again: another starting server may
    // have taken it over and made its own between our reading and our removing.
    const aside = tempPathOf(file, `${process.pid}.${PROCESS_TAG}.1`);
    try {
      fs.renameSync(file, aside);
    } catch {
      continue;
    }
    if (read(aside) !== held) {
      try {
        fs.linkSync(aside, file); // not the stale one: back where it was
      } catch {
        // taken meanwhile by yet another: the next attempt sees who
      }
    }
    fs.rmSync(aside, { force: true });
  }
  throw new Error(`cannot take the state directory ${dir}: ${file} kept changing (servers starting at once?); try again`);
}

/** This boot's id: a pid, and a pid namespace's id, say something only within one boot of one host. */
const BOOT = (() => {
  try {
    return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
})();

/** This process's pid namespace (`pid:[4026531836]`): servers in two containers on one volume are both pid 1. */
const NAMESPACE = (() => {
  try {
    return fs.readlinkSync('/proc/self/ns/pid');
  } catch {
    return 'unknown';
  }
})();

/** The lease is renewed while its holder runs: the file's mtime moves on. Answers what went wrong, if anything. */
function renew(file: string, mine: string): string | undefined {
  if (read(file) !== mine) return `${file} is no longer this server's: another server may have taken the state directory over (this one's renewals stalled, or someone removed the file)`;
  try {
    const now = new Date();
    fs.utimesSync(file, now, now);
  } catch (error) {
    return `renewing ${file} failed (${(error as Error).message}): a server starting in another container could take the state directory over`;
  }
  return undefined;
}

/**
 * Whether the holder of `held` (in another pid namespace, or on another host) still runs: its
 * file is watched for one lease, timed by this process's own clock (the holder's clock, or the
 * file server's, may differ from ours). 'expired': not renewed for a whole lease, or last
 * renewed long ago; 'renewed': it moved; 'changed': someone else's file now, or gone.
 */
async function leaseOf(file: string, held: string, leaseMs: number, waiting: () => void): Promise<'expired' | 'renewed' | 'changed'> {
  const first = observe(file);
  if (first?.text !== held) return 'changed';
  // Far older than a lease, even with some clock skew: a holder long gone (a start after a crash, a reboot).
  if (Date.now() - first.mtimeMs > 4 * leaseMs) return 'expired';
  waiting();
  await new Promise((resolve) => setTimeout(resolve, leaseMs));
  const then = observe(file);
  if (then?.text !== held) return 'changed';
  return then.mtimeMs === first.mtimeMs ? 'expired' : 'renewed';
}

/** The file's text and mtime, from one open file (the attributes of a file on NFS may be cached apart from its name). */
function observe(file: string): { text: string; mtimeMs: number } | undefined {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    return { text: fs.readFileSync(fd, 'utf8'), mtimeMs: fs.fstatSync(fd).mtimeMs };
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

function read(file: string): string | undefined {
  return observe(file)?.text;
}

/**
 * What names a running process here: its pid, its start time (in clock ticks since boot) and
 * the boot's id. Where /proc cannot tell (not Linux), the pid alone and whether it runs: then
 * a process that runs with that pid counts as the server.
 */
function identity(pid: number): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const started = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    if (BOOT === 'unknown') throw new Error('no boot id');
    return `${pid} ${started} ${BOOT}`;
  } catch {
    if (!fs.existsSync('/proc/self/stat')) {
      try {
        process.kill(pid, 0);
        return `${pid}`;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EPERM') return `${pid}`;
      }
    }
    return `${pid} gone`;
  }
}
