import type { Context, MiddlewareHandler } from 'hono';
import type { Principal } from '../access/principal.js';
import type { Fields, Logger } from '../log.js';
import { Counter, Histogram, type Registry } from '../metrics.js';
import { bearerToken, clientAddress, principalOf } from './auth.js';
import { routeOf } from './conventions.js';
import { errorCodeOf, faultMessageOf } from './errors.js';

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
 * body. Authentication failures and rate limits, which a client makes as fast as it can
 * send, are written up to a burst an address a minute, the rest counted (FailureLines).
 */
export function observe(metrics: ApiMetrics, logger: Logger, failures: FailureLines): MiddlewareHandler {
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

    const message = lineFor(method, status, faultMessageOf(c) !== undefined);
    if (!message) return;
    const id = c.req.param('id') ?? c.req.param('name');
    const fields: Fields = {
      method,
      route,
      id: id && LOGGABLE_ID.test(id) ? id : undefined,
      status,
      code: errorCodeOf(c),
      error: faultMessageOf(c),
      by: who(principalOf(c), bearerToken(c) !== undefined, status),
      address: clientAddress(c),
      location: c.res.headers.get('location') ?? undefined,
      ...(c.get(EXTRA as never) as Fields | undefined),
      ms: Math.round(seconds * 10_000) / 10,
    };
    if (status === 401 || status === 429) failures.write(message, fields);
    else if (status >= 500) logger.error(message, fields);
    else if (status >= 400) logger.warn(message, fields);
    else logger.info(message, fields);
  };
}

/** `fault`: the answer is a server fault's error (its message is kept for the log: faultMessageOf). */
function lineFor(method: string, status: number, fault: boolean): string | undefined {
  if (status === 401) return 'authentication failed';
  if (status === 429) return 'rate limited';
  // A read that failed on a fault (a follower's primary away): the caller may have been told less than the log line says.
  if (!WRITES.has(method)) return status === 403 ? 'forbidden' : fault ? 'read failed' : undefined;
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

/**
 * Lines a client can make as fast as it sends (401s, 429s): a password sprayer at 10k
 * requests a second would write 10k lines a second, fill the disk or the journal's rate
 * limit, and push out the lines that matter. The first `burst` lines of a kind from an
 * address in a minute are written; the rest are counted and told in one line per kind and
 * address once the minute is over (at the next such line, by a timer, or at the server's
 * stop: flush()). At most `addresses` addresses are told apart a minute: the lines of any
 * more are written up to a burst, then counted, together as "other addresses".
 */
export class FailureLines {
  private windowStart: number | undefined;
  private readonly seen = new Map<string, { message: string; address: string; written: number; left: number }>();
  private readonly addresses = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private readonly windowMs: number;

  constructor(
    private readonly logger: Logger,
    /** Milliseconds, from the server's clock (tests move it). */
    private readonly now: () => number,
    private readonly options: { burst?: number; windowMs?: number; addresses?: number } = {},
  ) {
    this.windowMs = options.windowMs ?? 60_000;
  }

  write(message: string, fields: Fields): void {
    const now = this.now();
    // A clock stepped back (NTP, a clock set at boot) ends the minute too: else it would last as long as the step.
    if (this.windowStart === undefined || now < this.windowStart || now - this.windowStart >= this.windowMs) {
      this.flush();
      this.windowStart = now;
    }
    let address = String(fields.address ?? 'unknown');
    if (!this.addresses.has(address)) {
      if (this.addresses.size < (this.options.addresses ?? 1000)) this.addresses.add(address);
      else address = 'other addresses';
    }
    const key = `${message}\u0000${address}`;
    const entry = this.seen.get(key) ?? { message, address, written: 0, left: 0 };
    this.seen.set(key, entry);
    if (entry.written < (this.options.burst ?? 10)) {
      entry.written++;
      this.logger.warn(message, fields);
      return;
    }
    entry.left++;
    // Told even if the client stops: once the minute is over, by a timer that keeps no process alive.
    this.timer ??= setTimeout(() => this.flush(), Math.max(1, this.windowMs - (now - this.windowStart!))).unref();
  }

  /** Tell what was left out, and start counting anew. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const { message, address, left } of this.seen.values()) {
      if (left) this.logger.warn('lines left out of the log', { like: message, address, count: left, seconds: Math.round(this.windowMs / 1000) });
    }
    this.seen.clear();
    this.addresses.clear();
    this.windowStart = undefined;
  }
}
