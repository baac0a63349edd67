import { readFileSync, realpathSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { basename, dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { describeZodError } from '../schema/describe.js';
import { createLogger } from '../log.js';
import { packagePath } from '../package/files.js';
import { HeapGrowth } from '../memory.js';
import { startServer } from '../server.js';
import { nodeFlag } from '../v8-flags.js';
import { EXIT, parseFlags, UsageError, type Command } from './command.js';

const boolean = z.union([z.boolean(), z.enum(['true', 'false', '1', '0', 'yes', 'no']).transform((v) => ['true', '1', 'yes'].includes(v))]);

/** Flags win over environment variables, which win over defaults; parsed once, here. */
const serveOptions = z.object({
  repo: z.string().min(1).default('./data/config-repo'),
  sd_dir: z.string().min(1).default('./data/sd'),
  state_dir: z.string().min(1).default('./data/state'),
  host: z.string().min(1).default('0.0.0.0'),
  port: z.coerce.number().int().min(0).max(65535, 'must be 0-65535').default(8080),
  admin_token: z.string().min(16, 'must be at least 16 characters').optional(),
  open_reads: boolean.default(false),
  starter: z.string().min(1).default(packagePath('starter')),
  downloads_dir: z.string().min(1).optional(),
  remote: z.string().min(1).optional(),
  branch: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._/-]*$/, 'must be a branch name').default('main'),
  read_only: boolean.default(false),
  sd_layout: z.enum(['file', 'group']).default('file'),
  primary: z
    .url({ protocol: /^https?$/, message: 'must be an http(s) URL' })
    .refine((url) => !/^[a-z]+:\/\/[^/]*@/i.test(url), 'must not hold a user name or password: followers pass on the caller\'s own credential, and the URL is logged')
    .optional(),
  cluster_secret: z.string().min(16, 'must be at least 16 characters').optional(),
  git_password: z.string().min(1).optional(),
  sync_interval: z.coerce.number().positive('must be a number of seconds').default(30),
  webhook_secret: z.string().min(16, 'must be at least 16 characters').optional(),
  prometheus_url: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }).optional(),
});

