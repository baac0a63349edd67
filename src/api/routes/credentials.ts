import { Hono } from 'hono';
import { credentialPath } from '../../catalog/parse.js';
import { createCredential, listCredentials, requireCredential, revokeCredential } from '../../inventory/credentials.js';
import { credentialView } from '../../inventory/views.js';
import { credentialCreate } from '../../schema/index.js';
import { requireRole } from '../auth.js';
import { parseBody } from '../body.js';
import { created } from '../conventions.js';
import type { AppDeps } from '../deps.js';
import { writerActor } from './actor.js';

/** Named API credentials: admins only. The secret is shown once, at creation. */
export function credentialRoutes(deps: AppDeps) {
  const app = new Hono();
  const admin = requireRole(deps, 'admin');
  const catalog = deps.catalog;
  const present = (path: string) => deps.live.snapshot().present(path);

  app.get('/', admin, (c) => c.json(listCredentials(catalog(), deps.clock())));
  app.get('/:id', admin, (c) => c.json(credentialView(requireCredential(catalog(), c.req.param('id'), present), deps.clock())));
  app.get('/:id/history', admin, async (c) => {
    const id = c.req.param('id');
    // A broken file's history is what tells why it broke.
    if (!present(credentialPath(id))) requireCredential(catalog(), id);
    return c.json(await deps.history([credentialPath(id)]));
  });
  app.post('/', async (c) => {
    const actor = writerActor(c, deps, 'admin');
    const credential = await createCredential(deps.writer, actor, await parseBody(c, credentialCreate), deps.clock());
    return created(c, `/api/v1/credentials/${credential.id}`, credential);
  });
  app.post('/:id/revoke', async (c) => {
    const { credential } = await revokeCredential(deps.writer, writerActor(c, deps, 'admin'), c.req.param('id'), deps.clock());
    return c.json(credential);
  });
  return app;
}
