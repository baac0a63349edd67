import { Hono, type Context } from 'hono';
import { effectiveChecks } from '../../catalog/checks.js';
import { AamiError } from '../../errors.js';
import { requireTarget } from '../../inventory/targets.js';
import { hashSecret, NODE_PREFIX } from '../../tokens/secret.js';
import { bearerToken, guarded, requireReader } from '../auth.js';
import type { AppDeps } from '../deps.js';

/** The target a node credential belongs to (only its hash is stored, in the target's file). */
async function authenticateNode(c: Context, deps: AppDeps): Promise<string> {
  return guarded(c, deps.auth.limiter, () => {
    const credential = bearerToken(c);
    if (!credential?.startsWith(NODE_PREFIX)) throw new AamiError('unauthorized', 'this call needs the node credential issued at registration');
    const hostname = deps.sync.snapshot().catalog.credentials.get(hashSecret(credential));
    if (!hostname) throw new AamiError('unauthorized', 'the node credential is not valid');
    return hostname;
  });
}

/** Calls a registered node makes with its own credential, and the admin's view of checks. */
export function nodeRoutes(deps: AppDeps) {
  const app = new Hono();
  const catalog = () => deps.sync.snapshot().catalog;
  const reader = requireReader(deps.auth);

  app.get('/api/v1/checks/node', async (c) => {
    const hostname = await authenticateNode(c, deps);
    return c.json({ hostname, checks: effectiveChecks(catalog(), requireTarget(catalog(), hostname)) });
  });
  app.get('/api/v1/checks/node/:name/script', async (c) => {
    const hostname = await authenticateNode(c, deps);
    const name = c.req.param('name');
    const applies = effectiveChecks(catalog(), requireTarget(catalog(), hostname)).some((check) => check.name === name);
    const check = catalog().checks.get(name);
    if (!applies || !check) throw new AamiError('not_found', `check "${name}" does not apply to ${hostname}`);
    return c.text(check.script.text, 200, { 'Content-Type': 'text/x-shellscript; charset=utf-8' });
  });
  app.post('/api/v1/nodes/heartbeat', async (c) => {
    const hostname = await authenticateNode(c, deps);
    return c.json({ hostname, last_seen: deps.heartbeats.record(hostname).toISOString() });
  });

  app.get('/api/v1/checks', reader, (c) =>
    c.json(
      [...catalog().checks.values()]
        .sort((a, b) => (a.name < b.name ? -1 : 1))
        .map((check) => ({ name: check.name, description: check.policy.description ?? '', script: check.policy.script, sha256: check.script.sha256, policy: check.policy })),
    ),
  );
  app.get('/api/v1/targets/:id/checks', reader, (c) => c.json(effectiveChecks(catalog(), requireTarget(catalog(), c.req.param('id')))));
  return app;
}
