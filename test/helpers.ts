import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import { LiveCatalog } from '../src/catalog/live.js';
import { filesOf } from '../src/catalog/load.js';
import { SdPublisher } from '../src/compile/publisher.js';
import { GitRepository } from '../src/git/repository.js';
import { silentLogger } from '../src/log.js';
import { RepoFiles } from '../src/writer/files.js';
import { followHead, loadSnapshot } from '../src/writer/head.js';
import { ParseCache } from '../src/writer/parse-cache.js';
import { Writer, type WriterOptions } from '../src/writer/writer.js';

export const ROOT = new URL('..', import.meta.url).pathname.replace(/\/$/, '');
export const STARTER = join(ROOT, 'config-repo');

/**
 * The built bundle, dist/cli/bin.js, for the tests that run what production runs; refused
 * when missing or older than a source file (a local run after an edit would test old code).
 */
export function builtBundle(): string {
  const bin = join(ROOT, 'dist/cli/bin.js');
  if (!fs.existsSync(bin)) throw new Error('dist/cli/bin.js is missing: npm run build (npm ci runs it)');
  const built = fs.statSync(bin).mtimeMs;
  const newer = (fs.readdirSync(join(ROOT, 'src'), { recursive: true }) as string[]).find((name) => fs.statSync(join(ROOT, 'src', name)).mtimeMs > built);
  if (newer) throw new Error(`dist/cli/bin.js is older than src/${newer}: npm run build`);
  return bin;
}
export const fixture = (name: string) => join(ROOT, 'test/fixtures', name);

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
/** Run at the end of the current test. */
export function onCleanup(fn: () => Promise<void> | void): void {
  cleanups.push(fn);
}

export function tempDir(prefix = 'aami-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The real git CLI, with a fixed identity and no user config. */
export function gitCli(dir: string, ...args: string[]): string {
  return execFileSync('git', args, {
    cwd: dir,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_CONFIG_GLOBAL: '/dev/null',
      GIT_AUTHOR_NAME: 'Pull Request',
      GIT_AUTHOR_EMAIL: 'pr@example.com',
      GIT_COMMITTER_NAME: 'Pull Request',
      GIT_COMMITTER_EMAIL: 'pr@example.com',
    },
  });
}

export const ADMIN = { name: 'admin', email: 'admin@aami.local' };
/** A clock pinned to 2026-11-26T00:00:00Z that a test can move. */
export function fixedClock(start = Date.parse('2026-11-26T00:00:00Z')) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

/**
 * Change files of a repository as a person does: clone it, edit, commit, push (a pull
 * request merged on the remote looks the same to the server). `null` deletes a file. Returns
 * the pushed commit.
 */
