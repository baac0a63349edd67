import * as fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import { createApp } from './api/app.js';
import { FailureLimiter } from './api/auth.js';
import { filesOf } from './catalog/load.js';
import { SdSync } from './compile/sd-sync.js';
import { watchRepo } from './compile/watcher.js';
import type { Logger } from './log.js';
import { Counter, Gauge, GaugeFamily, Histogram, Registry } from './metrics.js';
import { reapEphemeralTargets, silentEphemeralTargets, staleTargets } from './inventory/nodes.js';
import { Heartbeats } from './nodes/heartbeats.js';
import { writeFileDurably } from './repo/fs.js';
import { fileHistory, fileVersions } from './repo/history.js';
import { Remote, Upstream } from './repo/remote.js';
import { GitStore } from './repo/store.js';
import { Writer } from './repo/writer.js';
import { ADMIN_PREFIX, hashSecret, newSecretCredential } from './tokens/secret.js';

export interface ServerConfig {
  repo: string;
  sdDir: string;
  stateDir: string;
  host: string;
  port: number;
  /** The admin credential from the environment, if the operator set one. */
  adminToken?: string;
  openReads: boolean;
  starterDir: string;
  scriptsDir: string;
  downloadsDir?: string;
  logger: Logger;
  /** Where the generated admin credential is shown, once. */
  announce: (line: string) => void;
  clock?: () => Date;
  /** Follow this Git remote (clone it, or seed it from the starter when it is empty). */
  remote?: { url: string; branch: string; syncIntervalMs: number; webhookSecret?: string };
  /** A follower: serve SD from the remote, refuse writes. */
  readOnly?: boolean;
  /** A node silent this long is listed as stale by health and /metrics (default 10 minutes). */
  staleAfterMs?: number;
  /** How often silent ephemeral nodes are looked for and removed (default 15 s). */
  reapIntervalMs?: number;
}

export interface RunningServer {
  url: string;
  adminTokenHash: string;
  close(): Promise<void>;
}

