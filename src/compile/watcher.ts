import { relative, sep } from 'node:path';
import { watch } from 'chokidar';
import { isConfigPath } from '../catalog/parse.js';

export interface RepoWatcher {
  ready: Promise<void>;
  close(): Promise<void>;
}

/**
 * Watch a working tree and hand over the config paths that changed, a burst at a time
 * (a removed directory as "its/path/").
 * Dot-entries are ignored: `.git` churns on every commit (objects, refs, index) and is not
 * config, and our own temp files start with a dot too.
 */
export function watchRepo(dir: string, onChange: (paths: string[]) => void | Promise<void>, debounceMs = 10): RepoWatcher {
  const pending = new Set<string>();
  let timer: NodeJS.Timeout | undefined;
  const watcher = watch(dir, {
    ignoreInitial: true,
    ignored: (path) => relative(dir, path).split(sep).some((part) => part.startsWith('.')),
  });
  const queue = (path: string, isDir = false) => {
    const rel = relative(dir, path).split(sep).join('/');
    if (isDir) pending.add(`${rel}/`);
    else if (isConfigPath(rel)) pending.add(rel);
    else return;
    clearTimeout(timer);
    timer = setTimeout(() => {
      const paths = [...pending];
      pending.clear();
      void onChange(paths);
    }, debounceMs);
  };
  watcher.on('add', (path) => queue(path)).on('change', (path) => queue(path)).on('unlink', (path) => queue(path));
  // A removed directory (a whole group's targets in one pull request) does not always report
  // each file: hand over the directory ("dir/") and let the reader re-check what it knew there.
  watcher.on('unlinkDir', (path) => queue(path, true));
  const ready = new Promise<void>((resolve) => watcher.once('ready', () => resolve()));
  return {
    ready,
    close: async () => {
      clearTimeout(timer);
      await watcher.close();
    },
  };
}
