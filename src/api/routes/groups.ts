import { Hono } from 'hono';
import { AamiError } from '../../errors.js';
import { groupPath } from '../../catalog/parse.js';
import { createGroup, deleteGroup, getGroup, listGroups, requireGroup, updateGroup } from '../../inventory/groups.js';
import { groupCreate, groupPatch, groupReplace } from '../../schema/index.js';
import { requireAdmin, requireReader } from '../auth.js';
import { parseBody } from '../body.js';
import type { AppDeps } from '../deps.js';
import { adminActor } from './actor.js';

export function groupRoutes(deps: AppDeps) {
  const app = new Hono();
  const admin = requireAdmin(deps.auth);
  const reader = requireReader(deps.auth);
  const catalog = () => deps.sync.snapshot().catalog;

  app.get('/', reader, (c) => c.json(listGroups(catalog(), { namespace: c.req.query('namespace') })));
  app.get('/:id', reader, (c) => c.json(getGroup(catalog(), c.req.param('id'))));
  app.get('/:id/history', reader, async (c) => {
    const id = c.req.param('id');
    requireGroup(catalog(), id, 'not_found');
    return c.json(await deps.history([groupPath(id)]));
  });
  app.post('/', admin, async (c) => {
    const { group } = await createGroup(deps.writer, adminActor(c), await parseBody(c, groupCreate));
    return c.json(group, 201);
  });
  for (const [method, schema, mode] of [['put', groupReplace, 'replace'], ['patch', groupPatch, 'patch']] as const) {
    app[method]('/:id', admin, async (c) => {
      const id = c.req.param('id');
      const body = await parseBody(c, schema);
      if ('id' in body && body.id && body.id !== id) {
        throw new AamiError('validation_failed', 'the id cannot change', [{ field: 'id', message: `must be "${id}"` }]);
      }
      const { group } = await updateGroup(deps.writer, adminActor(c), id, body, mode);
      return c.json(group);
    });
  }
  app.delete('/:id', admin, async (c) => c.json(await deleteGroup(deps.writer, adminActor(c), c.req.param('id')).then(({ deleted }) => ({ deleted }))));
  return app;
}
