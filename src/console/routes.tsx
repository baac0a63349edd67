import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { z } from 'zod';
import { BREAK_GLASS } from '../access/principal.js';
import { clientAddress, refuse, resolveSecret } from '../api/auth.js';
import { parseValue } from '../api/body.js';
import type { AppDeps } from '../api/deps.js';
import { STATUS } from '../api/errors.js';
import { AamiError } from '../errors.js';
import { endSession, formOf, sameOriginPosts, signedIn, startSession, type ConsoleEnv } from './guard.js';
import { readPages } from './pages.js';
import { PrometheusUp } from './prometheus.js';
import { renderer } from './render.js';
import { SessionStore } from './sessions.js';
import { isAssetName, loadAssets } from './static-assets.js';
import { tokenPages } from './tokens.js';
import { ErrorPage } from './views/layout.js';
import { SignInView } from './views/sign-in.js';

/**
 * No inline script or style, nothing from another origin, no framing: a label value that
 * slipped past escaping still could not run.
 */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const signInForm = z.object({ credential: z.string().trim().min(1, 'paste a credential').max(1000) });

/**
 * The operator console under /console: server-rendered pages over the same domain
 * functions and the same credentials as the API. A signed-in browser holds a random session
 * id in an HttpOnly cookie; the credential itself is read once, at sign-in.
 */
export function consoleRoutes(deps: AppDeps) {
  const app = new Hono<ConsoleEnv>();
  const sessions = new SessionStore(() => deps.clock().getTime());
  const assets = loadAssets();
  const render = renderer(deps, assets);
  const prometheus = deps.prometheusUrl ? new PrometheusUp(deps.prometheusUrl) : undefined;

  app.onError((error, c) => {
    if (!(error instanceof AamiError)) deps.logger.error('console request failed', { method: c.req.method, path: c.req.path, error: error.message });
    const status = error instanceof AamiError ? STATUS[error.code] : 500;
    const message = error instanceof AamiError ? error.message : 'internal error; see the server log';
    return render(c, { title: 'Error' }, <ErrorPage status={status} message={message} />, status);
  });
  app.use('*', async (c, next) => {
    await next();
    c.header('Content-Security-Policy', CSP);
    c.header('X-Content-Type-Options', 'nosniff');
    c.header('X-Frame-Options', 'DENY');
    c.header('Referrer-Policy', 'same-origin');
    if (!c.res.headers.has('Cache-Control')) c.header('Cache-Control', 'no-store');
  });
  app.use('*', sameOriginPosts);
  app.use('*', bodyLimit({ maxSize: 96 * 1024, onError: () => { throw new AamiError('payload_too_large', 'the form is too large'); } }));

  app.get('/assets/:name', (c) => {
    const name = c.req.param('name');
    if (!isAssetName(name)) throw new AamiError('not_found', `no asset ${name}`);
    const asset = assets[name];
    const cache = c.req.query('v') === asset.version ? 'public, max-age=31536000, immutable' : 'no-cache';
    return c.body(asset.body, 200, { 'Content-Type': asset.type, 'Cache-Control': cache });
  });

  app.get('/sign-in', (c) => render(c, { title: 'Sign in' }, <SignInView />));
  app.post('/sign-in', async (c) => {
    try {
      const { credential } = parseValue(signInForm, await formOf(c), 'the form');
      const catalog = deps.catalog();
      const resolved = resolveSecret(credential, catalog, deps.auth.adminTokenHash, deps.clock());
      // Counted like the API's wrong secrets: past the limit, the address gets 429 here too.
      if ('failure' in resolved) refuse(c, deps.auth.limiter, resolved.failure);
      const { principal } = resolved as Exclude<typeof resolved, { failure: string }>;
      if (principal.kind !== 'credential') throw new AamiError('forbidden', 'only a named credential or the admin credential signs in to the console (not a bootstrap token or a node credential)');
      const secretHash = principal === BREAK_GLASS ? deps.auth.adminTokenHash : catalog.apiCredentials.get(principal.id)!.secret_hash;
      startSession(c, sessions, principal, secretHash);
      deps.logger.info('console sign-in', { credential: principal.name, role: principal.role, address: clientAddress(c) });
      return c.redirect('/console/fleet', 303);
    } catch (error) {
      if (!(error instanceof AamiError)) throw error;
      return render(c, { title: 'Sign in' }, <SignInView message={error.message} />, STATUS[error.code]);
    }
  });

  const pages = signedIn(deps, sessions, 'page');
  app.get('/tokens/progress', signedIn(deps, sessions, 'json'));
  app.use('/fleet', pages);
  app.use('/targets/*', pages);
  app.use('/problems', pages);
  app.use('/tokens', pages);
  app.on('POST', '/tokens/*', pages);
  app.post('/sign-out', pages, (c) => {
    endSession(c, sessions);
    return c.redirect('/console/sign-in', 303);
  });
  app.get('/', (c) => c.redirect('/console/fleet', 303));
  app.route('/', readPages(deps, render, prometheus));
  app.route('/', tokenPages(deps, render));
  app.all('*', (c) => {
    throw new AamiError('not_found', `no console page ${c.req.path}`);
  });
  return app;
}
