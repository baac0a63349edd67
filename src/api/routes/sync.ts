import { createHmac } from 'node:crypto';
import { Hono, type Context } from 'hono';
import { AamiError } from '../../errors.js';
import { sameSecret } from '../../tokens/secret.js';
import { authorize, bearerToken, refuse } from '../auth.js';
import type { AppDeps } from '../deps.js';

/**
 * A push webhook from GitHub (X-Hub-Signature-256), Gitea (X-Gitea-Signature) or GitLab
 * (X-Gitlab-Token). Compared through hashes of both sides: any length and any bytes, no
 * length oracle, never an exception. The HMAC is over the body's bytes as sent (a BOM or a
 * byte that is not UTF-8 would change in the decoded text).
 */
function webhookVerified(c: Context, secret: string | undefined, body: Uint8Array): boolean {
  if (!secret) return false;
  const hmac = createHmac('sha256', secret).update(body).digest('hex');
  const github = c.req.header('x-hub-signature-256');
  if (github !== undefined) return sameSecret(github, `sha256=${hmac}`);
  const gitea = c.req.header('x-gitea-signature');
  if (gitea !== undefined) return sameSecret(gitea, hmac);
  const gitlab = c.req.header('x-gitlab-token');
  if (gitlab !== undefined) return sameSecret(gitlab, secret);
  return false;
}

/**
 * POST /api/v1/sync — pull from the Git remote now (an editor, or a push webhook with the
 * shared secret). An admin's `{"accept_remote_history": true}` takes a rewritten remote
 * branch as the truth (health says when that is needed); in a webhook's body it is a pull.
 */
export function syncRoutes(deps: AppDeps) {
  const app = new Hono();
  app.post('/api/v1/sync', async (c) => {
    const remote = deps.remote;
    const body = await c.req.text();
    // Only an admin's credential takes a rewritten history: a webhook is a push event, never a
    // decision (GitLab's secret travels in clear, and anyone who sees it could send any body).
    const rewrite = Boolean(bearerToken(c)) && acceptsRewrite(body);
    if (!bearerToken(c)) {
      if (!webhookVerified(c, remote?.webhookSecret, new Uint8Array(await c.req.arrayBuffer()))) refuse(c, deps.auth.limiter, 'sync needs an editor credential or a push webhook signed with AAMI_WEBHOOK_SECRET');
    } else {
      authorize(c, deps, rewrite ? 'admin' : 'editor');
    }
    if (!remote) throw new AamiError('not_found', 'this server follows no Git remote (start it with --remote URL)');
    if (rewrite) await remote.acceptRemoteHistory();
    else await remote.pull();
    return c.json(remote.status);
  });
  return app;
}

function acceptsRewrite(body: string): boolean {
  try {
    return (JSON.parse(body) as { accept_remote_history?: unknown })?.accept_remote_history === true;
  } catch {
    return false;
  }
}
