import * as fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import { createApp } from './api/app.js';
import { FailureLines } from './api/observe.js';
import { FailureLimiter } from './api/auth.js';
import type { RepoHealth } from './api/deps.js';
import { LiveCatalog } from './catalog/live.js';
import { filesOf } from './catalog/load.js';
import type { SdLayout } from './compile/compiler.js';
import { READ_FILE_ONLY } from './compile/output.js';
import { SdPublisher } from './compile/publisher.js';
import { clearLeftoverTemps, writeFileDurably } from './git/fs.js';
import { addedOrder, fileHistory, fileVersions } from './git/history.js';
import { parseRemoteUrl, Remote } from './git/remote.js';
import { GitRepository } from './git/repository.js';
import { countsSilentNodes, reapEphemeralTargets, silentEphemeralTargets, staleTargets } from './inventory/nodes.js';
import type { Logger } from './log.js';
import { MemoryRelease } from './memory.js';
import { Counter, Gauge, GaugeFamily, Histogram, Registry } from './metrics.js';
import { Heartbeats } from './nodes/heartbeats.js';
import { ADMIN_PREFIX, hashSecret, newSecretCredential } from './tokens/secret.js';
import { CatalogStateFile, savedStateOf } from './writer/catalog-state.js';
import { RepoFiles } from './writer/files.js';
import { followHead, loadSnapshot } from './writer/head.js';
import { ParseCache, parsesOf } from './writer/parse-cache.js';
import { RestartImage } from './writer/restart-image.js';
import { lockStateDir } from './writer/state-lock.js';
import { Upstream } from './writer/upstream.js';
import { watchRef } from './writer/watch.js';
import { Writer } from './writer/writer.js';

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
  /**
   * Where the generated admin credential is shown, once: a terminal. Without one (systemd,
   * Docker, whose logs keep what a service prints) it goes to a file only root can read.
   */
  announce?: (line: string) => void;
  clock?: () => Date;
  /** Follow this Git remote (clone it, or seed it from the starter when it is empty). */
  remote?: { url: string; branch: string; syncIntervalMs: number; webhookSecret?: string; password?: string; /** How long a start waits for its first pull before it serves (default 5 s; tests shorten it). */ startWaitMs?: number };
  /** A follower: serve SD from the remote, refuse writes. */
  readOnly?: boolean;
  /** A follower that forwards writes to this primary (and reads it cannot answer yet). */
  primary?: { url: string; timeoutMs?: number };
  /** Shared by a primary and its followers (the primary believes the client address a follower passes on). */
  clusterSecret?: string;
  /** A node silent this long is listed as stale by health and /metrics (default 10 minutes). */
  staleAfterMs?: number;
  /** How often silent ephemeral nodes are looked for and removed (default 15 s). */
  reapIntervalMs?: number;
  /** How often the branch ref is read besides file events (default 1 s). */
  refPollMs?: number;
  /** SD files: one per job (default), or one per job and primary group. */
  sdLayout?: SdLayout;
  /** Prometheus's base URL: the console shows whether it scrapes each target up. */
  prometheusUrl?: string;
  /** How long a client may take to send a whole request, headers and body (default 60 s; tests shorten it). */
  requestTimeoutMs?: number;
}

export interface RunningServer {
  url: string;
  adminTokenHash: string;
  close(): Promise<void>;
}

const STARTER_AUTHOR = { name: 'aami', email: 'aami@localhost' };

/**
 * Bind the port, open the config repo (creating it from the starter on first start), load
 * the catalog from the branch head and serve. The port is bound first: a server that
 * cannot listen exits at once, before it generates (and prints) any credential.
 */
