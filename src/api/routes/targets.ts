import { Hono, type Context } from 'hono';
import { targetHistoryPathspec } from '../../catalog/parse.js';
import { AamiError } from '../../errors.js';
import { createTarget, deleteTarget, patchTarget, replaceTarget, requireTarget } from '../../inventory/targets.js';
import { targetView } from '../../inventory/views.js';
import { targetCreate, targetPatch, targetReplace, type Target } from '../../schema/index.js';
import { authenticate, authorize } from '../auth.js';
import { parseBody } from '../body.js';
import { bulkBody, created, jsonBytes, paced, query } from '../conventions.js';
import type { RouteDeps } from '../deps.js';
import { encodeCursor, targetsQuery } from '../spec/query.js';
import { TargetList } from '../target-list.js';
import { writerActor } from './actor.js';

export function targetRoutes(deps: RouteDeps) {
  const app = new Hono();
  const catalog = deps.catalog;
  const view = (target: Target) => targetView(catalog(), target, deps.heartbeats.lastSeen(target.hostname));
  const list = new TargetList(deps.heartbeats);

  /**
   * Readers see every target (undefined); a node credential sees its own target only (a node
   * checks its registration): its host name.
   */
  const onlyHost = (c: Context): string | undefined => {
    const principal = authenticate(c, deps);
    if (principal.kind === 'node') return principal.hostname;
    authorize(c, deps, 'reader');
    return undefined;
  };

  app.get('/', async (c) => {
    const own = onlyHost(c);
    const filter = query(c, targetsQuery);
    const { hostname, group, label = [], limit, cursor } = filter;
    if (own === undefined && !hostname && !group && !label.length && limit === undefined && cursor === undefined) {
      // The whole inventory: the same bytes until a target changes (last_seen included).
      return bulkBody(c, deps.bulk, 'list', () => {
        list.sync(deps.live.snapshot());
        return list.all();
      });
    }
    list.sync(deps.live.snapshot());
    // A node sees one target at most, its own: looked up by its name, not walked for through the fleet.
    const page = own === undefined ? list.select(filter) : list.select({ ...filter, hostname: hostname || own }, (name) => name === own);
    await paced(c, deps.bulk, 'list', page.json.length);
    if (page.next !== undefined) {
      const next = new URL(c.req.url).searchParams;
      next.set('cursor', encodeCursor(page.next));
      c.header('Link', `<${c.req.path}?${next}>; rel="next"`);
    }
    return jsonBytes(c, page.json);
  });
  app.get('/:id', (c) => {
    const own = onlyHost(c);
    const id = c.req.param('id');
    // Before the lookup: a node is not told whether another host name is taken.
    if (own !== undefined && own !== id.toLowerCase()) throw new AamiError('forbidden', `a node credential reads its own target only, not ${id}`);
    const target = requireTarget(catalog(), id);
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
    return created(c, `/api/v1/targets/${target.hostname}`, view(target));
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
