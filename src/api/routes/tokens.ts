import { type Context, Hono } from 'hono';
import { tokenPath } from '../../catalog/parse.js';
import { createToken, listTokens, requireToken, revokeToken } from '../../inventory/tokens.js';
import { tokenView } from '../../inventory/views.js';
import { tokenCreate } from '../../schema/index.js';
import { requireRole } from '../auth.js';
import { parseBody } from '../body.js';
import { created } from '../conventions.js';
import type { AppDeps } from '../deps.js';
import { writerActor } from './actor.js';

/** Bootstrap tokens: editors and admins, reads included (a token list is a map of what can enrol). */
export function tokenRoutes(deps: AppDeps) {
  const app = new Hono();
  const editor = requireRole(deps, 'editor');
  const catalog = deps.catalog;
  const present = (path: string) => deps.live.snapshot().present(path);

  app.get('/', editor, (c) => c.json(listTokens(catalog(), deps.clock())));
  app.get('/:id', editor, (c) => c.json(tokenView(catalog(), requireToken(catalog(), c.req.param('id'), present), deps.clock())));
  app.get('/:id/history', editor, async (c) => {
    const id = c.req.param('id');
    // A broken file's history is what tells why it broke.
    if (!present(tokenPath(id))) requireToken(catalog(), id);
    return c.json(await deps.history([tokenPath(id)]));
  });
  app.post('/', async (c) => {
    const actor = writerActor(c, deps);
    const token = await createToken(deps.writer, actor, await parseBody(c, tokenCreate), deps.clock());
    return created(c, `/api/v1/bootstrap-tokens/${token.id}`, token);
  });
  const revoke = async (c: Context) => {
    const { token } = await revokeToken(deps.writer, writerActor(c, deps), c.req.param('id')!, deps.clock());
    return c.json(token);
  };
  app.post('/:id/revoke', revoke);
  app.delete('/:id', revoke);
  return app;
}
