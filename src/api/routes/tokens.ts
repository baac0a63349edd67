import { type Context, Hono } from 'hono';
import { tokenPath } from '../../catalog/parse.js';
import { createToken, listTokens, requireToken, revokeToken } from '../../inventory/tokens.js';
import { tokenView } from '../../inventory/views.js';
import { tokenCreate } from '../../schema/index.js';
import { requireAdmin } from '../auth.js';
import { parseBody } from '../body.js';
import type { AppDeps } from '../deps.js';
import { adminActor } from './actor.js';

/** Bootstrap tokens: admin only, reads included (a token list is a map of what can enrol). */
export function tokenRoutes(deps: AppDeps) {
  const app = new Hono();
  app.use('*', requireAdmin(deps.auth));
  const catalog = () => deps.sync.snapshot().catalog;

  app.get('/', (c) => c.json(listTokens(catalog(), deps.clock())));
  app.get('/:id', (c) => c.json(tokenView(requireToken(catalog(), c.req.param('id')), deps.clock())));
  app.get('/:id/history', async (c) => {
    const id = c.req.param('id');
    requireToken(catalog(), id);
    return c.json(await deps.history([tokenPath(id)]));
  });
  app.post('/', async (c) => c.json(await createToken(deps.writer, adminActor(c), await parseBody(c, tokenCreate), deps.clock()), 201));
  const revoke = async (c: Context) => {
    const { token } = await revokeToken(deps.writer, adminActor(c), c.req.param('id')!, deps.clock());
    return c.json(token);
  };
  app.post('/:id/revoke', revoke);
  app.delete('/:id', revoke);
  return app;
}
