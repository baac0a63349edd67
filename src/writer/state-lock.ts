import * as fs from 'node:fs';
import { join } from 'node:path';
import { PROCESS_TAG, tempPathOf } from '../git/fs.js';

/**
 * One server to a state directory. Two would append to one parse cache, each numbering the
 * values it shares its own way (a line of one then reads values the other redefined: a later
 * start served a target in another group than Git says), and overwrite each other's catalog
 * state, heartbeats and restart image.
 *
 * `server.pid` names the server using it: its pid, its start time and the boot it runs in
 * (Linux's /proc). Made whole under a temp name and linked into place, so nobody reads it
 * half written. A file whose process is gone — not running, or another process now (a pid
 * reused after a crash or a reboot) — is taken over. Servers in other pid namespaces (two
 * containers on one volume) cannot see each other this way: give each its own directory.
 * Returns the release.
 */
export function lockStateDir(dir: string): () => void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, 'server.pid');
  const mine = identity(process.pid);
  // This process's own name (a container's servers are all pid 1), which clearLeftoverTemps
  // knows: what a kill left there is removed at a later start.
  const temp = tempPathOf(file, `${process.pid}.${PROCESS_TAG}.0`);
  for (let attempt = 1; attempt <= 5; attempt++) {
    // Made new: a link planted at the name is removed, never written through.
    fs.rmSync(temp, { force: true });
    fs.writeFileSync(temp, mine, { mode: 0o600, flag: 'wx' });
    try {
      fs.linkSync(temp, file);
      return () => {
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
    const pid = Number(held.split(' ')[0]);
    if (pid !== process.pid && identity(pid) === held) {
      throw new Error(`another server (pid ${pid}) is using the state directory ${dir}: each server needs its own --state-dir (stop that one first, or give this one another directory; if no server runs, remove ${file})`);
    }
    // Its server is gone. Taken aside first and looked at again: another starting server may
    // have taken it over and made its own between our reading and our removing.
    const aside = join(dir, `.server.pid.${process.pid}.stale`);
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

function read(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * What names a running process here: its pid, its start time (in clock ticks since boot) and
 * the boot's id, one line. Where /proc cannot tell (not Linux), the pid alone and whether it
 * runs: then a process that runs with that pid counts as the server.
 */
function identity(pid: number): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const started = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    const boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    return `${pid} ${started} ${boot}\n`;
  } catch {
    if (!fs.existsSync('/proc/self/stat')) {
      try {
        process.kill(pid, 0);
        return `${pid}\n`;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EPERM') return `${pid}\n`;
      }
    }
    return `${pid} gone\n`;
  }
}