export async function startServer(config: ServerConfig): Promise<RunningServer> {
  const { logger } = config;
  const clock = config.clock ?? (() => new Date());
  // The node-server's bindings (the socket, for the client's address) ride along in `env`.
  let handler: Fetch | undefined;
  const starting = () => new Response(JSON.stringify({ error: { code: 'not_ready', message: 'the server is starting', details: [] } }), { status: 503, headers: { 'content-type': 'application/json' } });
  const server = await listen((request, env) => (handler ? handler(request, env) : starting()), config.host, config.port, config.requestTimeoutMs ?? REQUEST_TIMEOUT_MS);
  let unlock: (() => void) | undefined;
  try {
    unlock = await lockStateDir(config.stateDir, {
      waiting: ({ pid, namespace, leaseMs }) => logger.warn('the state directory names a server in another pid namespace or on another host (another container?): waiting one lease to see whether it still runs', { pid, namespace, seconds: leaseMs / 1000, state_dir: config.stateDir }),
      trouble: (what) => logger.error('the state directory lock', { error: what }),
    });
    const running = await open(config, clock, (fetch) => (handler = fetch));
    const { port } = server.address() as AddressInfo;
    const url = `http://${hostPort(config.host, port)}`;
    logger.info('serving', { url, repo: config.repo, sd_dir: config.sdDir, head: running.head() ?? undefined });
    return {
      url,
      adminTokenHash: running.adminTokenHash,
      async close() {
        running.stopServing();
        // Stop taking requests, let the ones in flight finish, then answer every queued write.
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await running.close();
        unlock!();
      },
    };
  } catch (error) {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    unlock?.();
    throw error;
  }
}

type Fetch = (request: Request, env?: unknown) => Response | Promise<Response>;

/**
 * openParts(), undone if it fails part way (scripts missing from --scripts-dir, say): what it
 * started — the first pull, timers, the SD publisher, the ref watcher — is stopped, last
 * first, before the error goes on. Else a pull hanging on the remote and timers writing the
 * state directory would outlive a start that failed, and the state directory it gives up.
 */
async function open(config: ServerConfig, clock: () => Date, serveWith: (fetch: Fetch) => void) {
  const undo: Array<() => unknown> = [];
  try {
    return await openParts(config, clock, serveWith, (step) => undo.push(step));
  } catch (error) {
    for (const step of undo.reverse()) {
      await Promise.resolve()
        .then(step)
        .catch((failed: unknown) => config.logger.warn('undoing a start that failed: a step of it failed too', { error: failed instanceof Error ? failed.message : String(failed) }));
    }
    throw error;
  }
}

