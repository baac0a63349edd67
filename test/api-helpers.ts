import * as fs from 'node:fs';
import { createApp } from '../src/api/app.js';
import type { BulkOptions } from '../src/api/bulk.js';
import type { AppDeps } from '../src/api/deps.js';
import { Heartbeats } from '../src/nodes/heartbeats.js';
import { FailureLimiter } from '../src/api/auth.js';
import { Registry } from '../src/metrics.js';
import { fileHistory } from '../src/git/history.js';
import { createLogger, silentLogger } from '../src/log.js';
import { hashSecret } from '../src/tokens/secret.js';
import { onCleanup, ROOT, tmpConfigRepo } from './helpers.js';
import { checkAnswer } from './openapi-contract.js';

export const ADMIN_TOKEN = 'test-admin-credential-0123456789';

/**
 * Heartbeats that save once more before the test's temp directory goes: a save timer left
 * to fire later would make the directory again (and leave it in /tmp).
 */
function testHeartbeats(file: string, now?: () => number): Heartbeats {
  const heartbeats = new Heartbeats(fs, file, now);
  onCleanup(() => heartbeats.save());
  return heartbeats;
}

/**
 * What createApp takes, wired over a test config repo (reads open to anyone, a fresh
 * registry, an empty history, the real scripts): tests override what they look at.
 */
export function appDeps(repo: Awaited<ReturnType<typeof tmpConfigRepo>>, overrides: Partial<AppDeps> = {}): AppDeps {
  return {
    live: repo.live,
    catalog: () => repo.live.snapshot().catalog,
    sd: repo.sd,
    staleAfterMs: 600_000,
    writer: repo.writer,
    repo: () => ({ branch: 'main', layout: 'bare', error: null, warning: null }),
    clock: () => new Date(),
    logger: silentLogger,
    auth: { adminTokenHash: hashSecret(ADMIN_TOKEN), openReads: true, limiter: new FailureLimiter() },
    metrics: { registry: new Registry() },
    history: async () => [],
    serving: () => true,
    heartbeats: testHeartbeats(`${repo.dir}/../state/heartbeats.json`),
    scriptsDir: `${ROOT}/scripts`,
    ...overrides,
  };
}

/**
 * The API over a real temp config repo, called through app.request() with a clock the test
 * moves. Every answer is checked against the OpenAPI document (openapi-contract.ts). `remote` wires only the webhook secret, with a pull that does nothing: for tests of who may
 * call sync. The real pull over a real Git remote is tested in remote.test.ts. `log` collects
 * the server's log lines. `pacing` sets the big answers' rates and clock. `history` wraps the
 * real history reader (to hold its calls).
 */
export async function apiHarness(options: { openReads?: boolean; maxFailures?: number; remote?: { webhookSecret: string }; log?: string[]; downloadsDir?: string; pacing?: Partial<BulkOptions>; history?: (real: AppDeps['history']) => AppDeps['history'] } = {}) {
  let now = Date.parse('2026-11-26T00:00:00Z');
  const repo = await tmpConfigRepo({ now: () => now });
  const registry = new Registry();
  const heartbeats = testHeartbeats(`${repo.dir}/../state/heartbeats.json`, () => now);
  const app = createApp(
    appDeps(repo, {
      clock: () => new Date(now),
      logger: options.log ? createLogger((line) => options.log!.push(line)) : silentLogger,
      auth: {
        adminTokenHash: hashSecret(ADMIN_TOKEN),
        openReads: options.openReads ?? false,
        limiter: new FailureLimiter({ maxFailures: options.maxFailures ?? 1000, windowMs: 60_000, now: () => now }),
      },
      metrics: { registry },
      history: (options.history ?? ((real) => real))((pathspecs) => fileHistory(repo.dir, pathspecs)),
      heartbeats,
      downloadsDir: options.downloadsDir,
      pacing: options.pacing,
      remote: options.remote && {
        status: { url: 'none', branch: 'main', last_sync_at: null, remote_head: null, error: null, fix: null, last_pull: null, last_push: null, pushes_rejected: 0 },
        pull: async () => {},
        acceptRemoteHistory: async () => {},
        webhookSecret: options.remote.webhookSecret,
      },
    }),
  );

  type Init = { token?: string | null; body?: unknown; raw?: string; headers?: Record<string, string> };
  const call = async (method: string, path: string, init: Init = {}) => {
    const headers: Record<string, string> = { ...init.headers };
    const token = init.token === undefined ? ADMIN_TOKEN : init.token;
    if (token) headers.authorization = `Bearer ${token}`;
    const body = init.raw ?? (init.body === undefined ? undefined : JSON.stringify(init.body));
    const response = await app.request(path, { method, headers, body });
    const text = await response.text();
    checkAnswer(method, path, { status: response.status, text, headers: response.headers });
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: response.status, json, text, headers: response.headers };
  };

  const api = {
    ...repo,
    app,
    registry,
    heartbeats,
    advance: (ms: number) => (now += ms),
    call,
    get: (path: string, init?: Init) => call('GET', path, init),
    post: (path: string, body?: unknown, init?: Init) => call('POST', path, { ...init, body }),
    commits: () => Number(repo.git('rev-list', '--count', 'HEAD').trim()),
    /** Create a bootstrap token and return its secret. */
    async token(body: Record<string, unknown> = {}) {
      const response = await call('POST', '/api/v1/bootstrap-tokens', {
        body: { name: 'test', default_group_id: 'ml-training', max_uses: 10, expires_at: '2027-01-01T00:00:00Z', ...body },
      });
      if (response.status !== 201) throw new Error(`token: ${response.text}`);
      return response.json as { token: string; id: string };
    },
    register: (token: string, body: Record<string, unknown>) => call('POST', '/api/v1/bootstrap/register', { token, body }),
  };
  return api;
}
