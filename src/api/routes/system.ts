import { createHash } from 'node:crypto';
import { Hono } from 'hono';
import { CLOSE, COMMA, EMPTY, jobOfFile, OPEN } from '../../compile/compiler.js';
import { AamiError } from '../../errors.js';
import { countedStaleTargets } from '../../inventory/nodes.js';
import { requireRole, seesNames } from '../auth.js';
import { bulkBody, cachedBody, query } from '../conventions.js';
import type { RouteDeps } from '../deps.js';
import { openApiDocument } from '../spec/document.js';
import { sdQuery } from '../spec/query.js';

/** An ETag of the bytes, in one buffer or in parts (hashed in turn, never joined). */
function etagOf(bytes: Buffer | Buffer[]): string {
  const hash = createHash('sha256');
  for (const part of [bytes].flat()) hash.update(part);
  return `"${hash.digest('base64url').slice(0, 27)}"`;
}
/** Made at the first request for the document: building it costs a start ~30 ms. */
let openApiEtag: string | undefined;

/**
 * http_sd answers made once per SD compile, not per request, each with an ETag of its
 * bytes: the SD files' own parts, in the order of the files' names (the same output gives
 * the same bytes and ETag on every server and after a restart, whatever order they were
 * read in). They are the output's buffers, not a copy: joined into one, they were a second
 * copy of every job's entries (51 MB at 100k targets) kept as long as the output.
 */
class SdBodies {
  private output: ReadonlyMap<string, Buffer[]> | undefined;
  private bodies = new Map<string, { parts: Buffer[]; etag: string }>();

  /**
   * The entries of `job`, or of every job; undefined for a job with no file. A job of
   * aami.yaml with no targets has no file with --sd-layout group: `configured` says to
   * answer it with [], as its empty file does with one file per job.
   */
  of(output: ReadonlyMap<string, Buffer[]>, job: string | undefined, configured: (job: string) => boolean): { parts: Buffer[]; etag: string } | undefined {
    if (output !== this.output) {
      this.output = output;
      this.bodies = new Map();
    }
    const key = job ?? '';
    let body = this.bodies.get(key);
    if (!body) {
      const names = [...output.keys()].filter((name) => job === undefined || jobOfFile(name) === job).sort();
      if (job !== undefined && !names.length && !configured(job)) return undefined;
      const files = names.map((name) => output.get(name)!);
      const parts = files.length === 1 ? files[0]! : joined(files);
      body = { parts, etag: etagOf(parts) };
      this.bodies.set(key, body);
    }
    return body;
  }
}

/**
 * The entries of several SD files in one list: every job's, or one job's group shards with
 * --sd-layout group (a file is [OPEN, entries..., CLOSE] or [EMPTY]).
 */
function joined(files: Buffer[][]): Buffer[] {
  const parts: Buffer[] = [OPEN];
  for (const file of files) {
    if (file.length < 3) continue; // [EMPTY]
    if (parts.length > 1) parts.push(COMMA);
    for (let i = 1; i < file.length - 1; i++) parts.push(file[i]!);
  }
  return parts.length > 1 ? [...parts, CLOSE] : [EMPTY];
}

/** Most entries health lists of invalid files and stale nodes; the counts are always whole. */
const HEALTH_LIST_LIMIT = 50;
/**
 * Health for a caller without a credential: the lists name hosts (file paths, host names),
 * which reading the inventory needs a credential for. Probes need the status alone.
 */
const WITHHELD = 'compiler.invalid_files and nodes.stale name hosts, and so can messages and the remote\'s address: they are for a credential (Authorization: Bearer <credential>) or with --open-reads; the counts are whole';
/** An error message, to a caller who does not see names: that there is one. */
const SAID = '(an error: its message is for a credential)';
const FOR_A_CREDENTIAL = '(for a credential)';

