import type { Context, MiddlewareHandler } from 'hono';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import { roleIncludes, type Principal } from '../access/principal.js';
import type { AppDeps } from '../api/deps.js';
import { AamiError } from '../errors.js';
import type { Role } from '../schema/index.js';
import { csrfMatches, sessionPrincipal, type Session, type SessionStore } from './sessions.js';
import type { Viewer } from './views/layout.js';

const COOKIE = 'aami_console';

export interface SignedIn {
  principal: Principal & { kind: 'credential' };
  session: Session;
  viewer: Viewer;
}

export type ConsoleEnv = { Variables: { signedIn: SignedIn } };

/**
 * Whether a request comes from a page of this server. Browsers send Origin with every POST;
 * its host must be the one the request was sent to (only the host is compared: behind a
 * proxy that ends TLS, the page is https and the request reaching us is http). Without
 * Origin, only Sec-Fetch-Site: same-origin passes. SameSite=Strict alone is not enough:
 * another port of the same host is the same site, and gets the cookie.
 */
export function sameOrigin(c: Context): boolean {
  const host = c.req.header('host')?.toLowerCase();
  const origin = c.req.header('origin');
  if (origin !== undefined) {
    if (!host || origin === 'null') return false;
    try {
      return new URL(origin).host === host;
    } catch {
      return false;
    }
  }
  return c.req.header('sec-fetch-site') === 'same-origin';
}

/** Every POST to the console, sign-in included, comes from the console's own pages. */
export const sameOriginPosts: MiddlewareHandler = async (c, next) => {
  if (c.req.method !== 'GET' && c.req.method !== 'HEAD' && !sameOrigin(c)) {
    throw new AamiError('forbidden', 'a form from another site cannot act on the console (the Origin of the request is not this server)');
  }
  await next();
};

/** The page is https (as the browser saw it): the cookie then goes over https only. */
function viaHttps(c: Context): boolean {
  return new URL(c.req.url).protocol === 'https:' || c.req.header('origin')?.startsWith('https://') === true;
}

/** A new session for the principal, replacing any the browser had: a session id is never reused across sign-ins. */
export function startSession(c: Context, sessions: SessionStore, principal: Principal & { kind: 'credential' }, secretHash: string): void {
  sessions.end(getCookie(c, COOKIE));
  const { id } = sessions.create(principal, secretHash);
  setCookie(c, COOKIE, id, { path: '/console', httpOnly: true, sameSite: 'Strict', secure: viaHttps(c) });
}

export function endSession(c: Context, sessions: SessionStore): void {
  sessions.end(getCookie(c, COOKIE));
  deleteCookie(c, COOKIE, { path: '/console', httpOnly: true, sameSite: 'Strict', secure: viaHttps(c) });
}

/**
 * The signed-in principal, checked on every request against the published catalog; a POST
 * must also carry the session's CSRF token. Without a live session a page redirects to the
 * sign-in form, and the progress feed answers 401.
 */
export function signedIn(deps: AppDeps, sessions: SessionStore, answer: 'page' | 'json'): MiddlewareHandler<ConsoleEnv> {
  return async (c, next) => {
    const id = getCookie(c, COOKIE);
    const session = sessions.touch(id);
    const principal = session && sessionPrincipal(session, deps.catalog(), deps.auth.adminTokenHash, deps.clock());
    if (!session || !principal) {
      if (session) sessions.end(id);
      if (answer === 'json') return c.json({ error: { code: 'unauthorized', message: 'sign in to the console again', details: [] } }, 401);
      if (c.req.method === 'GET') return c.redirect('/console/sign-in', 303);
      throw new AamiError('unauthorized', 'your console session has ended: sign in again');
    }
    if (c.req.method === 'POST' && !csrfMatches(session, (await formOf(c))._csrf)) {
      throw new AamiError('forbidden', 'the form was not sent by this console session (its CSRF token is missing or wrong): reload the page and try again');
    }
    c.set('signedIn', { principal, session, viewer: { name: principal.name, role: principal.role, csrf: session.csrf } });
    await next();
  };
}

/**
 * A console form's fields. Hono reads the body once and keeps it (the CSRF check and the
 * handler both ask); a body it cannot read as a form (a multipart body cut short, a wrong
 * boundary) is a 400, not the TypeError it throws.
 */
export async function formOf(c: Context): Promise<Record<string, unknown>> {
  try {
    return await c.req.parseBody();
  } catch (error) {
    throw new AamiError('validation_failed', `the form could not be read: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** Refuse a principal whose role does not include `role`: enforced here, not only by hiding buttons. */
export function requireRole(signed: SignedIn, role: Role): Principal & { kind: 'credential' } {
  if (!roleIncludes(signed.principal.role, role)) {
    throw new AamiError('forbidden', `this needs the ${role} role (or higher); ${signed.principal.name} is a ${signed.principal.role}`);
  }
  return signed.principal;
}
