import { Hono } from 'hono';
import { effectiveChecks } from '../../catalog/checks.js';
import { AamiError } from '../../errors.js';
import { deregisterNode } from '../../inventory/nodes.js';
import { updateOwnTarget } from '../../inventory/register.js';
import { requireTarget } from '../../inventory/targets.js';
import { targetView } from '../../inventory/views.js';
import { nodeUpdate } from '../../schema/index.js';
import { authenticateNode, clientAddress, FailureLimiter, requireRole } from '../auth.js';
import { parseBody } from '../body.js';
import type { RouteDeps } from '../deps.js';
import { logFields } from '../observe.js';
import { registrationBody } from './register.js';

/**
 * Changes a node may make to its own target in a fixed window (opened by the first): a
 * bootstrap run makes one, so a node rebooting every half minute stays well under it. Past
 * it the node is answered 429 (Retry-After) without a commit: a node whose credential was
 * taken, or a script in a loop, makes at most this many commits a window, not one a batch
 * for ever. Counted as they come, before the write (updates sent at once cannot pass the
 * limit together), and given back when one comes to no commit: refused (a clone of another
 * host's image is told 409 and enrols under its own name), failed (a retry after a 503),
 * or unchanged.
 */
export const NODE_CHANGES = { maxFailures: 30, windowMs: 10 * 60_000 };

/** Calls a registered node makes with its own credential, on its own target only; and the readers' view of checks. */
export function nodeRoutes(deps: RouteDeps) {
  const app = new Hono();
  const catalog = deps.catalog;
  const reader = requireRole(deps, 'reader');
  // Counts each node's updates (a FailureLimiter counts whatever it is told of, per key).
  const updates = new FailureLimiter({ ...NODE_CHANGES, now: () => deps.clock().getTime() });

  app.get('/api/v1/nodes/self', (c) => {
    const hostname = authenticateNode(c, deps);
    return c.json(targetView(catalog(), requireTarget(catalog(), hostname), deps.heartbeats.lastSeen(hostname)));
  });
  app.put('/api/v1/nodes/self', async (c) => {
    const hostname = authenticateNode(c, deps);
    const retryAfter = updates.limited(hostname);
    if (retryAfter !== undefined) {
      throw new AamiError('rate_limited', `${hostname} changed its target ${NODE_CHANGES.maxFailures} times in ${NODE_CHANGES.windowMs / 60_000} minutes (or has that many updates under way); retry in ${retryAfter} s`, { retry_after_seconds: retryAfter });
    }
    updates.fail(hostname);
    let result: Awaited<ReturnType<typeof updateOwnTarget>>;
    try {
      result = await updateOwnTarget(deps.writer, hostname, await parseBody(c, nodeUpdate), clientAddress(c));
    } catch (error) {
      updates.forgive(hostname);
      throw error;
    }
    if (result.outcome === 'unchanged') updates.forgive(hostname);
    deps.registrations.inc({ outcome: result.outcome });
    logFields(c, { outcome: result.outcome });
    return c.json(registrationBody(deps, result));
  });
  app.delete('/api/v1/nodes/self', async (c) => {
    const hostname = authenticateNode(c, deps);
    const { deleted } = await deregisterNode(deps.writer, hostname, clientAddress(c));
    deps.heartbeats.forget(deleted);
    return c.json({ deleted });
  });
  app.post('/api/v1/nodes/heartbeat', (c) => {
    const hostname = authenticateNode(c, deps);
    return c.json({ hostname, last_seen: deps.heartbeats.record(hostname).toISOString() });
  });
  app.get('/api/v1/checks/node', (c) => {
    const hostname = authenticateNode(c, deps);
    return c.json({ hostname, checks: effectiveChecks(catalog(), requireTarget(catalog(), hostname)) });
  });
  app.get('/api/v1/checks/node/:name/script', (c) => {
    const hostname = authenticateNode(c, deps);
    const name = c.req.param('name');
    const applies = effectiveChecks(catalog(), requireTarget(catalog(), hostname)).some((check) => check.name === name);
    const check = catalog().checks.get(name);
    if (!applies || !check) throw new AamiError('not_found', `check "${name}" does not apply to ${hostname}`);
    return c.text(check.script.text, 200, { 'Content-Type': 'text/x-shellscript; charset=utf-8' });
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
