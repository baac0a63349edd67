import * as fs from 'node:fs';
import { basename, dirname } from 'node:path';

export interface RefWatcher {
  close(): void;
}

/**
 * Tell when the branch ref may have moved: a `git push` into the server's repository, a
 * `git update-ref`, a `git gc` packing refs. The server does not need file events for its
 * own commits (it applied them already), so it watches two directories (the ref's and the
 * repository's, for packed-refs), not the thousands of files of a working tree. A poll
 * backs the events up: an event can be missed, and a repository moved away and back
 * gives none at all. Only the names that can move the branch count: the ref and
 * packed-refs (renamed over from their locks), or an event without a name — not the temp
 * packs the server writes at the top of the repository (objects.ts). A watched directory
 * that is removed or moved (a branch's directory that `git pack-refs --prune` empties)
 * tells it under its own name: from then on the poll alone follows that branch.
 */
export function watchRef(gitdir: string, ref: string, onChange: () => void, pollMs = 1000, debounceMs = 10): RefWatcher {
  let timer: NodeJS.Timeout | undefined;
  const fire = () => {
    clearTimeout(timer);
    timer = setTimeout(onChange, debounceMs);
  };
  const names = new Set([basename(ref), 'packed-refs']);
  const watchers: fs.FSWatcher[] = [];
  for (const dir of new Set([dirname(`${gitdir}/${ref}`), gitdir])) {
    try {
      const watcher = fs.watch(dir, { persistent: false }, (_, name) => {
        if (!name || names.has(name)) fire();
      });
      watcher.on('error', () => watcher.close());
      watchers.push(watcher);
    } catch {
      // the directory is not there (yet): the poll covers it
    }
  }
  const poll = setInterval(onChange, pollMs);
  poll.unref();
  return {
    close() {
      clearTimeout(timer);
      clearInterval(poll);
      for (const watcher of watchers) watcher.close();
    },
  };
}