export const serve: Command = {
  name: 'serve',
  summary: 'run the registration server (API, file_sd output, watcher)',
  help: `Usage: aami serve [options]

Serves the registration API, keeps Prometheus file_sd JSON in SD_DIR in step with the
config repo, and watches the repo for commits made outside the API. A missing repo is
created from the starter config with one initial commit.

Options (environment variable in brackets):
      --repo DIR        config repo [AAMI_REPO] (default ./data/config-repo)
      --sd-dir DIR      file_sd output [AAMI_SD_DIR] (default ./data/sd)
      --sd-layout L     file: one file per job, <job>.json (default); group: one per job and
                        primary group, <job>/<group>.json, for large fleets: a change then
                        rewrites one group's file [AAMI_SD_LAYOUT]
      --state-dir DIR   server-local state, never committed [AAMI_STATE_DIR] (default ./data/state)
      --host ADDR       listen address [AAMI_HOST] (default 0.0.0.0)
      --port N          listen port [AAMI_PORT] (default 8080; 0 picks a free one)
      --open-reads      let anyone read targets, groups and SD [AAMI_OPEN_READS=true]
      --starter DIR     starter config for a new repo (default: the bundled config-repo/)
      --downloads-dir DIR  files served under /downloads/ (e.g. a node_exporter tarball
                        for nodes without internet access) [AAMI_DOWNLOADS_DIR]
      --remote URL      follow this Git remote: clone it (or seed an empty one from the
                        starter), pull merged pull requests, push every change [AAMI_GIT_REMOTE]
      --branch NAME     the remote branch (default main) [AAMI_GIT_BRANCH]
      --sync-interval S seconds between pulls (default 30) [AAMI_GIT_SYNC_INTERVAL];
                        POST /api/v1/sync pulls at once (admin, or a push webhook signed
                        with AAMI_WEBHOOK_SECRET)
      --read-only       a follower: serve SD from the remote, refuse writes [AAMI_READ_ONLY]
      --primary URL     a follower that forwards every write to this primary (one writer,
                        many followers; give --remote too) [AAMI_PRIMARY]
      --prometheus-url URL  Prometheus, asked by the server for the console's "up" column
                        (e.g. http://prometheus:9090) [AAMI_PROMETHEUS_URL]
  -h, --help            show this help

The admin credential comes from AAMI_ADMIN_TOKEN or the file AAMI_ADMIN_TOKEN_FILE
(environment only, so it stays out of ps). A password or token for an HTTPS remote comes
from AAMI_GIT_PASSWORD or AAMI_GIT_PASSWORD_FILE (never put it in --remote: ps shows it),
or from git's own credential helpers and SSH keys. AAMI_CLUSTER_SECRET, shared by a primary
and its followers, lets the primary log and rate-limit the clients a follower forwards.
Without an admin credential, the server generates one on first start, prints it once, and
keeps only its hash in the state directory; one given is kept there too, so it stays in
force when the variable is unset later (delete admin-token.sha256 to have one generated).
SIGTERM, SIGINT or SIGHUP stops the server after the writes in flight are committed (one
during start-up, once it serves; a second one at once); after SIGHUP it exits 129, so a
service manager starts it again.`,
  async run(argv, io) {
    const { values, positionals } = parseFlags(
      argv,
      {
        repo: { type: 'string' },
        'sd-dir': { type: 'string' },
        'sd-layout': { type: 'string' },
        'state-dir': { type: 'string' },
        host: { type: 'string' },
        port: { type: 'string' },
        'open-reads': { type: 'boolean' },
        starter: { type: 'string' },
        'downloads-dir': { type: 'string' },
        remote: { type: 'string' },
        branch: { type: 'string' },
        'read-only': { type: 'boolean' },
        primary: { type: 'string' },
        'sync-interval': { type: 'string' },
        'prometheus-url': { type: 'string' },
      },
      false,
    );
    if (values.help) return io.out(this.help), EXIT.ok;
    void positionals;
    const env = io.env;
    const given = {
      repo: values.repo ?? env.AAMI_REPO,
      sd_dir: values['sd-dir'] ?? env.AAMI_SD_DIR,
      sd_layout: values['sd-layout'] ?? env.AAMI_SD_LAYOUT,
      state_dir: values['state-dir'] ?? env.AAMI_STATE_DIR,
      // An empty variable is unset (compose's `${VAR}` of an unset VAR): an empty port read as 0 took a random one.
      host: values.host ?? (env.AAMI_HOST || undefined),
      port: values.port ?? (env.AAMI_PORT || undefined),
      admin_token: env.AAMI_ADMIN_TOKEN || secretFile(env.AAMI_ADMIN_TOKEN_FILE, 'AAMI_ADMIN_TOKEN_FILE'),
      open_reads: values['open-reads'] ?? env.AAMI_OPEN_READS,
      starter: values.starter,
      downloads_dir: values['downloads-dir'] ?? env.AAMI_DOWNLOADS_DIR,
      remote: values.remote ?? env.AAMI_GIT_REMOTE,
      branch: values.branch ?? env.AAMI_GIT_BRANCH,
      read_only: values['read-only'] ?? env.AAMI_READ_ONLY,
      sync_interval: values['sync-interval'] ?? env.AAMI_GIT_SYNC_INTERVAL,
      webhook_secret: env.AAMI_WEBHOOK_SECRET || undefined,
      primary: values.primary ?? env.AAMI_PRIMARY,
      cluster_secret: env.AAMI_CLUSTER_SECRET || undefined,
      git_password: env.AAMI_GIT_PASSWORD || secretFile(env.AAMI_GIT_PASSWORD_FILE, 'AAMI_GIT_PASSWORD_FILE'),
      prometheus_url: values['prometheus-url'] ?? (env.AAMI_PROMETHEUS_URL || undefined),
    };
    // Read once: no child (git, its credential helpers and hooks) inherits a secret.
    for (const name of SECRET_VARIABLES) delete process.env[name];
    const parsed = serveOptions.safeParse(given);
    if (!parsed.success) {
      throw new UsageError(describeZodError(parsed.error, given).map((e) => `${e.field}: ${e.message}`).join('; '));
    }
    const options = parsed.data;
    if (options.read_only && !options.remote) throw new UsageError('--read-only follows a Git remote: give --remote URL too');
    if (options.primary && !options.remote) throw new UsageError('--primary makes a follower of the Git remote the primary pushes to: give --remote URL too');
    // A user name alone is often the secret itself (a GitHub token as https://TOKEN@github.com/…).
    if (options.remote && /^https?:\/\/[^/@]+@/i.test(options.remote)) {
      io.err('aami serve: warning: --remote holds a user name or password, which `ps` shows to every user of this host; pass the secret in AAMI_GIT_PASSWORD_FILE instead');
    }
    const dirs = { '--repo': resolve(options.repo), '--sd-dir': resolve(options.sd_dir), '--state-dir': resolve(options.state_dir) };
    separateDirectories(dirs);
    const signals = stopSignals();
    // Before the server's code first runs: see baselineCode and HeapGrowth.
    baselineCode();
    const growth = new HeapGrowth().start();
    const server = await startServer({
      repo: dirs['--repo'],
      sdDir: dirs['--sd-dir'],
      sdLayout: options.sd_layout,
      stateDir: dirs['--state-dir'],
      host: options.host,
      port: options.port,
      adminToken: options.admin_token,
      openReads: options.open_reads,
      starterDir: resolve(options.starter),
      scriptsDir: packagePath('scripts'),
      downloadsDir: options.downloads_dir && resolve(options.downloads_dir),
      remote: options.remote ? { url: options.remote, branch: options.branch, syncIntervalMs: options.sync_interval * 1000, webhookSecret: options.webhook_secret, password: options.git_password } : undefined,
      readOnly: options.read_only,
      primary: options.primary ? { url: options.primary } : undefined,
      clusterSecret: options.cluster_secret,
      prometheusUrl: options.prometheus_url,
      logger: createLogger((line) => io.err(line)),
      // Printed only to a terminal: a service manager's log would keep it.
      announce: process.stdout.isTTY ? (line) => io.out(line) : undefined,
    }).catch((error: unknown) => {
      growth.stop();
      signals.release();
      throw error;
    });
    const signal = await signals.first;
    await server.close();
    growth.stop();
    signals.release();
    // After a SIGHUP (a closed terminal, a `reload` by habit) a service manager should start it again: not a clean exit.
    return signal === 'SIGHUP' ? 129 : EXIT.ok;
  },
};