async function openParts(config: ServerConfig, clock: () => Date, serveWith: (fetch: Fetch) => void, started: (undo: () => unknown) => void) {
  const { logger } = config;
  const branch = config.remote?.branch ?? 'main';
  const address = config.remote && parseRemoteUrl(config.remote.url, config.remote.password);
  const repo = await openOrCreateRepo(config, branch, address && ((dir) => new Remote(dir, address, branch)));
  started(() => repo.close());
  const guards = await repo.guardPushes();
  if (guards.set.length) logger.info('set the repository\'s push guards: a push into it may not rewrite or delete the branch', { set: guards.set.join(', ') });
  if (guards.failed) logger.warn('cannot set the repository\'s push guards: a push into it could rewrite the branch', { error: guards.failed });
  if (!guardLocalPushes(repo.gitdir, address?.url)) {
    logger.warn('the repository\'s pre-receive hook is not the server\'s (another hook, or a link): left as it is, and pushes into this repository are not refused; push to the remote', { hook: join(repo.gitdir, 'hooks/pre-receive') });
  }
  // A server killed while it moved the branch leaves the branch's lock file: writes would wait two minutes for it.
  const leftover = await repo.clearLeftoverLock();
  if (leftover) logger.warn('removed a lock on the branch left by a process that died holding it', { lock: leftover });
  const temps = await repo.clearLeftoverPackTemps();
  if (temps.length) logger.warn('removed what a process that died mid-write left of a pack', { files: temps.join(' ') });
  const adminTokenHash = await adminCredential(config);
  const repoHealth: RepoHealth = { branch, layout: repo.layout, error: null, warning: legacyWarning(config.repo, repo) };
  if (repoHealth.warning) logger.warn('old repository layout', { repo: config.repo, hint: repoHealth.warning });

  // What a server killed mid-write left (heartbeats, catalog state, the remote tip): never named again, so never overwritten.
  const leftovers = clearLeftoverTemps(fs, config.stateDir);
  if (leftovers.length) logger.info('removed the temp files a server killed mid-write left in the state directory', { files: leftovers.join(' ') });
  const cache = new ParseCache(join(config.stateDir, 'parse-cache.log'));
  const stateFile = new CatalogStateFile(join(config.stateDir, 'catalog-state.json'));
  const saved = stateFile.load();
  const files = new RepoFiles(repo, cache);
  // Saved by the last server at the commit that is still the head (at its stop, or once quiet before a kill): what it served, at once.
  const image = new RestartImage(join(config.stateDir, 'restart-image'));
  const head = await repo.head();
  const taken = image.take(head);
  if (taken && 'reason' in taken) logger.info('the restart image is not used: building the catalog from Git', { reason: taken.reason });
  const restored = taken && 'snapshot' in taken ? taken.snapshot : undefined;
  let live: LiveCatalog;
  if (restored) {
    live = new LiveCatalog(restored);
    logger.info('started from the snapshot the last server saved', { head: head ?? undefined });
    // The log's entries are not needed: its dictionary is, for the parses appended later.
    await cache.load({ entries: false });
  } else {
    await cache.load();
    live = new LiveCatalog(await loadSnapshot({ repo, files, saved, history: (commit, paths) => fileVersions(repo.gitdir, commit, paths), addedOrder: (commit, paths) => addedOrder(repo.gitdir, commit, paths) }));
  }
  // take() moved the image away: what it held goes back, so a start that failed on something else (a missing script) leaves the next one its quick start.
  started(() => image.save(live.snapshot()));

  const registry = new Registry();
  const commitSeconds = registry.add(new Histogram('aami_commit_duration_seconds', 'Time to write one commit durably (and push it, with a remote).'));
  const releaseSeconds = registry.add(new Histogram('aami_memory_release_seconds', 'Full garbage collections the server ran itself once quiet after a burst of work: the time each held the event loop.'));
  // Work under way: a commit or push slower than a quiet time, a compile of the whole fleet in
  // slices, or one due (a storm's last changes wait up to 750 ms for theirs: not behind a collection).
  const busy = () => writer.pending > 0 || sd.due;
  // Every write ends in a compile: the garbage of a storm or a whole-fleet render is returned once the server goes quiet.
  const memory = new MemoryRelease({
    busy,
    collected: ({ ms }) => releaseSeconds.observe(ms / 1000),
  });
  started(() => memory.stop());
  const compileSeconds = registry.add(new Histogram('aami_compile_duration_seconds', 'Time to compile the catalog and write the SD files.'));
  const sd = new SdPublisher(live, {
    fs,
    sdDir: config.sdDir,
    logger,
    layout: config.sdLayout,
    observeCompile: (s) => {
      compileSeconds.observe(s);
      memory.worked();
    },
    identity: (snapshot) => hashSecret(JSON.stringify([snapshot.head, config.sdLayout ?? 'file', savedStateOf(snapshot)])),
  });
  await sd.start();
  started(() => sd.close());
  // Whoever can write the SD directory decides what Prometheus scrapes, and can put links there
  // for the SD writer to follow (a group's shard directory): Prometheus only needs to read it.
  const sdMode = fs.statSync(config.sdDir, { throwIfNoEntry: false })?.mode;
  if (sdMode !== undefined && sdMode & 0o022) {
    logger.warn('the SD directory can be written by others than the server: whoever can write it decides what Prometheus scrapes; Prometheus only reads it (chmod go-w)', { sd_dir: config.sdDir, mode: (sdMode & 0o7777).toString(8) });
  }

  // The parse cache is settled once the SD files are served (its lines are made a slice at a
  // time, the start going on and then requests answered between them: a first start's 100k
  // took ~0.5 s), before anything can publish a snapshot. Parses and the last good versions
  // outlive a restart; both are small writes, off the request path.
  const settled = restored ? cache.settleTo(() => parsesOf(restored), restored.files.size) : cache.settle();
  settled.catch((error: unknown) => logger.warn('writing the parse cache failed', { error: String(error) }));
  // Writes to the state directory still under way end before startServer gives it up.
  started(async () => {
    await settled.catch(() => undefined);
    await cache.flush();
    await stateFile.settled();
  });
  live.subscribe((snapshot) => {
    cache.flush().catch((error: unknown) => logger.warn('writing the parse cache failed', { error: String(error) }));
    stateFile.save(savedStateOf(snapshot)).catch((error: unknown) => logger.warn('writing the catalog state failed', { error: String(error) }));
  });

  const follow = async () => {
    try {
      const moved = await followHead(repo, live, files);
      if (repoHealth.error) {
        logger.info('the config repository is readable again', { repo: config.repo });
        writer.faultCleared(['repo_unavailable']);
      }
      repoHealth.error = null;
      return moved;
    } catch (error) {
      const message = `cannot read the branch ${branch} of ${config.repo}: ${error instanceof Error ? error.message : String(error)}`;
      if (repoHealth.error !== message) logger.error('the config repository cannot be read; serving the last good state', { error: message });
      repoHealth.error = message;
      throw error;
    }
  };
  const pushes = registry.add(new Counter('aami_git_pushes_total', 'Pushes to the Git remote by outcome (pushed, rejected: the remote moved on and the writes were replayed, locked, refused, failed).', ['outcome']));
  const pulls = registry.add(new Counter('aami_git_pulls_total', 'Pulls from the Git remote by outcome (current, pulled, refused, failed).', ['outcome']));
  // A follower writes nothing itself: its primary does, and pushes.
  const follower = Boolean(config.readOnly || config.primary);
  const upstream =
    address &&
    new Upstream(new Remote(repo.gitdir, address, branch), repo, follow, logger, {
      publish: !follower,
      now: clock,
      stateFile: join(config.stateDir, 'remote-state.json'),
      metrics: { push: (outcome) => pushes.inc({ outcome }), pull: (outcome) => pulls.inc({ outcome }) },
    });
  const replays = registry.add(new Counter('aami_writer_replays_total', 'Batches of writes replayed on a new head: the branch moved under them (a push into the repository, another server) or the remote refused their push.', ['reason']));
  const writer = new Writer(repo, live, follow, {
    observeCommit: (s) => {
      commitSeconds.observe(s);
      // A storm is work too: at 100k targets its compiles come over half a second apart (each waits ten times the last one's length), and a collection between two of them held its requests 136 ms.
      memory.worked();
    },
    observeReplay: (reason) => replays.inc({ reason }),
    publisher: follower ? undefined : upstream,
    readOnly: follower,
    logger,
  });
  started(() => writer.drain());
  const catalog = () => live.snapshot().catalog;
  registry.add(new Gauge('aami_invalid_files', 'Config files that fail validation (their last good version is served; a credential or token file serves none).', () => live.snapshot().problemsByFile.size));
  registry.add(new Gauge('aami_writer_queue_depth', 'Writes queued or running.', () => writer.pending));
  registry.add(new Gauge('aami_targets', 'Targets in the catalog.', () => catalog().targets.size));

  const heartbeats = new Heartbeats(fs, join(config.stateDir, 'heartbeats.json'), () => clock().getTime(), undefined, (error) =>
    logger.warn('saving the nodes\' last heartbeats failed: tried again in 10 s', { error: error instanceof Error ? error.message : String(error) }),
  );
  await heartbeats.load();
  const staleAfterMs = config.staleAfterMs ?? 10 * 60_000;
  // The per-node series and the stale count: the primary's, not a follower's (countsSilentNodes).
  if (countsSilentNodes(config)) {
    registry.add(
      new GaugeFamily('aami_node_last_seen_timestamp_seconds', 'When each node last sent a heartbeat (not a Git commit).', ['hostname'], function* () {
        for (const [hostname, at] of heartbeats.entries()) yield [{ hostname }, at / 1000];
      }),
      { namesHosts: true },
    );
    registry.add(new Gauge('aami_stale_targets', 'Targets whose node sent heartbeats but none for the stale threshold (never removed automatically).', () => staleTargets(catalog(), heartbeats.entries(), clock(), staleAfterMs).length));
  }
  const reaped = registry.add(new Counter('aami_ephemeral_targets_removed_total', "Ephemeral targets removed because their node was silent past its token's TTL."));

  let pullTimer: NodeJS.Timeout | undefined;
  // One pull queued at most, however many timer ticks, webhooks and sync calls ask for one: a
  // remote that hangs must not pile pulls up in front of the writes. A pull that finds the
  // remote well ends the write failures it was the cause of.
  let queuedPull: { started: boolean; done: Promise<void> } | undefined;
  const pull = (): Promise<void> => {
    if (queuedPull && !queuedPull.started) return queuedPull.done;
    const next = { started: false, done: Promise.resolve() };
    next.done = writer.exclusive(async () => {
      next.started = true;
      await upstream!.pull();
      if (!upstream!.status.error) writer.faultCleared(['remote_unavailable', 'remote_diverged', 'remote_locked', 'remote_refused', 'remote_conflict']);
    });
    queuedPull = next;
    return next.done;
  };
  if (upstream) {
    // A remote that answers is pulled before the server serves (milliseconds). One that hangs
    // (until git's timeout, up to a minute) does not hold the start: after a few seconds the
    // server serves what its copy has, the pull goes on, and writes wait for it in the queue.
    // Unreachable: the same, and health says so.
    const first = pull().then(
      () => true,
      () => true,
    );
    // Before the writer's drain (undone last first): a fetch that hangs ends now, not at git's
    // timeout. A first pull that pushes (seeding an empty remote, a branch ahead of it) is not
    // ended so (a push may land): the drain waits for it, at most git's timeout.
    started(() => {
      clearInterval(pullTimer);
      upstream.stop();
    });
    let waiting: NodeJS.Timeout | undefined;
    const answered = await Promise.race([first, new Promise<false>((resolve) => (waiting = setTimeout(resolve, config.remote!.startWaitMs ?? 5000, false)))]);
    clearTimeout(waiting);
    if (!answered) logger.warn('the remote has not answered yet: serving what this copy has while the pull goes on', { url: upstream.status.url });
    pullTimer = setInterval(() => void pull().catch(() => undefined), config.remote!.syncIntervalMs);
    pullTimer.unref();
  }
  // A push into this repository moves the branch: follow it between writes, in the writer's queue.
  const watcher = watchRef(repo.gitdir, repo.ref, () => void writer.exclusive(follow).catch(() => undefined), config.refPollMs);
  started(() => watcher.close());

  // Ephemeral nodes that went silent are removed; heartbeats of targets that are gone are forgotten.
  // Silent from now at the earliest: not for the time the server was down (silentEphemeralTargets).
  const listeningSince = clock();
  let reaping = false;
  const reapTimer = setInterval(() => {
    if (reaping || follower) return;
    reaping = true;
    heartbeats.retain((hostname) => catalog().targets.has(hostname));
    const lastSeen = (hostname: string) => heartbeats.lastSeen(hostname);
    const run = silentEphemeralTargets(catalog(), lastSeen, clock(), listeningSince).length ? reapEphemeralTargets(writer, lastSeen, clock, listeningSince) : Promise.resolve([]);
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
  started(() => clearInterval(reapTimer));

  let serving = true;
  const failureLines = new FailureLines(logger, () => clock().getTime());
  const app = createApp({
    live,
    catalog,
    sd,
    writer,
    repo: () => repoHealth,
    staleAfterMs,
    clock,
    logger,
    failureLines,
    auth: { adminTokenHash, openReads: config.openReads, limiter: new FailureLimiter() },
    metrics: { registry },
    history: (pathspecs) => fileHistory(repo.gitdir, pathspecs),
    serving: () => serving,
    heartbeats,
    scriptsDir: config.scriptsDir,
    downloadsDir: config.downloadsDir,
    prometheusUrl: config.prometheusUrl,
    remote: upstream && { status: upstream.status, pull, acceptRemoteHistory: async () => {
        await writer.exclusive(() => upstream.acceptRemoteHistory());
        writer.faultCleared(['remote_diverged']);
      }, webhookSecret: config.remote!.webhookSecret },
    primary: config.primary,
    clusterSecret: config.clusterSecret,
  });
  // What the start put off (the IP index of a catalog from the image), made in slices now that it serves.
  void (async () => {
    for (const _ of live.snapshot().deferred()) await new Promise(setImmediate);
  })().catch((error: unknown) => logger.error('making the IP index failed', { error: String(error) }));
  // The image of what it serves, saved once quiet: a start after a kill -9 or a crash takes it too.
  image.keep(live, { busy, logger, saved: () => memory.worked() });
  started(() => image.stop());
  // Last: nothing after it can fail, so no request is served by a start that is being undone.
  serveWith(app.fetch);

  return {
    adminTokenHash,
    head: () => live.snapshot().head,
    stopServing: () => {
      serving = false;
      // A pull that hangs ends now: requests in flight (a write queued behind it) finish before
      // close() runs. A write in flight whose push is refused from now on is answered 503, not replayed (no fetch).
      upstream?.stop();
    },
    async close() {
      // No request is answered any more (the HTTP server closed first): what the log left out is told now.
      failureLines.flush();
      image.stop();
      clearInterval(pullTimer);
      clearInterval(reapTimer);
      watcher.close();
      upstream?.stop();
      await writer.drain();
      await sd.close();
      memory.stop();
      await cache.flush().catch(() => undefined);
      // The catalog state as of the image: a start after a later kill -9 reads it.
      await stateFile.settled();
      await image.save(live.snapshot()).catch((error: unknown) => logger.warn('saving the snapshot for the next start failed: it will build the catalog from Git', { error: String(error) }));
      await heartbeats.close().catch((error: unknown) => logger.warn('saving the nodes\' last heartbeats failed: a restart shows them as last seen before', { error: error instanceof Error ? error.message : String(error) }));
      await repo.close();
      logger.info('stopped', { head: live.snapshot().head ?? undefined });
    },
  };
}

/**
 * The server's repository: bare by default, created from the starter (or cloned from the
 * remote, or seeded and pushed when the remote has no branch yet). A repository of the old
 * layout (DIR/.git) keeps working; its working tree is neither read nor written.
 */
async function openOrCreateRepo(config: ServerConfig, branch: string, remoteFor?: (gitdir: string) => Remote): Promise<GitRepository> {
  const dir = config.repo;
  if (await GitRepository.unfinished(dir)) {
    config.logger.warn('finishing the config repo a first start left unfinished (stopped while it made it)', { repo: dir, starter: config.starterDir });
    return GitRepository.init(dir, { branch, files: filesOf(config.starterDir), author: STARTER_AUTHOR });
  }
  const known = await GitRepository.open(dir, { branch }).catch(() => undefined);
  if (known) {
    if (known.layout === 'working-tree') protectLegacyWorkingTree(dir);
    return known;
  }
  if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) {
    throw new Error(`${dir} exists, is not empty and is not a Git repository: refusing to use it`);
  }
  const remote = remoteFor?.(dir);
  if (remote && (await remote.lsRemote())) {
    config.logger.info('cloning the config repo', { url: remote.url, branch });
    await remote.cloneInto(dir);
    return GitRepository.open(dir, { branch });
  }
  // The state of a server that served a repository here: the repository is missing (a volume
  // not mounted, a path mistyped), and a new one from the starter would empty the SD files.
  const served = ['catalog-state.json', 'parse-cache.log', 'restart-image', 'restart-image.base', 'heartbeats.json'].filter((name) => fs.existsSync(join(config.stateDir, name)));
  if (served.length) {
    throw new Error(`${dir} holds no repository, but the state directory ${config.stateDir} is of a server that served one (${served.join(', ')}): is a volume not mounted, or the path mistyped? To start afresh from the starter, empty the state directory first`);
  }
  config.logger.info('creating config repo from the starter', { repo: dir, starter: config.starterDir });
  return GitRepository.init(dir, { branch, files: filesOf(config.starterDir), author: STARTER_AUTHOR });
}

/**
 * A person's `git commit -a` in the old layout's working tree would start from an index the
 * server never updates and undo acknowledged writes: a pre-commit hook says so and stops it.
 * Pushes into it are let through (the server follows the ref), without touching the tree.
 */
function protectLegacyWorkingTree(dir: string): void {
  const hook = join(dir, '.git/hooks/pre-commit');
  if (hookOf(hook) === undefined) {
    fs.mkdirSync(dirname(hook), { recursive: true });
    writeHook(
      hook,
      `#!/bin/sh\necho "This repository is served by aami: its working tree is not read, and a commit here would start from a stale index." >&2\necho "Clone it and push instead:  git clone ${dir} work && cd work && ... && git push" >&2\nexit 1\n`,
    );
  }
  const config = fs.readFileSync(join(dir, '.git/config'), 'utf8');
  if (!/denyCurrentBranch/.test(config)) fs.appendFileSync(join(dir, '.git/config'), '[receive]\n\tdenyCurrentBranch = ignore\n\tdenyNonFastForwards = true\n');
}

const LOCAL_PUSH_HOOK = '# aami: with a remote, config changes go to the remote';

/**
 * With a remote, the remote is the truth and this repository a copy the server keeps: a
 * push into it would fork the two. A pre-receive hook refuses it and says where to push.
 * Without a remote, pushing here is how people change config: the hook goes (if it is ours).
 * Anything at its name but a file of ours (another's hook, a link) is left as it is: false
 * when a remote is followed all the same (pushes here are then not refused).
 */
function guardLocalPushes(gitdir: string, remoteUrl: string | undefined): boolean {
  const hook = join(gitdir, 'hooks/pre-receive');
  const text = remoteUrl && `#!/bin/sh\n${LOCAL_PUSH_HOOK}\necho "This server follows ${remoteUrl.replace(/["$`\\]/g, '')}: push your change there (or open a pull request)." >&2\nexit 1\n`;
  const current = hookOf(hook);
  const ours = current?.text.includes(LOCAL_PUSH_HOOK) === true;
  if (current !== undefined && !ours) return !remoteUrl;
  if (current && current.text === text && current.executable) return true; // ours, as it should be: not made again at every start
  if (ours) fs.rmSync(hook);
  if (text) {
    fs.mkdirSync(dirname(hook), { recursive: true });
    writeHook(hook, text);
  }
  return true;
}

