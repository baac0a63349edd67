import { Hono } from 'hono';
import { createTarget, deleteTarget, listTargets, requireTarget, updateTarget } from '../../inventory/targets.js';
import { targetView } from '../../inventory/views.js';
import { targetCreate, targetPatch, targetReplace } from '../../schema/index.js';
import { requireAdmin, requireReader } from '../auth.js';
import { parseBody } from '../body.js';
import type { AppDeps } from '../deps.js';
import { adminActor } from './actor.js';

export function targetRoutes(deps: AppDeps) {
  const app = new Hono();
  const admin = requireAdmin(deps.auth);
  const reader = requireReader(deps.auth);
  const catalog = () => deps.sync.snapshot().catalog;
  const view = (target: Parameters<typeof targetView>[1]) => targetView(catalog(), target, deps.heartbeats.lastSeen(target.hostname));

  app.get('/', reader, (c) =>
    c.json(listTargets(catalog(), { hostname: c.req.query('hostname'), group: c.req.query('group') }, (hostname) => deps.heartbeats.lastSeen(hostname))),
  );
  app.get('/:id', reader, (c) => c.json(view(requireTarget(catalog(), c.req.param('id')))));
  app.get('/:id/history', reader, async (c) => {
    const target = requireTarget(catalog(), c.req.param('id'));
    // Any group directory: the file moves when its primary group changes.
    return c.json(await deps.history([`:(glob)targets/*/${target.hostname}.yaml`]));
  });
  app.post('/', admin, async (c) => {
    const { target } = await createTarget(deps.writer, adminActor(c), await parseBody(c, targetCreate));
    return c.json(view(target), 201);
  });
  for (const [method, schema, mode] of [['put', targetReplace, 'replace'], ['patch', targetPatch, 'patch']] as const) {
    app[method]('/:id', admin, async (c) => {
      const { target } = await updateTarget(deps.writer, adminActor(c), c.req.param('id'), await parseBody(c, schema), mode);
      return c.json(view(target));
    });
  }
  app.delete('/:id', admin, async (c) => {
    const { deleted } = await deleteTarget(deps.writer, adminActor(c), c.req.param('id'));
    return c.json({ deleted });
  });
  return app;
}
