import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { BREAK_GLASS, type Principal } from '../access/principal.js';
import type { Catalog } from '../catalog/build.js';
import { credentialView } from '../inventory/views.js';

/**
 * Who signed in, as the console remembers it: the credential's id and the hash its secret
 * had at sign-in, never the secret. Every request checks them against the published catalog,
 * so a credential revoked, expired or given a new secret (by pull request too) ends its
 * sessions at once.
 */
export interface Session {
  /** A named credential's id; undefined for the break-glass admin. */
  credentialId?: string;
  secretHash: string;
  /** Sent in every form and checked on every POST (the cookie alone proves nothing). */
  csrf: string;
  createdAt: number;
  lastSeenAt: number;
}

export interface SessionOptions {
  /** A session unused this long ends. */
  idleMs: number;
  /** A session ends this long after sign-in, used or not. */
  maxAgeMs: number;
  /** Most sessions kept; past it the oldest go first (sign-ins cannot grow memory without bound). */
  maxSessions: number;
}

export const SESSION_DEFAULTS: SessionOptions = { idleMs: 30 * 60_000, maxAgeMs: 12 * 3_600_000, maxSessions: 10_000 };

/**
 * Sessions in memory, by the sha256 of their id: a restart signs everyone out, and a heap
 * dump shows no usable cookie. Kept in the order they were created, so the oldest are
 * dropped from the front.
 */
export class SessionStore {
  private readonly sessions = new Map<string, Session>();

  constructor(
    private readonly now: () => number,
    private readonly options: SessionOptions = SESSION_DEFAULTS,
  ) {}

  /** A new session for `principal`; returns the id for the cookie (shown nowhere else). */
  create(principal: Principal & { kind: 'credential' }, secretHash: string): { id: string; session: Session } {
    this.prune();
    const id = randomBytes(32).toString('base64url');
    const at = this.now();
    const session: Session = { credentialId: principal === BREAK_GLASS ? undefined : principal.id, secretHash, csrf: randomBytes(32).toString('base64url'), createdAt: at, lastSeenAt: at };
    this.sessions.set(key(id), session);
    if (this.sessions.size > this.options.maxSessions) this.sessions.delete(this.sessions.keys().next().value!);
    return { id, session };
  }

  /** The live session with this id (its idle time starts again), or undefined. */
  touch(id: string | undefined): Session | undefined {
    if (!id || id.length > 100) return undefined;
    const k = key(id);
    const session = this.sessions.get(k);
    if (!session) return undefined;
    const at = this.now();
    if (at - session.lastSeenAt > this.options.idleMs || at - session.createdAt > this.options.maxAgeMs) {
      this.sessions.delete(k);
      return undefined;
    }
    session.lastSeenAt = at;
    return session;
  }

  end(id: string | undefined): void {
    if (id) this.sessions.delete(key(id));
  }

  get size(): number {
    return this.sessions.size;
  }

  private prune(): void {
    const at = this.now();
    for (const [k, session] of this.sessions) {
      if (at - session.createdAt <= this.options.maxAgeMs && at - session.lastSeenAt <= this.options.idleMs) continue;
      this.sessions.delete(k);
    }
  }
}

const key = (id: string) => createHash('sha256').update(id).digest('base64url');

/** The principal a session stands for now, or undefined when its credential no longer lets it in. */
export function sessionPrincipal(session: Session, catalog: Catalog, adminTokenHash: string, now: Date): (Principal & { kind: 'credential' }) | undefined {
  if (session.credentialId === undefined) return session.secretHash === adminTokenHash ? (BREAK_GLASS as Principal & { kind: 'credential' }) : undefined;
  const credential = catalog.apiCredentials.get(session.credentialId);
  if (!credential || credential.secret_hash !== session.secretHash || !credentialView(credential, now).active) return undefined;
  return { kind: 'credential', id: credential.id, name: credential.name, role: credential.role };
}

/** Compare a submitted CSRF token with the session's in constant time. */
export function csrfMatches(session: Session, submitted: unknown): boolean {
  if (typeof submitted !== 'string') return false;
  const a = Buffer.from(submitted);
  const b = Buffer.from(session.csrf);
  return a.length === b.length && timingSafeEqual(a, b);
}
