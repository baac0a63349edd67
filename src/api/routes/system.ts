import { Hono } from 'hono';
import { CLOSE, COMMA, EMPTY, OPEN } from '../../compile/compiler.js';
import { AamiError } from '../../errors.js';
import { staleTargets } from '../../inventory/nodes.js';
import { requireRole } from '../auth.js';
import type { AppDeps } from '../deps.js';


/** Most entries health lists of invalid files and stale nodes; the counts are always whole. */
const HEALTH_LIST_LIMIT = 50;

/** Health, the server's own metrics, and http_sd. */
export function systemRoutes(deps: AppDeps) {
  const app = new Hono();

  const health = () => {
    const { problems } = deps.sync.snapshot();
    const { status } = deps.sync;
    const serving = deps.serving() && status.lastSuccessAt !== undefined;
    const stale = staleTargets(deps.catalog(), (hostname) => deps.heartbeats.lastSeen(hostname), deps.clock(), deps.staleAfterMs);
    return {
      code: serving ? 200 : 503,
      body: {
        status: !serving ? 'unavailable' : problems.length || status.lastError || deps.remote?.status.error ? 'degraded' : 'healthy',
        repo: { head: deps.store.head(), branch: deps.store.branch, remote: deps.remote?.status ?? null },
        compiler: {
          last_success_at: status.lastSuccessAt?.toISOString() ?? null,
          last_duration_ms: status.lastDurationMs === undefined ? null : Math.round(status.lastDurationMs * 10) / 10,
          last_error: status.lastError ?? null,
          // Bounded: a pull request with 100k problems must not make health a 14 MB answer.
          invalid_files: problems.slice(0, HEALTH_LIST_LIMIT),
          invalid_file_count: new Set(problems.map((p) => p.file)).size,
          problem_count: problems.length,
        },
        nodes: {
          stale_after_seconds: deps.staleAfterMs / 1000,
          stale_count: stale.length,
          stale: stale.slice(0, HEALTH_LIST_LIMIT),
        },
        writer: { queue_depth: deps.writer.pending },
      },
    };
  };
  app.get('/api/v1/health', (c) => {
    const { code, body } = health();
    return c.json(body, code as 200 | 503);
  });
  app.on('HEAD', '/api/v1/health', (c) => c.body(null, health().code as 200 | 503));

  app.get('/metrics', (c) => c.text(deps.metrics.registry.render(), 200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' }));

  // http_sd: the same bytes as the file_sd files. Never "200 []" before the first compile:
  // Prometheus would take that as "no targets" and drop everything it scrapes.
  app.get('/api/v1/sd/prometheus', requireRole(deps, 'reader'), (c) => {
    const output = deps.sync.lastOutput;
    if (!output) throw new AamiError('not_ready', 'no service discovery output yet: the first compile has not finished');
    const job = c.req.query('job');
    let parts: Buffer[];
    if (job) {
      const file = output.get(`${job}.json`);
      if (!file) throw new AamiError('not_found', `no job "${job}"; jobs: ${[...output.keys()].map((n) => n.replace(/\.json$/, '')).join(', ')}`);
      parts = file;
    } else {
      // Every job's entries in one list.
      const entries = [...output.values()].flatMap((file) => file.slice(1, -1)).filter((part) => part !== COMMA);
      parts = entries.length ? [OPEN, ...entries.flatMap((e, i) => (i ? [COMMA, e] : [e])), CLOSE] : [EMPTY];
    }
    const bytes = Buffer.concat(parts);
    return c.body(new Uint8Array(bytes), 200, { 'Content-Type': 'application/json' });
  });
  return app;
}
