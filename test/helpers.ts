import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import { filesOf } from '../src/catalog/load.js';
import { SdSync } from '../src/compile/sd-sync.js';
import { silentLogger } from '../src/log.js';
import { GitStore } from '../src/repo/store.js';
import { Writer } from '../src/repo/writer.js';

export const ROOT = new URL('..', import.meta.url).pathname.replace(/\/$/, '');
export const STARTER = join(ROOT, 'config-repo');
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
 * A config repo in a temp dir, committed by the store, with its SD directory kept in step:
 * the harness tests speak to instead of wiring store, writer and compiler by hand.
 */
export async function tmpConfigRepo(options: { from?: string; now?: () => number } = {}) {
  const base = tempDir();
  const dir = join(base, 'repo');
  const sdDir = join(base, 'sd');
  const store = await GitStore.init({ fs, dir, files: filesOf(options.from ?? STARTER), author: ADMIN, now: options.now });
  const sync = new SdSync({ fs, repoDir: dir, sdDir, logger: silentLogger, debounceMs: 5, minIntervalMs: 0 });
  await sync.loadAll();
  const writer = new Writer(store, sync);
  onCleanup(async () => {
    await writer.drain();
    await sync.close();
    await store.close();
  });
  return {
    dir,
    sdDir,
    store,
    sync,
    writer,
    git: (...args: string[]) => gitCli(dir, ...args),
    sd: (job: string) => JSON.parse(fs.readFileSync(join(sdDir, `${job}.json`), 'utf8')) as Array<{ targets: string[]; labels: Record<string, string> }>,
    writeFile: (path: string, text: string) => {
      fs.mkdirSync(join(dir, path, '..'), { recursive: true });
      fs.writeFileSync(join(dir, path), text);
    },
    commitAll: (message: string) => {
      gitCli(dir, 'add', '-A');
      gitCli(dir, 'commit', '-q', '-m', message);
    },
    nextCompile: () => sync.nextCompile(),
  };
}

export const targetYaml = (hostname: string, ip: string, group = 'ml-training', extra = '') =>
  `hostname: ${hostname}\nip_address: ${ip}\nprimary_group: ${group}\n${extra}`;