/**
 * A hook's text (its first 64 KB) and whether git would run it, read without following a
 * link or waiting on a FIFO: undefined when nothing is at its name, null when what is there
 * is not a file it can read.
 */
function hookOf(path: string): { text: string; executable: boolean } | null | undefined {
  let fd: number;
  try {
    fd = fs.openSync(path, READ_FILE_ONLY);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ENOENT' ? undefined : null; // a link (ELOOP), unreadable
  }
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) return null;
    const bytes = Buffer.alloc(64 * 1024);
    return { text: bytes.toString('utf8', 0, fs.readSync(fd, bytes, 0, bytes.length, 0)), executable: (stat.mode & 0o111) !== 0 };
  } catch {
    return null;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * A hook made new (O_EXCL): a link put at its name since it was looked at, even one to
 * nothing, is never written through (the server would make or overwrite what it points to).
 */
function writeHook(path: string, text: string): void {
  try {
    fs.writeFileSync(path, text, { mode: 0o755, flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
}

function legacyWarning(dir: string, repo: GitRepository): string | null {
  if (repo.layout !== 'working-tree') return null;
  return `${dir} has a working tree, which the server neither reads nor updates; change config by pushing to it. To migrate: stop the server, git clone --bare ${dir} ${dir}.git, start with --repo ${dir}.git`;
}

/**
 * The break-glass admin credential's hash, kept in the state directory (outside the repo: it
 * never reaches Git). From AAMI_ADMIN_TOKEN when set (and kept, so it stays in force when the
 * variable is unset later); otherwise the hash kept, or, on first start, a new credential's,
 * which is shown once and never again.
 */
async function adminCredential(config: ServerConfig): Promise<string> {
  const file = join(config.stateDir, 'admin-token.sha256');
  fs.mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  if (config.adminToken) {
    // The credential given replaces a stored one: unset later, the variable must not bring back an older (generated) one.
    const hash = hashSecret(config.adminToken);
    if (!fs.existsSync(file) || fs.readFileSync(file, 'utf8').trim() !== hash) await writeFileDurably(fs, file, `${hash}\n`, true, 0o600);
    return hash;
  }
  if (fs.existsSync(file)) return fs.readFileSync(file, 'utf8').trim();
  const { credential, hash } = newSecretCredential(ADMIN_PREFIX);
  await writeFileDurably(fs, file, `${hash}\n`, true, 0o600);
  if (config.announce) {
    config.announce(
      `\nGenerated an admin credential (shown once; only its hash is kept in ${file}):\n\n    ${credential}\n\nUse it as: Authorization: Bearer <credential>. Set AAMI_ADMIN_TOKEN to choose your own.\n`,
    );
  } else {
    const shown = join(config.stateDir, 'admin-credential.txt');
    await writeFileDurably(fs, shown, `${credential}\n`, true, 0o600);
    config.logger.warn('generated an admin credential: read it from the file (mode 600), keep it somewhere safe, then delete the file', { file: shown });
  }
  return hash;
}

/**
 * A request, headers and body (64 KiB at most), has a minute to arrive; then Node answers 408
 * and closes the connection. Node's own default, five minutes, let a client that sends its
 * body a byte at a time hold a connection (and a file descriptor) that long. Only the
 * request is timed: an answer may take as long as it takes (a paced target list at 100k).
 */
const REQUEST_TIMEOUT_MS = 60_000;

function listen(fetch: Fetch, hostname: string, port: number, requestTimeout: number): Promise<ServerType & { address(): AddressInfo | string | null }> {
  return new Promise((resolve, reject) => {
    // Node looks for requests past their time every connectionsCheckingInterval (30 s by default).
    const serverOptions = { requestTimeout, headersTimeout: requestTimeout, connectionsCheckingInterval: Math.min(30_000, Math.ceil(requestTimeout / 4)) };
    const server = serve({ fetch, hostname, port, serverOptions }, () => resolve(server as never));
    server.once('error', (error: NodeJS.ErrnoException) => reject(listenError(error, hostname, port)));
  });
}

const hostPort = (host: string, port: number) => `${host.includes(':') ? `[${host}]` : host}:${port}`;

/** Node's "listen EADDRINUSE: address already in use" said in words an operator acts on. */
function listenError(error: NodeJS.ErrnoException, hostname: string, port: number): Error {
  const address = hostPort(hostname, port);
  if (error.code === 'EADDRINUSE') return new Error(`cannot listen on ${address}: the port is already in use (by another aami serve or another program); choose another with --port or AAMI_PORT`);
  if (error.code === 'EADDRNOTAVAIL') return new Error(`cannot listen on ${address}: no interface of this host has that address; choose another with --host or AAMI_HOST`);
  return error;
}
