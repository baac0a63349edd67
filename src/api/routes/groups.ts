import { Hono } from 'hono';
import { groupPath } from '../../catalog/parse.js';
import { AamiError } from '../../errors.js';
import { createGroup, deleteGroup, getGroup, listGroups, requireGroup, updateGroup } from '../../inventory/groups.js';
import { groupCreate, groupPatch, groupReplace } from '../../schema/index.js';
import { requireRole } from '../auth.js';
import { parseBody } from '../body.js';
import { created, query } from '../conventions.js';
import type { AppDeps } from '../deps.js';
import { groupsQuery } from '../spec/query.js';
import { writerActor } from './actor.js';

export function groupRoutes(deps: AppDeps) {
  const app = new Hono();
  const reader = requireRole(deps, 'reader');
  const catalog = deps.catalog;

  app.get('/', reader, (c) => c.json(listGroups(catalog(), query(c, groupsQuery))));
  app.get('/:id', reader, (c) => c.json(getGroup(catalog(), c.req.param('id'))));
  app.get('/:id/history', reader, async (c) => {
    const id = c.req.param('id');
    requireGroup(catalog(), id, 'not_found');
    return c.json(await deps.history([groupPath(id)]));
  });
  app.post('/', async (c) => {
    const actor = writerActor(c, deps);
    const { group } = await createGroup(deps.writer, actor, await parseBody(c, groupCreate));
    return created(c, `/api/v1/groups/${group.id}`, group);
  });
  for (const [method, schema, mode] of [['put', groupReplace, 'replace'], ['patch', groupPatch, 'patch']] as const) {
    app[method]('/:id', async (c) => {
      const actor = writerActor(c, deps);
      const id = c.req.param('id');
      const body = await parseBody(c, schema);
      if ('id' in body && body.id && body.id !== id) {
        throw new AamiError('validation_failed', 'the id cannot change', [{ field: 'id', message: `must be "${id}"` }]);
      }
      const { group } = await updateGroup(deps.writer, actor, id, body, mode);
      return c.json(group);
    });
  }
  app.delete('/:id', async (c) => {
    const { deleted } = await deleteGroup(deps.writer, writerActor(c, deps), c.req.param('id'));
    return c.json({ deleted });
  });
  return app;
}