/** Open the config repo (creating it from the starter on first start) and serve the API. */
export async function startServer(config: ServerConfig): Promise<RunningServer> {
  const { logger } = config;
  const clock = config.clock ?? (() => new Date());
  const branch = config.remote?.branch ?? 'main';
  const remote = config.remote
    ? await Remote.prepare({
        dir: config.repo,
        url: config.remote.url,
        branch,
        starterDir: config.starterDir,
        logger,
        init: async (files) => (await GitStore.init({ fs, dir: config.repo, branch, files, author: STARTER_AUTHOR })).close(),
      })
    : undefined;
  const store = await openOrCreateRepo(config, branch);
  const adminTokenHash = await adminCredential(config);

  const registry = new Registry();
  const commitSeconds = registry.add(new Histogram('aami_commit_duration_seconds', 'Time to write one commit durably.'));
  const compileSeconds = registry.add(new Histogram('aami_compile_duration_seconds', 'Time to compile the catalog and write the SD files.'));
  const registrations = registry.add(new Counter('aami_registrations_total', 'Self-registrations by outcome (created, updated, unchanged, or an error code).'));
  const sync = new SdSync({ fs, repoDir: store.dir, sdDir: config.sdDir, logger, observeCompile: (s) => compileSeconds.observe(s) });
  const upstream = remote && new Upstream(remote, store, (changes) => sync.apply(changes, true), logger, { publish: !config.readOnly });
  const writer = new Writer(store, sync, { observeCommit: (s) => commitSeconds.observe(s), upstream: config.readOnly ? undefined : upstream, readOnly: config.readOnly });
  registry.add(new Gauge('aami_invalid_files', 'Config files that fail validation (their last good version is served).', () => new Set(sync.snapshot().problems.map((p) => p.file)).size));
  registry.add(new Gauge('aami_writer_queue_depth', 'Writes queued or running.', () => writer.pending));
  const catalog = () => sync.snapshot().catalog;
  registry.add(new Gauge('aami_targets', 'Targets in the catalog.', () => catalog().targets.size));

  const heartbeats = new Heartbeats(fs, join(config.stateDir, 'heartbeats.json'), () => clock().getTime());
  await heartbeats.load();
  registry.add(
    new GaugeFamily('aami_node_last_seen_timestamp_seconds', 'When each node last sent a heartbeat (not a Git commit).', function* () {
      for (const [hostname, at] of heartbeats.entries()) yield [{ hostname }, at / 1000];
    }),
  );
  const staleAfterMs = config.staleAfterMs ?? 10 * 60_000;
  registry.add(new Gauge('aami_stale_targets', 'Targets whose node sent heartbeats but none for the stale threshold (never removed automatically).', () => staleTargets(catalog(), (h) => heartbeats.lastSeen(h), clock(), staleAfterMs).length));
  const reaped = registry.add(new Counter('aami_ephemeral_targets_removed_total', 'Ephemeral targets removed because their node was silent past its token\'s TTL.'));

  await sync.loadAll((path) => fileVersions(store.dir, path));
  let pullTimer: NodeJS.Timeout | undefined;
  const pull = () => writer.exclusive(() => upstream!.pull());
  if (upstream) {
    await pull().catch(() => undefined); // unreachable at start: keep serving what we have; health says so
    pullTimer = setInterval(() => void pull().catch(() => undefined), config.remote!.syncIntervalMs);
    pullTimer.unref();
  }
  // Edits seen on disk are read between writes, in the writer's queue: read while a batch is
  // being committed, a file would still hold the previous commit's text and roll the catalog
  // back (a token's use count among others) under the writes planned next.
  const watcher = watchRepo(store.dir, (paths) => writer.exclusive(() => sync.reload(paths)));
  await watcher.ready;

  // Ephemeral nodes that went silent are removed; heartbeats of targets that are gone are forgotten.
  let reaping = false;
  const reapTimer = setInterval(() => {
    if (reaping || config.readOnly) return;
    reaping = true;
    heartbeats.retain((hostname) => catalog().targets.has(hostname));
    const lastSeen = (hostname: string) => heartbeats.lastSeen(hostname);
    const run = silentEphemeralTargets(catalog(), lastSeen, clock()).length ? reapEphemeralTargets(writer, lastSeen, clock) : Promise.resolve([]);
    run
      .then((removed) => {
        for (const hostname of removed) heartbeats.forget(hostname);
        if (removed.length) {
          reaped.inc({}, removed.length);
          logger.info('removed silent ephemeral nodes', { count: removed.length, hosts: removed.slice(0, 20).join(',') });
        }
      })
      .catch((error: unknown) => logger.warn('removing silent ephemeral nodes failed', { error: error instanceof Error ? error.message : String(error) }))
      .finally(() => (reaping = false));
  }, config.reapIntervalMs ?? 15_000);
  reapTimer.unref();

  let serving = true;
  const app = createApp({
    sync,
    catalog,
    staleAfterMs,
    writer,
    store,
    clock,
    logger,
    auth: { adminTokenHash, openReads: config.openReads, limiter: new FailureLimiter() },
    metrics: { registry, registrations },
    history: (pathspecs) => fileHistory(store.dir, pathspecs),
    serving: () => serving,
    heartbeats,
    scriptsDir: config.scriptsDir,
    downloadsDir: config.downloadsDir,
    remote: upstream && { status: upstream.status, pull, webhookSecret: config.remote!.webhookSecret },
  });
  const server = await listen(app.fetch, config.host, config.port);
  const { port } = server.address() as AddressInfo;
  const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  logger.info('serving', { url, repo: store.dir, sd_dir: config.sdDir, head: store.head() ?? undefined });

  return {
    url,
    adminTokenHash,
    async close() {
      serving = false;
      clearInterval(pullTimer);
      clearInterval(reapTimer);
      // Stop taking requests, let the ones in flight finish, then flush every queued write.
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await writer.drain();
      await watcher.close();
      await sync.close();
      await store.close();
      await heartbeats.save();
      logger.info('stopped', { head: store.head() ?? undefined });
    },
  };
}

const STARTER_AUTHOR = { name: 'aami', email: 'aami@localhost' };

async function openOrCreateRepo(config: ServerConfig, branch: string): Promise<GitStore> {
  if (fs.existsSync(join(config.repo, '.git'))) return GitStore.open({ fs, dir: config.repo, branch });
  if (fs.existsSync(config.repo) && fs.readdirSync(config.repo).length > 0) {
    throw new Error(`${config.repo} exists, is not empty and is not a Git repository: refusing to use it`);
  }
  config.logger.info('creating config repo from the starter', { repo: config.repo, starter: config.starterDir });
  return GitStore.init({ fs, dir: config.repo, branch, files: filesOf(config.starterDir), author: STARTER_AUTHOR });
}

/**
 * The admin credential's hash. From AAMI_ADMIN_TOKEN when set; otherwise the hash kept in
 * the state directory (outside the repo: it never reaches Git), created with a new
 * credential on first start, which is shown once and never again.
 */
async function adminCredential(config: ServerConfig): Promise<string> {
  if (config.adminToken) return hashSecret(config.adminToken);
  const file = join(config.stateDir, 'admin-token.sha256');
  if (fs.existsSync(file)) return fs.readFileSync(file, 'utf8').trim();
  const { credential, hash } = newSecretCredential(ADMIN_PREFIX);
  fs.mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  await writeFileDurably(fs, file, `${hash}\n`);
  fs.chmodSync(file, 0o600);
  config.announce(
    `\nGenerated an admin credential (shown once; only its hash is kept in ${file}):\n\n    ${credential}\n\nUse it as: Authorization: Bearer <credential>. Set AAMI_ADMIN_TOKEN to choose your own.\n`,
  );
  return hash;
}

function listen(fetch: (request: Request) => Response | Promise<Response>, hostname: string, port: number): Promise<ServerType & { address(): AddressInfo | string | null }> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch, hostname, port }, () => resolve(server as never));
    server.once('error', reject);
  });
}
