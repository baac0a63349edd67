import { createHmac, timingSafeEqual } from 'node:crypto';
import { Hono, type Context } from 'hono';
import { AamiError } from '../../errors.js';
import { secretMatches } from '../../tokens/secret.js';
import { bearerToken, guarded } from '../auth.js';
import type { AppDeps } from '../deps.js';

const same = (a: string, b: string) => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));

/** A push webhook from GitHub (X-Hub-Signature-256), Gitea (X-Gitea-Signature) or GitLab (X-Gitlab-Token). */
function webhookVerified(c: Context, secret: string | undefined, body: string): boolean {
  if (!secret) return false;
  const hmac = createHmac('sha256', secret).update(body).digest('hex');
  const github = c.req.header('x-hub-signature-256');
  if (github) return same(github, `sha256=${hmac}`);
  const gitea = c.req.header('x-gitea-signature');
  if (gitea) return same(gitea, hmac);
  const gitlab = c.req.header('x-gitlab-token');
  if (gitlab) return same(gitlab, secret);
  return false;
}

/** POST /api/v1/sync — pull from the Git remote now (admin, or a push webhook with the shared secret). */
export function syncRoutes(deps: AppDeps) {
  const app = new Hono();
  app.post('/api/v1/sync', async (c) => {
    const remote = deps.remote;
    if (!remote) throw new AamiError('not_found', 'this server follows no Git remote (start it with --remote URL)');
    const body = await c.req.text();
    await guarded(c, deps.auth.limiter, () => {
      const token = bearerToken(c);
      if (token && secretMatches(token, deps.auth.adminTokenHash)) return;
      if (webhookVerified(c, remote.webhookSecret, body)) return;
      throw new AamiError('unauthorized', 'sync needs the admin credential or a push webhook signed with AAMI_WEBHOOK_SECRET');
    });
    await remote.pull();
    return c.json(remote.status);
  });
  return app;
}
