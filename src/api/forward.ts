import type { Context, MiddlewareHandler } from 'hono';
import { sameSecret } from '../tokens/secret.js';
import { AamiError } from '../errors.js';
import { bearerToken, clientAddress, FORWARDED_ADDRESS, resolveSecret, type AuthDeps } from './auth.js';
import { logFields } from './observe.js';

/** Where a follower sends what it does not do itself. */
export interface PrimaryOptions {
  url: string;
  /** Shared with the primary, so it takes the client's address this follower passes on. */
  clusterSecret?: string;
  timeoutMs?: number;
}

const FORWARDED_FOR = 'x-aami-forwarded-for';
const CLUSTER = 'x-aami-cluster';
/** Statuses whose answer has no body: the Response constructor refuses one, even an empty one. */
const NULL_BODY = new Set([204, 205, 304]);
const PASSED_BACK = ['content-type', 'location', 'link', 'etag', 'www-authenticate', 'retry-after', 'allow'];

/**
 * A follower serves reads, SD and node scripts from its own copy of the repository and
 * forwards everything that writes (admin calls, registrations, a node's update or
 * heartbeat) to the one primary, answering with the primary's answer: one writer, no race
 * between servers for the branch. A read with a credential this follower does not know yet
 * (created on the primary a moment ago, not pulled here) is forwarded too, so a token or a
 * credential created anywhere works everywhere at once. POST /api/v1/sync stays local: it
 * pulls this server; so does health: it is this server's.
 */
export function forwardToPrimary(deps: AuthDeps & { heartbeats: { record(hostname: string): Date } }, primary: PrimaryOptions): MiddlewareHandler {
  const base = primary.url.replace(/\/+$/, '');
  return async (c, next) => {
    if (!c.req.path.startsWith('/api/') || !mustForward(c, deps)) return next();
    const headers = new Headers();
    // If-None-Match too: a client polling the target list or http_sd with a credential this
    // follower has not pulled yet gets the primary's 304, not the whole body each time.
    for (const name of ['authorization', 'content-type', 'if-none-match']) {
      const value = c.req.header(name);
      if (value !== undefined) headers.set(name, value);
    }
    headers.set(FORWARDED_FOR, clientAddress(c));
    if (primary.clusterSecret) headers.set(CLUSTER, primary.clusterSecret);
    const method = c.req.method;
    // Who called is decided, and logged, by the primary; this server's line says where it went.
    logFields(c, { by: 'forwarded', primary: base });
    const body = method === 'GET' || method === 'HEAD' ? undefined : await c.req.arrayBuffer();
    let answer: Response;
    try {
      answer = await fetch(`${base}${c.req.path}${new URL(c.req.url).search}`, { method, headers, body, redirect: 'manual', signal: AbortSignal.timeout(primary.timeoutMs ?? 30_000) });
    } catch (error) {
      const reason = error instanceof Error ? (error.cause instanceof Error ? error.cause.message : error.message) : String(error);
      throw new AamiError('primary_unavailable', `this server is a follower and the primary at ${base} cannot be reached (${reason}); reads keep working here, writes need the primary`);
    }
    const bytes = new Uint8Array(await answer.arrayBuffer());
    // A heartbeat also counts here, so this server's health and views show the node as alive.
    if (c.req.path === '/api/v1/nodes/heartbeat' && answer.ok) {
      const hostname = (JSON.parse(Buffer.from(bytes).toString()) as { hostname?: string }).hostname;
      if (hostname) deps.heartbeats.record(hostname);
    }
    const out = new Headers();
    for (const name of PASSED_BACK) {
      const value = answer.headers.get(name);
      if (value !== null) out.set(name, value);
    }
    return new Response(method === 'HEAD' || NULL_BODY.has(answer.status) ? null : bytes, { status: answer.status, headers: out });
  };
}

function mustForward(c: Context, deps: AuthDeps): boolean {
  // This server's own health, whoever asks: a credential it has not pulled yet gets 401 here, as on /metrics.
  if (c.req.path === '/api/v1/health') return false;
  const method = c.req.method;
  if (method !== 'GET' && method !== 'HEAD') return c.req.path !== '/api/v1/sync';
  const secret = bearerToken(c);
  return secret !== undefined && 'failure' in resolveSecret(secret, deps.catalog(), deps.auth.adminTokenHash, deps.clock());
}

/**
 * On the primary: a request a follower forwarded carries the client's address; it is
 * believed only with the cluster secret (anyone could send the header otherwise).
 */
export function trustForwarded(clusterSecret: string | undefined): MiddlewareHandler {
  return async (c, next) => {
    const forwardedFor = c.req.header(FORWARDED_FOR);
    const presented = c.req.header(CLUSTER);
    if (clusterSecret && forwardedFor && presented !== undefined && sameSecret(presented, clusterSecret)) c.set(FORWARDED_ADDRESS as never, forwardedFor as never);
    await next();
  };
}
