import { Hono } from 'hono';
import { AamiError } from '../../errors.js';
import { registerNode } from '../../inventory/register.js';
import { targetView } from '../../inventory/views.js';
import { registration } from '../../schema/index.js';
import { bearerToken, clientAddress, guarded } from '../auth.js';
import { parseBody } from '../body.js';
import type { AppDeps } from '../deps.js';

/** POST /api/v1/bootstrap/register — a node enrols itself with a bootstrap token. */
export function registerRoutes(deps: AppDeps) {
  const app = new Hono();
  app.post('/register', async (c) => {
    const result = await guarded(c, deps.auth.limiter, async () => {
      const token = bearerToken(c);
      if (!token) throw new AamiError('unauthorized', 'registration needs a bootstrap token: Authorization: Bearer aami_bootstrap_...');
      const input = await parseBody(c, registration);
      return registerNode(deps.writer, input, token, clientAddress(c), deps.clock());
    }).catch((error: unknown) => {
      deps.metrics.registrations.inc({ outcome: error instanceof AamiError ? error.code : 'error' });
      throw error;
    });
    deps.metrics.registrations.inc({ outcome: result.outcome });
    const body = {
      outcome: result.outcome,
      target: targetView(deps.sync.snapshot().catalog, result.target, deps.heartbeats.lastSeen(result.target.hostname)),
      // Shown once; only its hash is kept. Absent when the node's existing credential stays valid.
      ...(result.nodeCredential ? { node_credential: result.nodeCredential } : {}),
    };
    return c.json(body, result.outcome === 'created' ? 201 : 200);
  });
  return app;
}
