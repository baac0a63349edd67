import * as fs from 'node:fs';
import { join } from 'node:path';

/**
 * One server to a state directory. Two would append to one parse cache, each numbering the
 * values it shares its own way (a line of one then reads values the other redefined: a later
 * start served a target in another group than Git says), and overwrite each other's catalog
 * state, heartbeats and restart image. `server.pid` holds the pid of the server using it; a
 * file whose process is gone (a kill -9, a crash) is taken over. Returns the release.
 */
export function lockStateDir(dir: string): () => void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, 'server.pid');
  for (let attempt = 1; ; attempt++) {
    try {
      fs.writeFileSync(file, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      return () => {
        // Only its own: a file another server took over after this one was thought gone stays.
        if (readPid(file) === process.pid) fs.rmSync(file, { force: true });
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 2) throw error;
    }
    const pid = readPid(file);
    if (pid !== undefined && pid !== process.pid && isServer(pid)) {
      throw new Error(`another server (pid ${pid}) is using the state directory ${dir}: each server needs its own --state-dir (stop that one first, or give this one another directory)`);
    }
    fs.rmSync(file, { force: true }); // its server is gone
  }
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `pid` runs, and (where /proc tells) runs a server: a pid reused by another program after a crash is not one. */
function isServer(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('serve');
  } catch {
    return true; // no /proc to ask: it runs, so it may be one
  }
}