export function pushFiles(repo: string, files: Record<string, string | null>, message: string, branch = 'main'): string {
  const work = mkdtempSync(join(tmpdir(), 'aami-push-'));
  try {
    // --no-local: a clone by path hard-links the object files, and git refuses one that is still being
    // written (the server's pack in progress: "hardlink different from source"); the transport reads only whole objects.
    gitCli(work, 'clone', '--quiet', '--no-local', '--branch', branch, repo, '.');
    for (const [path, content] of Object.entries(files)) {
      if (content === null) fs.rmSync(join(work, path), { force: true });
      else {
        fs.mkdirSync(join(work, path, '..'), { recursive: true });
        fs.writeFileSync(join(work, path), content);
      }
    }
    gitCli(work, 'add', '-A');
    // No background `git gc --auto` (thousands of files trigger it): it would still be writing when the clone is removed.
    gitCli(work, '-c', 'gc.auto=0', 'commit', '--quiet', '--allow-empty', '-m', message);
    // The server may commit between the clone and the push: git refuses the push (not a
    // fast-forward) and the person rebases and pushes again, as anyone would.
    for (let attempt = 1; ; attempt++) {
      try {
        gitCli(work, 'push', '--quiet', 'origin', `HEAD:${branch}`);
        break;
      } catch (error) {
        if (attempt >= 20) throw error;
        gitCli(work, '-c', 'gc.auto=0', 'pull', '--quiet', '--rebase', 'origin', branch);
      }
    }
    return gitCli(work, 'rev-parse', 'HEAD').trim();
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * A config repo (bare, as the server keeps it) in a temp dir, with the live catalog, the
 * writer and the SD directory wired as the server wires them: the harness tests speak to
 * instead of wiring store, writer and compiler by hand.
 */
export async function tmpConfigRepo(options: { from?: string; now?: () => number; writer?: WriterOptions } = {}) {
  const base = tempDir();
  const dir = join(base, 'repo.git');
  const sdDir = join(base, 'sd');
  const repo = await GitRepository.init(dir, { files: filesOf(options.from ?? STARTER), author: ADMIN, now: options.now });
  const files = new RepoFiles(repo, new ParseCache(undefined));
  const live = new LiveCatalog(await loadSnapshot({ repo, files, saved: undefined, history: async () => new Map() }));
  const sd = new SdPublisher(live, { fs, sdDir, logger: silentLogger, debounceMs: 5, maxIntervalMs: 0 });
  await sd.compileNow();
  const follow = () => followHead(repo, live, files);
  const writer = new Writer(repo, live, follow, options.writer);
  onCleanup(async () => {
    await writer.drain();
    await sd.close();
    await repo.close();
  });
  return {
    dir,
    sdDir,
    repo,
    live,
    sd,
    writer,
    git: (...args: string[]) => gitCli(dir, ...args),
    sdFile: (job: string) => JSON.parse(fs.readFileSync(join(sdDir, `${job}.json`), 'utf8')) as Array<{ targets: string[]; labels: Record<string, string> }>,
    /** Follow the branch now, as the server's ref watcher would after a push. */
    follow: () => writer.exclusive(follow),
    /** A person's push into the repository, followed by the server (as its ref watcher would). */
    async push(changed: Record<string, string | null>, message = 'A change pushed by a person') {
      const commit = pushFiles(dir, changed, message);
      await writer.exclusive(follow);
      return commit;
    },
    /** The text of a file at the branch head, from Git. */
    show: (path: string) => gitCli(dir, 'show', `HEAD:${path}`),
    nextCompile: () => sd.nextCompile(),
  };
}

export const targetYaml = (hostname: string, ip: string, group = 'ml-training', extra = '') =>
  `hostname: ${hostname}\nip_address: ${ip}\nprimary_group: ${group}\n${extra}`;

/** A small xorshift generator: the same seed gives the same sequence, so a failure can be replayed. */
export function random(seed: number) {
  let state = seed || 1;
  const next = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  return { next, pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]! };
}

/**
 * The calls of node:fs to replace (fsWith) to see each fsync by the path its file or
 * directory was opened by: a FileHandle's sync (fs.promises.open), or fs.fsync of a
 * descriptor from fs.openSync (syncPath, a pack, a ref). `seen` may throw: the sync fails.
 */
export function seeingSyncs(seen: (path: string) => void): { sync: Partial<typeof fs>; promises: Partial<typeof fs.promises> } {
  const paths = new Map<number, string>();
  /** fs.fsync or fs.fdatasync, `seen` first: a throw there fails the sync. */
  const seenBefore = (sync: (fd: number, callback: fs.NoParamCallback) => void) => (fd: number, callback: fs.NoParamCallback) => {
    try {
      if (paths.has(fd)) seen(paths.get(fd)!);
    } catch (error) {
      return process.nextTick(callback, error as NodeJS.ErrnoException);
    }
    sync(fd, callback);
  };
  return {
    sync: {
      openSync: ((path: fs.PathLike, ...rest: [never, never]) => {
        const fd = fs.openSync(path, ...rest);
        paths.set(fd, String(path));
        return fd;
      }) as typeof fs.openSync,
      closeSync: (fd: number) => (paths.delete(fd), fs.closeSync(fd)),
      close: ((fd: number, callback?: fs.NoParamCallback) => (paths.delete(fd), fs.close(fd, callback))) as typeof fs.close,
      fsync: seenBefore(fs.fsync) as typeof fs.fsync,
      fdatasync: seenBefore(fs.fdatasync) as typeof fs.fdatasync, // a data-only sync: seen all the same
      fsyncSync: (fd: number) => (paths.has(fd) && seen(paths.get(fd)!), fs.fsyncSync(fd)), // syncPathSync's
    },
    promises: {
      open: (async (path: fs.PathLike, ...rest: [never, never]) => {
        const handle = await fs.promises.open(path, ...rest);
        const sync = handle.sync.bind(handle);
        handle.sync = async () => (seen(String(path)), sync());
        return handle;
      }) as typeof fs.promises.open,
    },
  };
}

/** node:fs with some of its calls (and of fs.promises) replaced: a fault, a pause, a watch. */
export function fsWith(sync: Partial<typeof fs>, promises: Partial<typeof fs.promises> = {}): typeof fs {
  const inner = new Proxy(fs.promises, { get: (target, key) => (key in promises ? promises[key as keyof typeof promises] : Reflect.get(target, key)) });
  return new Proxy(fs, { get: (target, key) => (key === 'promises' ? inner : key in sync ? sync[key as keyof typeof sync] : Reflect.get(target, key)) });
}
