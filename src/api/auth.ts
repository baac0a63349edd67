import { getConnInfo } from '@hono/node-server/conninfo';
import type { Context, MiddlewareHandler } from 'hono';
import { BREAK_GLASS, describePrincipal, roleIncludes, type Principal } from '../access/principal.js';
import type { Catalog } from '../catalog/build.js';
import { AamiError } from '../errors.js';
import type { Role } from '../schema/index.js';
import { BOOTSTRAP_PREFIX, CREDENTIAL_PREFIX, hashSecret, NODE_PREFIX, parseApiCredential, parseBootstrapToken, secretMatches } from '../tokens/secret.js';

/** Where trustForwarded() (forward.ts) leaves the client address a follower passed on. */
export const FORWARDED_ADDRESS = 'aami.forwardedFor';

/**
 * The peer's address. Proxy headers are not trusted (anyone can send them); the one
 * exception is a follower's forward, checked by trustForwarded() against the cluster secret.
 */
export function clientAddress(c: Context): string {
  const forwarded = c.get(FORWARDED_ADDRESS as never) as string | undefined;
  if (forwarded) return forwarded;
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

export interface LimiterOptions {
  maxFailures: number;
  windowMs: number;
  now: () => number;
  /** Most addresses remembered; past it the oldest windows are forgotten first. */
  maxAddresses: number;
}

/**
 * Counts wrong secrets per source address in a fixed window. Past the limit, a wrong secret
 * from that address gets 429 instead of 401 until its window ends. A valid credential is
 * always served: behind one NAT, an attacker's failures never lock out the admin, the nodes
 * or Prometheus. Secrets carry ≥ 190 random bits, so the limit bounds noise and work, not
 * the odds of a guess.
 *
 * Windows are kept in a Map in the order they opened, so expired ones are dropped from the
 * front: constant work per failure and bounded memory at any number of addresses.
 */
export class FailureLimiter {
  private readonly windows = new Map<string, { count: number; since: number }>();
  private readonly options: LimiterOptions;

  constructor(options: Partial<LimiterOptions> = {}) {
    this.options = { maxFailures: 20, windowMs: 60_000, now: Date.now, maxAddresses: 100_000, ...options };
  }

  /** Seconds until the address may fail again, or undefined while it is under its limit. */
  limited(address: string): number | undefined {
    const window = this.current(address);
    if (!window || window.count < this.options.maxFailures) return undefined;
    return Math.max(1, Math.ceil((window.since + this.options.windowMs - this.options.now()) / 1000));
  }

  /** Takes one count back (a counted attempt that came to nothing). */
  forgive(address: string): void {
    const window = this.current(address);
    if (window && window.count > 0) window.count--;
  }

  fail(address: string): void {
    this.prune();
    let window = this.current(address);
    if (!window) {
      window = { count: 0, since: this.options.now() };
      this.windows.set(address, window);
      if (this.windows.size > this.options.maxAddresses) this.windows.delete(this.windows.keys().next().value!);
    }
    window.count++;
  }

  get size(): number {
    return this.windows.size;
  }

  private current(address: string) {
    const window = this.windows.get(address);
    // A clock stepped back ends the window too (it would otherwise last as long again).
    const age = window ? this.options.now() - window.since : 0;
    if (window && (age >= this.options.windowMs || age < 0)) {
      this.windows.delete(address);
      return undefined;
    }
    return window;
  }

  private prune(): void {
    const now = this.options.now();
    for (const [address, window] of this.windows) {
      if (now - window.since < this.options.windowMs) break;
      this.windows.delete(address);
    }
  }
}

export interface AuthOptions {
  /** sha256 hash of the break-glass admin credential (AAMI_ADMIN_TOKEN or the generated one). */
  adminTokenHash: string;
  /** Let anyone read the inventory (targets, groups, SD) without a credential. */
  openReads: boolean;
  limiter: FailureLimiter;
}

type Resolution = { principal: Principal } | { failure: string };

/**
 * Who a secret is, checked against the published catalog: synchronous, so a burst of
 * concurrent wrong secrets is counted one by one and the limit holds. Expired, revoked and
 * used-up bootstrap tokens still resolve (to the token): the registration says which it is.
 */
export function resolveSecret(secret: string, catalog: Catalog, adminTokenHash: string, now: Date): Resolution {
  if (secretMatches(secret, adminTokenHash)) return { principal: BREAK_GLASS };
  if (secret.startsWith(CREDENTIAL_PREFIX)) {
    const parsed = parseApiCredential(secret);
    const credential = parsed && catalog.apiCredentials.get(parsed.id);
    if (!parsed || !credential || !secretMatches(parsed.secret, credential.secret_hash)) return { failure: 'the credential is not valid' };
    if (credential.revoked) return { failure: `credential ${credential.id} (${credential.name}) has been revoked` };
    if (credential.expires_at && Date.parse(credential.expires_at) <= now.getTime()) return { failure: `credential ${credential.id} (${credential.name}) expired at ${credential.expires_at}` };
    return { principal: { kind: 'credential', id: credential.id, name: credential.name, role: credential.role } };
  }
  if (secret.startsWith(BOOTSTRAP_PREFIX)) {
    const parsed = parseBootstrapToken(secret);
    const token = parsed && catalog.tokens.get(parsed.id);
    if (!parsed || !token || !secretMatches(parsed.secret, token.secret_hash)) return { failure: 'the bootstrap token is not valid' };
    return { principal: { kind: 'token', token } };
  }
  if (secret.startsWith(NODE_PREFIX)) {
    const hostname = catalog.nodeCredentials.get(hashSecret(secret));
    if (!hostname) return { failure: 'the node credential is not valid (the target may have been deleted, or its credential replaced)' };
    return { principal: { kind: 'node', hostname } };
  }
  return { failure: 'the credential is not valid' };
}

export interface AuthDeps {
  auth: AuthOptions;
  catalog: () => Catalog;
  clock: () => Date;
}

const PRINCIPAL = 'aami.principal';

/** The principal a request was authenticated as, if it got that far. */
export const principalOf = (c: Context): Principal | undefined => c.get(PRINCIPAL as never);

/** Answer a wrong secret: 401, counted against the address; 429 once the address is over its limit. */
export function refuse(c: Context, limiter: FailureLimiter, message: string): never {
  const address = clientAddress(c);
  const retryAfter = limiter.limited(address);
  if (retryAfter !== undefined) {
    throw new AamiError('rate_limited', `too many wrong credentials from ${address}; retry in ${retryAfter} s`, { retry_after_seconds: retryAfter });
  }
  limiter.fail(address);
  throw new AamiError('unauthorized', message);
}

/** The request's principal, resolved once per request; a wrong secret counts against its address. */
export function authenticate(c: Context, deps: AuthDeps): Principal {
  const known = c.get(PRINCIPAL as never) as Principal | undefined;
  if (known) return known;
  const secret = bearerToken(c);
  let principal: Principal = { kind: 'anonymous' };
  if (secret) {
    const resolved = resolveSecret(secret, deps.catalog(), deps.auth.adminTokenHash, deps.clock());
    if ('failure' in resolved) refuse(c, deps.auth.limiter, resolved.failure);
    principal = resolved.principal;
  }
  c.set(PRINCIPAL as never, principal as never);
  return principal;
}

const NEEDS: Record<Role, string> = {
  reader: 'a credential with the reader role (or editor, admin)',
  editor: 'a credential with the editor role (or admin)',
  admin: 'a credential with the admin role',
};

/** The principal, if it is a credential whose role includes `role` (or anyone, for reads the operator opened). */
export function authorize(c: Context, deps: AuthDeps, role: Role): Principal {
  const principal = authenticate(c, deps);
  if (principal.kind === 'credential' && roleIncludes(principal.role, role)) return principal;
  if (role === 'reader' && deps.auth.openReads) return principal;
  if (principal.kind === 'anonymous') throw new AamiError('unauthorized', `this call needs ${NEEDS[role]}: Authorization: Bearer <credential>`);
  throw new AamiError('forbidden', `this call needs ${NEEDS[role]}; the request has ${describePrincipal(principal)}`);
}

/**
 * Whether the caller may see the inventory's names (host names, file paths) where anyone may
 * call (health, /metrics): a credential, or reads the operator opened. Not a node credential
 * or a bootstrap token: a node reads its own target only. A wrong secret is refused here as
 * anywhere (401, counted by the failure limiter): the answer must not tell secrets apart.
 */
export function seesNames(c: Context, deps: AuthDeps): boolean {
  return namesFor(deps, authenticate(c, deps));
}

/**
 * seesNames for the message of an error the request is answered with: nothing refused and
 * nothing counted (a follower forwards a secret it has not pulled yet unchecked, and answers
 * 503 if its primary is away: that is no wrong secret). A secret that does not resolve here
 * sees what anyone sees.
 */
export function seesNamesInError(c: Context, deps: AuthDeps): boolean {
  const known = principalOf(c);
  if (known) return namesFor(deps, known);
  const secret = bearerToken(c);
  const resolved = secret === undefined ? undefined : resolveSecret(secret, deps.catalog(), deps.auth.adminTokenHash, deps.clock());
  return namesFor(deps, resolved && 'principal' in resolved ? resolved.principal : undefined);
}

const namesFor = (deps: AuthDeps, principal: Principal | undefined) => deps.auth.openReads || (principal?.kind === 'credential' && roleIncludes(principal.role, 'reader'));

export function requireRole(deps: AuthDeps, role: Role): MiddlewareHandler {
  return async (c, next) => {
    authorize(c, deps, role);
    await next();
  };
}

/** The host name of the node whose credential the request carries. */
export function authenticateNode(c: Context, deps: AuthDeps): string {
  const principal = authenticate(c, deps);
  if (principal.kind === 'node') return principal.hostname;
  if (principal.kind === 'anonymous') throw new AamiError('unauthorized', 'this call needs the node credential issued at registration (Authorization: Bearer aami_node_...)');
  throw new AamiError('forbidden', `this call needs a node credential; the request has ${describePrincipal(principal)}`);
}

/** The credential (with its role) behind a write, for the commit's author. */
export function credentialOf(principal: Principal): Principal & { kind: 'credential' } {
  if (principal.kind !== 'credential') throw new AamiError('forbidden', `this call needs a named credential; the request has ${describePrincipal(principal)}`);
  return principal;
}
