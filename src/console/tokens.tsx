import { Hono, type Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { z } from 'zod';
import { clientAddress } from '../api/auth.js';
import { parseValue } from '../api/body.js';
import type { AppDeps } from '../api/deps.js';
import { STATUS } from '../api/errors.js';
import { expiry, labelSet } from '../cli/admin/args.js';
import { AamiError } from '../errors.js';
import { actorOf } from '../inventory/actor.js';
import { createToken, listTokens, revokeToken } from '../inventory/tokens.js';
import { tokenCreate, type TokenCreate } from '../schema/index.js';
import { formOf, requireRole, type ConsoleEnv } from './guard.js';
import { TOKENS_ROLE } from './views/layout.js';
import { paged, pageNumber } from './paging.js';
import type { Render } from './render.js';
import { EMPTY_FORM, TokenCreatedView, tokenProgress, TokensView, type TokenForm } from './views/tokens.js';

const field = (max: number) => z.string().max(max, `must be at most ${max} characters`).default('');
const tokenForm = z.object({ name: field(300), default_group_id: field(200), max_uses: field(20), expires: field(100), labels: field(70_000) });

/** The form's text as the API's body: the same schema and the same domain function decide. */
function tokenInput(form: TokenForm, now: Date): TokenCreate {
  let labels: Record<string, string> | undefined;
  try {
    const lines = form.labels.split('\n').map((line) => line.replace(/\r$/, '')).filter((line) => line.trim() !== '');
    labels = labelSet(lines).labels;
  } catch (error) {
    throw new AamiError('validation_failed', `labels: ${(error as Error).message} (one name=value a line)`, [{ field: 'labels', message: 'one name=value a line' }]);
  }
  const maxUses = /^\s*\d{1,9}\s*$/.test(form.max_uses) ? Number(form.max_uses) : form.max_uses;
  const data = { name: form.name.trim(), default_group_id: form.default_group_id, max_uses: maxUses, expires_at: expiry(form.expires.trim(), now.getTime()), labels };
  return parseValue(tokenCreate, data, 'the new token');
}

/** Tokens: every role reads them; editors and admins create and revoke (checked here, on the server). */
export function tokenPages(deps: AppDeps, render: Render) {
  const app = new Hono<ConsoleEnv>();
  const tokensPage = (page: number) => {
    const all = listTokens(deps.catalog(), deps.clock()).sort((a, b) => ((b.created_at ?? '') < (a.created_at ?? '') ? -1 : (b.created_at ?? '') > (a.created_at ?? '') ? 1 : a.id < b.id ? -1 : 1));
    return paged(all, page);
  };
  const show = (c: Context<ConsoleEnv>, extra: { form?: TokenForm; formError?: string; notice?: string; page?: number } = {}, status: ContentfulStatusCode = 200) => {
    const signed = c.get('signedIn');
    const { items, page, pages } = tokensPage(extra.page ?? 1);
    const groups = [...deps.catalog().groups.values()].map((g) => ({ id: g.id, name: g.name })).sort((a, b) => (a.id < b.id ? -1 : 1));
    const props = { viewer: signed.viewer, tokens: items, page, pages, now: deps.clock(), groups, form: extra.form ?? EMPTY_FORM, formError: extra.formError, notice: extra.notice };
    return render(c, { title: 'Tokens', section: 'tokens' }, <TokensView {...props} />, status);
  };

  app.get('/tokens', (c) => {
    requireRole(c.get('signedIn'), TOKENS_ROLE);
    const query = parseValue(z.object({ page: pageNumber, revoked: z.string().max(100).optional() }), c.req.query(), 'the query');
    const revoked = query.revoked && deps.catalog().tokens.get(query.revoked);
    return show(c, { page: query.page, notice: revoked ? `Token ${revoked.name} (${revoked.id}) is revoked: no node can enrol with it any more.` : undefined });
  });

  // The page's script asks for this every few seconds while it is open: a short request, so
  // a server shutting down never waits for an open stream.
  app.get('/tokens/progress', (c) => {
    requireRole(c.get('signedIn'), TOKENS_ROLE);
    const { page } = parseValue(z.object({ page: pageNumber }), c.req.query(), 'the query');
    return c.json({ tokens: tokensPage(page).items.map(tokenProgress), targets: deps.catalog().targets.size });
  });

  app.post('/tokens', async (c) => {
    const actor = actorOf(requireRole(c.get('signedIn'), TOKENS_ROLE), clientAddress(c));
    const form: TokenForm = parseValue(tokenForm, await formOf(c), 'the form');
    try {
      const created = await createToken(deps.writer, actor, tokenInput(form, deps.clock()), deps.clock());
      const { token: secret, ...token } = created;
      c.header('Cache-Control', 'no-store');
      return render(c, { title: 'Token created', section: 'tokens' }, <TokenCreatedView token={token} secret={secret} />, 201);
    } catch (error) {
      if (!(error instanceof AamiError) || error.code === 'forbidden') throw error;
      return show(c, { form, formError: error.message }, STATUS[error.code]);
    }
  });

  app.post('/tokens/:id/revoke', async (c) => {
    const actor = actorOf(requireRole(c.get('signedIn'), TOKENS_ROLE), clientAddress(c));
    const { token } = await revokeToken(deps.writer, actor, c.req.param('id'), deps.clock());
    return c.redirect(`/console/tokens?revoked=${encodeURIComponent(token.id)}`, 303);
  });

  return app;
}
