import type { Context, MiddlewareHandler } from 'hono';
import type { Principal } from '../access/principal.js';
import type { Fields, Logger } from '../log.js';
import { Counter, Histogram, type Registry } from '../metrics.js';
import { bearerToken, clientAddress, principalOf } from './auth.js';
import { routeOf } from './conventions.js';
import { errorCodeOf } from './errors.js';

/** The metrics the API keeps; registered on the server's registry when the app is made. */
export function apiMetrics(registry: Registry) {
  return {
    registrations: registry.add(new Counter('aami_registrations_total', 'Self-registrations and node updates by outcome (created, reenrolled, updated, unchanged, or an error code).', ['outcome'])),
    requests: registry.add(new Counter('aami_http_requests_total', 'HTTP requests answered, by method, route pattern (never the raw path) and status.', ['method', 'route', 'status'])),
    seconds: registry.add(new Histogram('aami_http_request_duration_seconds', 'Time to answer an HTTP request, by method, route pattern and status.', ['method', 'route', 'status'])),
  };
}
export type ApiMetrics = ReturnType<typeof apiMetrics>;

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
const WRITES = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
/** What may stand for an id in a log line: a host name or a slug. Anything else (a pasted secret, say) is left out. */
const LOGGABLE_ID = /^[a-z0-9][a-z0-9.-]{0,252}$/;
const EXTRA = 'aami.log';

/** Add fields to the request's log line (a registration's host name and outcome, say). */
export function logFields(c: Context, fields: Fields): void {
  c.set(EXTRA as never, { ...(c.get(EXTRA as never) as Fields | undefined), ...fields } as never);
}

/**
 * Counts and times every request by route pattern and status, and writes one logfmt line
 * per write (done, refused or failed), per authentication failure and per rate limit.
 * A line names the route, the id in the path, who called (credential name, token id or
 * node), the address, the status and the error code; never a secret, a query string or a
 * body.
 */
export function observe(metrics: ApiMetrics, logger: Logger): MiddlewareHandler {
  return async (c, next) => {
    const started = performance.now();
    await next();
    const seconds = (performance.now() - started) / 1000;
    const status = c.res.status;
    const route = routeOf(c)?.path ?? 'unmatched';
    const method = METHODS.has(c.req.method) ? c.req.method : 'other';
    const labels = { method, route, status: String(status) };
    metrics.requests.inc(labels);
    metrics.seconds.observe(seconds, labels);

    const message = lineFor(method, status);
    if (!message) return;
    const id = c.req.param('id') ?? c.req.param('name');
    const fields: Fields = {
      method,
      route,
      id: id && LOGGABLE_ID.test(id) ? id : undefined,
      status,
      code: errorCodeOf(c),
      by: who(principalOf(c), bearerToken(c) !== undefined, status),
      address: clientAddress(c),
      location: c.res.headers.get('location') ?? undefined,
      ...(c.get(EXTRA as never) as Fields | undefined),
      ms: Math.round(seconds * 10_000) / 10,
    };
    if (status >= 500) logger.error(message, fields);
    else if (status >= 400) logger.warn(message, fields);
    else logger.info(message, fields);
  };
}

function lineFor(method: string, status: number): string | undefined {
  if (status === 401) return 'authentication failed';
  if (status === 429) return 'rate limited';
  if (!WRITES.has(method)) return status === 403 ? 'forbidden' : undefined;
  return status < 400 ? 'write' : status < 500 ? 'write refused' : 'write failed';
}

function who(principal: Principal | undefined, sentSecret: boolean, status: number): string {
  switch (principal?.kind) {
    case 'credential':
      return principal.id === principal.name ? `credential:${principal.name}` : `credential:${principal.name}/${principal.id}`;
    case 'token':
      return `token:${principal.token.id}`;
    case 'node':
      return `node:${principal.hostname}`;
    default:
      if (!sentSecret) return 'nobody';
      // Refused before the secret was looked at (a bad query string, say): say nothing about it.
      return status === 401 || status === 429 ? 'a secret that is not valid' : 'unauthenticated';
  }
}
