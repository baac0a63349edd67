import { getConnInfo } from '@hono/node-server/conninfo';
import type { Context, MiddlewareHandler } from 'hono';
import { AamiError } from '../errors.js';
import { secretMatches } from '../tokens/secret.js';

/** The peer's address (no proxy headers are trusted: anyone can send them). */
export function clientAddress(c: Context): string {
  try {
    return getConnInfo(c).remote.address ?? 'unknown';
  } catch {
    return 'local'; // app.request() in tests has no socket
  }
}

export function bearerToken(c: Context): string | undefined {
  const header = c.req.header('authorization');
  const match = header && /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match ? match[1] : undefined;
}

/**
 * Counts failed authentications per source address in a fixed window; past the limit every
 * request from that address is refused until the window ends, so secrets cannot be guessed
 * at network speed. Successful requests are never counted.
 */
export class FailureLimiter {
  private readonly failures = new Map<string, { count: number; since: number }>();

  constructor(
    private readonly options: { maxFailures: number; windowMs: number; now: () => number } = { maxFailures: 20, windowMs: 60_000, now: Date.now },
  ) {}

  check(address: string): void {
    const entry = this.current(address);
    if (entry && entry.count >= this.options.maxFailures) {
      const retryAfter = Math.ceil((entry.since + this.options.windowMs - this.options.now()) / 1000);
      throw new AamiError('rate_limited', `too many failed attempts from ${address}; retry in ${retryAfter} s`, { retry_after_seconds: retryAfter });
    }
  }

  fail(address: string): void {
    const entry = this.current(address) ?? { count: 0, since: this.options.now() };
    entry.count++;
    this.failures.set(address, entry);
    if (this.failures.size > 10_000) this.prune();
  }

  private current(address: string) {
    const entry = this.failures.get(address);
    if (entry && this.options.now() - entry.since >= this.options.windowMs) {
      this.failures.delete(address);
      return undefined;
    }
    return entry;
  }

  private prune(): void {
    for (const address of [...this.failures.keys()]) this.current(address);
  }
}

export interface AuthOptions {
  /** sha256 hash of the admin credential. */
  adminTokenHash: string;
  /** Let anyone read the inventory (targets, groups, SD) without a credential. */
  openReads: boolean;
  limiter: FailureLimiter;
}

const AUTH_FAILURES = new Set(['unauthorized', 'token_expired', 'token_revoked']);

/** Run `attempt` unless the caller's address is over its failure limit; an auth failure counts against it. */
export async function guarded<T>(c: Context, limiter: FailureLimiter, attempt: () => T | Promise<T>): Promise<T> {
  const address = clientAddress(c);
  limiter.check(address);
  try {
    return await attempt();
  } catch (error) {
    if (error instanceof AamiError && AUTH_FAILURES.has(error.code)) limiter.fail(address);
    throw error;
  }
}

export function requireAdmin(options: AuthOptions): MiddlewareHandler {
  return async (c, next) => {
    await guarded(c, options.limiter, () => {
      const token = bearerToken(c);
      if (!token) throw new AamiError('unauthorized', 'this call needs the admin credential: Authorization: Bearer <admin token>');
      if (!secretMatches(token, options.adminTokenHash)) throw new AamiError('unauthorized', 'the admin credential is not valid');
    });
    await next();
  };
}

/** Reads need the admin credential unless the operator opened them. */
export function requireReader(options: AuthOptions): MiddlewareHandler {
  const admin = requireAdmin(options);
  return async (c, next) => (options.openReads ? next() : admin(c, next));
}