/**
 * SIGTERM, SIGINT and SIGHUP each stop the server cleanly (the writes in flight committed),
 * listened for from before it starts: one that comes while it starts stops it once it serves
 * (a signal between its "serving" line and a handler killed it on the spot), and a second
 * one then ends it at once.
 */
function stopSignals(): { first: Promise<NodeJS.Signals>; release(): void } {
  const names: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];
  let received: NodeJS.Signals | undefined;
  let resolveFirst!: (signal: NodeJS.Signals) => void;
  const first = new Promise<NodeJS.Signals>((resolve) => (resolveFirst = resolve));
  const handler = (signal: NodeJS.Signals) => {
    if (received) process.exit(1); // a second signal: at once
    received = signal;
    resolveFirst(signal);
  };
  for (const name of names) process.on(name, handler);
  return { first, release: () => names.forEach((name) => process.off(name, handler)) };
}

/** Variables that hold a secret (a remote's URL may hold a token). */
const SECRET_VARIABLES = ['AAMI_ADMIN_TOKEN', 'AAMI_GIT_PASSWORD', 'AAMI_WEBHOOK_SECRET', 'AAMI_CLUSTER_SECRET', 'AAMI_GIT_REMOTE'];

/** A secret read once from a file named by an environment variable (Docker and systemd pass secrets as files). */
function secretFile(path: string | undefined, variable: string): string | undefined {
  if (!path) return undefined;
  try {
    const secret = readFileSync(path, 'utf8').trim();
    if (secret) return secret;
  } catch (error) {
    throw new UsageError(`${variable}: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  throw new UsageError(`${variable}: ${path} is empty`);
}

/**
 * The repository, the SD directory and the state directory apart, none inside another: the SD
 * writer removes the `*.json` files it no longer writes (the state's among them, one
 * directory down too), and Prometheus's `*.json` glob would read the state's files.
 */
function separateDirectories(dirs: Record<string, string>): void {
  // Where each really is: a symbolic link on the way (sd -> state) must not get past.
  const entries = Object.entries(dirs).map(([option, dir]) => [option, realPath(dir)] as const);
  for (const [i, [option, dir]] of entries.entries()) {
    for (const [other, otherDir] of entries.slice(i + 1)) {
      const inside = (a: string, b: string) => a === b || a.startsWith(b.endsWith('/') ? b : `${b}/`);
      if (inside(dir, otherDir) || inside(otherDir, dir)) throw new UsageError(`${option} (${dir}) and ${other} (${otherDir}) must be separate directories, neither inside the other`);
    }
  }
}

/** `path` with the symbolic links of its longest existing part resolved (the rest does not exist yet). */
function realPath(path: string): string {
  const rest: string[] = [];
  for (let at = path; ; at = dirname(at)) {
    try {
      return join(realpathSync(at), ...rest.reverse());
    } catch {
      if (dirname(at) === at) return path;
      rest.push(basename(at));
    }
  }
}

/**
 * Functions get V8's baseline machine code (Sparkplug) when first compiled, not after many
 * runs in its interpreter. A fresh server's first storm ran its registration path interpreted
 * while the optimizing compiler caught up, and its first answers came late: p99 of a fresh
 * 10k storm 96-107 ms, with this 80-97 (bench:register, 64 clients, 4 runs each, interleaved).
 * The flag only decides how a function is compiled, so setting it while running is safe; one
 * given to node (`node --no-always-sparkplug …/bin.js serve`) is left as given. Measured cost:
 * ~2-3 MB of RSS at 100k targets (bench:startup, settled and restarted).
 */
function baselineCode(): void {
  if (nodeFlag('--always-sparkplug') === undefined) setFlagsFromString('--always-sparkplug');
}

