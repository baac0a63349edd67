import * as fs from 'node:fs';
import { join } from 'node:path';
import { openNew, PROCESS_TAG, tempPathOf } from '../git/fs.js';

interface LockOptions {
  /** How often the holder renews its lease: server.pid's mtime (default 5 s). */
  renewMs?: number;
  /** A lease not renewed for this long is a dead holder's (default three renewals). */
  leaseMs?: number;
  /** Told when a start waits for the lease of a holder in another pid namespace. */
  waiting?: (holder: { pid: number; namespace: string; leaseMs: number }) => void;
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
 * (another container on the same volume, both pid 1) cannot be looked up: its lease tells
 * instead. The holder renews the file's mtime every `renewMs`; a start that finds another
 * namespace's file waits one lease and takes it over only if it was not renewed meanwhile (a
 * container killed: a start of its successor waits up to a lease, ~15 s). Returns the release.
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
      const renewal = setInterval(() => renew(file, mine), renewMs);
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
    // `ns=` is absent from the files of servers before it: taken as this namespace.
    const fields = held.trim().split(' ');
    const namespace = fields.find((field) => field.startsWith('ns='))?.slice(3) ?? NAMESPACE;
    const named = fields.filter((field) => !field.startsWith('ns=')).join(' ');
    const pid = Number(fields[0]);
    if (namespace !== NAMESPACE) {
      const lease = await leaseOf(file, held, leaseMs, () => options.waiting?.({ pid, namespace, leaseMs }));
      if (lease === 'renewed') {
        throw new Error(`another server (pid ${pid} in another pid namespace: another container on this volume?) is using the state directory ${dir}: each server needs its own --state-dir (if none runs, remove ${file})`);
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

/** This process's pid namespace (`pid:[4026531836]`): servers in two containers on one volume are both pid 1. */
const NAMESPACE = (() => {
  try {
    return fs.readlinkSync('/proc/self/ns/pid');
  } catch {
    return 'unknown';
  }
})();

/** The lease is renewed while its holder runs: the file's mtime moves on. */
function renew(file: string, mine: string): void {
  try {
    if (read(file) !== mine) return;
    const now = new Date();
    fs.utimesSync(file, now, now);
  } catch {
    // the next renewal tries again
  }
}

/**
 * Whether the holder of `held` (in another pid namespace) still runs: its file's mtime is
 * watched for one lease. 'expired': not renewed for a whole lease (or gone); 'renewed': it
 * moved; 'changed': someone else's file now.
 */
async function leaseOf(file: string, held: string, leaseMs: number, waiting: () => void): Promise<'expired' | 'renewed' | 'changed'> {
  const mtime = () => fs.statSync(file, { throwIfNoEntry: false })?.mtimeMs;
  const first = mtime();
  if (first === undefined) return 'changed';
  const due = first + leaseMs;
  if (Date.now() < due) {
    waiting();
    await new Promise((resolve) => setTimeout(resolve, due - Date.now()));
  }
  const now = mtime();
  if (now === undefined || read(file) !== held) return 'changed';
  return now === first ? 'expired' : 'renewed';
}

function read(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
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
    const boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    return `${pid} ${started} ${boot}`;
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
