import { Hono } from 'hono';
import { consoleRoutes } from '../console/routes.js';
import { AamiError } from '../errors.js';
import { limited } from '../lanes.js';
import { readBody } from './body.js';
import { BulkReads } from './bulk.js';
import { checkQuery, notFound } from './conventions.js';
import type { AppDeps } from './deps.js';
import { seesNamesInError } from './auth.js';
import { onError, sendError } from './errors.js';
import { forwardToPrimary, trustForwarded } from './forward.js';
import { apiMetrics, FailureLines, observe } from './observe.js';
import { credentialRoutes } from './routes/credentials.js';
import { groupRoutes } from './routes/groups.js';
import { nodeRoutes } from './routes/nodes.js';
import { registerRoutes } from './routes/register.js';
import { scriptRoutes } from './routes/scripts.js';
import { syncRoutes } from './routes/sync.js';
import { systemRoutes } from './routes/system.js';
import { targetRoutes } from './routes/targets.js';
import { tokenRoutes } from './routes/tokens.js';

/**
 * History reads at once, and waiting behind them: each is a `git log` walking the history
 * (~0.4 s of a core at 30k commits), which any reader can ask for as often as it likes.
 */
const HISTORY_LIMITS = { running: 2, waiting: 16 };

export function createApp(appDeps: AppDeps) {
  const maxBodyBytes = appDeps.maxBodyBytes ?? 64 * 1024;
  const metrics = apiMetrics(appDeps.metrics.registry);
  const history = limited(appDeps.history, HISTORY_LIMITS, () => new AamiError('rate_limited', `${HISTORY_LIMITS.running + HISTORY_LIMITS.waiting} history reads are running or waiting already: retry in a second`, { retry_after_seconds: 1 }));
  const deps = { ...appDeps, history, registrations: metrics.registrations, bulk: new BulkReads(appDeps.writer, appDeps.pacing) };
  const app = new Hono();
  app.onError(onError(deps.logger, (c) => seesNamesInError(c, deps)));
  app.notFound(notFound(app));
  app.use('*', observe(metrics, deps.logger, deps.failureLines ?? new FailureLines(deps.logger, () => deps.clock().getTime())));
  // Before anything that can refuse: a refusal is logged with the client a follower passed on.
  app.use('*', trustForwarded(deps.clusterSecret));
  app.use('*', checkQuery());
  app.use('/api/*', readBody(maxBodyBytes, (c) => sendError(c, new AamiError('payload_too_large', `the request body is larger than ${maxBodyBytes} bytes`))));
  if (deps.primary) app.use('*', forwardToPrimary(deps, deps.primary));
  app.route('/', systemRoutes(deps));
  app.route('/api/v1/groups', groupRoutes(deps));
  app.route('/api/v1/bootstrap-tokens', tokenRoutes(deps));
  app.route('/api/v1/credentials', credentialRoutes(deps));
  app.route('/api/v1/targets', targetRoutes(deps));
  app.route('/api/v1/bootstrap', registerRoutes(deps));
  app.route('/', nodeRoutes(deps));
  app.route('/', scriptRoutes(deps));
  app.route('/', syncRoutes(deps));
  app.route('/console', consoleRoutes(deps));
  return app;
}
