import { Hono } from 'hono';
import { AamiError } from '../../errors.js';
import { enrolNode, type RegistrationResult } from '../../inventory/register.js';
import { targetView } from '../../inventory/views.js';
import { registration } from '../../schema/index.js';
import { authenticate, clientAddress } from '../auth.js';
import { parseBody } from '../body.js';
import { created } from '../conventions.js';
import type { RouteDeps } from '../deps.js';
import { logFields } from '../observe.js';

/** The answer to an enrolment or a node's update: the target, and the node credential when one was issued. */
export function registrationBody(deps: RouteDeps, result: RegistrationResult) {
  const catalog = deps.catalog();
  const view = targetView(catalog, result.target, deps.heartbeats.lastSeen(result.target.hostname));
  return {
    outcome: result.outcome,
    target: view,
    ephemeral: view.ephemeral,
    // Shown once; only its hash is kept. Absent when the node's existing credential stays valid.
    ...(result.nodeCredential ? { node_credential: result.nodeCredential } : {}),
  };
}

/** POST /api/v1/bootstrap/register — a node enrols itself with a bootstrap token. */
export function registerRoutes(deps: RouteDeps) {
  const app = new Hono();
  app.post('/register', async (c) => {
    const result = await (async () => {
      const principal = authenticate(c, deps);
      if (principal.kind === 'anonymous') throw new AamiError('unauthorized', 'registration needs a bootstrap token: Authorization: Bearer aami_bootstrap_...');
      if (principal.kind !== 'token') {
        const hint = principal.kind === 'node' ? ': a registered node updates itself with PUT /api/v1/nodes/self' : '';
        throw new AamiError('forbidden', `registration needs a bootstrap token${hint}`);
      }
      const input = await parseBody(c, registration);
      return enrolNode(deps.writer, input, principal.token.id, clientAddress(c), deps.clock());
    })().catch((error: unknown) => {
      deps.registrations.inc({ outcome: error instanceof AamiError ? error.code : 'error' });
      throw error;
    });
    deps.registrations.inc({ outcome: result.outcome });
    logFields(c, { hostname: result.target.hostname, outcome: result.outcome });
    const body = registrationBody(deps, result);
    return result.outcome === 'created' ? created(c, `/api/v1/targets/${result.target.hostname}`, body) : c.json(body);
  });
  return app;
}