/** Health, the server's own metrics, and http_sd. */
export function systemRoutes(deps: RouteDeps) {
  const app = new Hono();

  /** `names`: the caller may see host names and file paths (seesNames); others get the counts. */
  const health = (names: boolean) => {
    const snapshot = deps.live.snapshot();
    const { problems } = snapshot;
    const { status } = deps.sd;
    const repo = deps.repo();
    const serving = deps.serving() && status.lastSuccessAt !== undefined;
    const stale = countedStaleTargets(deps);
    // Messages can name hosts too (a remote's hook refusing targets/x/host.yaml, a group's shard): set or not, told to all; what they say, to callers who see names.
    const said = <T extends string | null | undefined>(text: T): T | typeof SAID => (names || text === null || text === undefined ? text : SAID);
    const remote = deps.remote?.status ?? null;
    return {
      code: serving ? 200 : 503,
      body: {
        status: !serving ? 'unavailable' : problems.length || status.lastError || repo.error || deps.writer.lastFailure || remote?.error ? 'degraded' : 'healthy',
        repo: {
          head: snapshot.head,
          ...repo,
          error: said(repo.error),
          warning: said(repo.warning),
          remote: remote && {
            ...remote,
            // The Git server's address and path: for a credential too.
            url: names ? remote.url : FOR_A_CREDENTIAL,
            error: said(remote.error),
            fix: said(remote.fix),
            last_pull: remote.last_pull && { ...remote.last_pull, reason: said(remote.last_pull.reason) },
            last_push: remote.last_push && { ...remote.last_push, reason: said(remote.last_push.reason) },
          },
        },
        compiler: {
          last_success_at: status.lastSuccessAt?.toISOString() ?? null,
          last_duration_ms: status.lastDurationMs === undefined ? null : Math.round(status.lastDurationMs * 10) / 10,
          last_error: said(status.lastError ?? null),
          // Bounded: a pull request with 100k problems must not make health a 14 MB answer.
          invalid_files: names ? problems.slice(0, HEALTH_LIST_LIMIT) : [],
          invalid_file_count: new Set(problems.map((p) => p.file)).size,
          problem_count: problems.length,
        },
        nodes: {
          stale_after_seconds: deps.staleAfterMs / 1000,
          stale_count: stale?.length ?? null,
          stale: names && stale ? stale.slice(0, HEALTH_LIST_LIMIT) : [],
        },
        writer: {
          queue_depth: deps.writer.pending,
          last_failure: deps.writer.lastFailure ? { at: deps.writer.lastFailure.at.toISOString(), message: said(deps.writer.lastFailure.message) } : null,
        },
        withheld: names ? null : WITHHELD,
      },
    };
  };
  app.get('/api/v1/health', (c) => {
    // HEAD is the status code alone: nothing to withhold, and a probe's header is not checked.
    const { code, body } = health(c.req.method === 'GET' && seesNames(c, deps));
    return c.json(body, code as 200 | 503);
  });

  app.get('/metrics', async (c) => c.text(await deps.metrics.registry.render(c.req.method === 'GET' && seesNames(c, deps)), 200, { 'Content-Type': deps.metrics.registry.contentType }));
  app.get('/api/v1/openapi.json', (c) => {
    const document = openApiDocument();
    return cachedBody(c, document, (openApiEtag ??= etagOf(document)));
  });

  // http_sd: the same bytes as the file_sd files. Never "200 []" before the first compile:
  // Prometheus would take that as "no targets" and drop everything it scrapes.
  const sd = new SdBodies();
  app.get('/api/v1/sd/prometheus', requireRole(deps, 'reader'), (c) => {
    const { job } = query(c, sdQuery);
    const current = () => {
      const output = deps.sd.lastOutput;
      if (!output) throw new AamiError('not_ready', 'no service discovery output yet: the first compile has not finished');
      const body = sd.of(output, job, (name) => Object.values(deps.catalog().settings.exporters).some((type) => type.job === name));
      if (!body) throw new AamiError('not_found', `no job "${job}"; jobs: ${[...new Set([...output.keys()].map(jobOfFile))].join(', ')}`);
      return body;
    };
    return bulkBody(c, deps.bulk, 'sd', current);
  });
  return app;
}
