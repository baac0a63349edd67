import { Hono, type Context } from 'hono';
import { targetHistoryPathspec } from '../../catalog/parse.js';
import { AamiError } from '../../errors.js';
import { createTarget, deleteTarget, listTargets, patchTarget, replaceTarget, requireTarget } from '../../inventory/targets.js';
import { targetView } from '../../inventory/views.js';
import { targetCreate, targetPatch, targetReplace, type Target } from '../../schema/index.js';
import { authenticate, authorize } from '../auth.js';
import { parseBody } from '../body.js';
import type { AppDeps } from '../deps.js';
import { writerActor } from './actor.js';

export function targetRoutes(deps: AppDeps) {
  const app = new Hono();
  const catalog = deps.catalog;
  const view = (target: Target) => targetView(catalog(), target, deps.heartbeats.lastSeen(target.hostname));

  /** Readers see every target; a node credential sees its own target only (a node checks its registration). */
  const visibleTo = (c: Context): ((hostname: string) => boolean) => {
    const principal = authenticate(c, deps);
    if (principal.kind === 'node') return (hostname) => hostname === principal.hostname;
    authorize(c, deps, 'reader');
    return () => true;
  };

  app.get('/', (c) => {
    const visible = visibleTo(c);
    const targets = listTargets(catalog(), { hostname: c.req.query('hostname'), group: c.req.query('group') }, (hostname) => deps.heartbeats.lastSeen(hostname));
    return c.json(targets.filter((t) => visible(t.hostname)));
  });
  app.get('/:id', (c) => {
    const visible = visibleTo(c);
    const target = requireTarget(catalog(), c.req.param('id'));
    if (!visible(target.hostname)) throw new AamiError('forbidden', `a node credential reads its own target only, not ${target.hostname}`);
    return c.json(view(target));
  });
  app.get('/:id/history', async (c) => {
    authorize(c, deps, 'reader');
    const target = requireTarget(catalog(), c.req.param('id'));
    return c.json(await deps.history([targetHistoryPathspec(target.hostname)]));
  });
  app.post('/', async (c) => {
    const actor = writerActor(c, deps);
    const { target } = await createTarget(deps.writer, actor, await parseBody(c, targetCreate));
    return c.json(view(target), 201);
  });
  app.put('/:id', async (c) => {
    const actor = writerActor(c, deps);
    const { target } = await replaceTarget(deps.writer, actor, c.req.param('id'), await parseBody(c, targetReplace));
    return c.json(view(target));
  });
  app.patch('/:id', async (c) => {
    const actor = writerActor(c, deps);
    const { target } = await patchTarget(deps.writer, actor, c.req.param('id'), await parseBody(c, targetPatch));
    return c.json(view(target));
  });
  app.delete('/:id', async (c) => {
    const { deleted } = await deleteTarget(deps.writer, writerActor(c, deps), c.req.param('id'));
    deps.heartbeats.forget(deleted);
    return c.json({ deleted });
  });
  return app;
}
