import type { Catalog } from '../catalog/build.js';
import { durationSeconds } from '../catalog/checks.js';
import { tokenPath } from '../catalog/parse.js';
import { AamiError } from '../errors.js';
import type { Writer } from '../writer/writer.js';
import type { Token, TokenCreate } from '../schema/index.js';
import { newBootstrapToken } from '../tokens/secret.js';
import { commitMeta, type Actor } from './actor.js';
import { requireGroup } from './groups.js';
import { tokenState } from './token-state.js';
import { tokenView } from './views.js';
import { renderYaml } from './yaml-file.js';

export function tokenFileData(token: Token) {
  return {
    id: token.id,
    name: token.name,
    secret_hash: token.secret_hash,
    default_group: token.default_group,
    max_uses: token.max_uses,
    uses: token.uses,
    expires_at: token.expires_at,
    labels: Object.keys(token.labels).length ? token.labels : undefined,
    revoked: token.revoked || undefined,
    created_at: token.created_at,
    ephemeral: token.ephemeral || undefined,
    ttl_after_last_seen: token.ttl_after_last_seen,
    allow_deregister: token.allow_deregister ? undefined : false,
  };
}

/** The served token `id`; `present` tells a missing token from one whose file is there but broken. */
export function requireToken(catalog: Catalog, id: string, present?: (path: string) => boolean): Token {
  const token = catalog.tokens.get(id);
  if (token) return token;
  if (present?.(tokenPath(id))) throw new AamiError('token_not_found', `bootstrap token "${id}" is not served: its file ${tokenPath(id)} is invalid, and it lets nobody in until it is fixed (its problems are in /api/v1/health)`, { token_id: id });
  throw new AamiError('token_not_found', `bootstrap token "${id}" does not exist`, { token_id: id });
}

export function listTokens(catalog: Catalog, now: Date) {
  return [...catalog.tokens.values()].sort((a, b) => (a.id < b.id ? -1 : 1)).map((t) => tokenView(catalog, t, now));
}

/** Create a token; the secret is in the result once and nowhere else (only its hash is committed). */
export async function createToken(writer: Writer, actor: Actor, input: TokenCreate, now: Date) {
  if (Date.parse(input.expires_at) <= now.getTime()) {
    throw new AamiError('validation_failed', 'expires_at must be in the future', [{ field: 'expires_at', message: 'must be in the future' }]);
  }
  if (input.ttl_after_last_seen !== undefined && durationSeconds(input.ttl_after_last_seen) < 1) {
    throw new AamiError('validation_failed', 'ttl_after_last_seen must be at least 1s', [{ field: 'ttl_after_last_seen', message: 'must be at least 1s' }]);
  }
  const { id, token: secretToken, secretHash } = newBootstrapToken();
  const { view } = await writer.update(commitMeta(actor, `Create bootstrap token ${id} (${input.name})`), ({ catalog }) => {
    requireGroup(catalog, input.default_group_id);
    const token: Token = {
      id,
      name: input.name,
      secret_hash: secretHash,
      default_group: input.default_group_id,
      max_uses: input.max_uses,
      uses: 0,
      expires_at: input.expires_at,
      labels: input.labels ?? {},
      revoked: false,
      created_at: now.toISOString(),
      ephemeral: input.ephemeral ?? false,
      ttl_after_last_seen: input.ttl_after_last_seen,
      allow_deregister: input.allow_deregister ?? true,
    };
    return { changes: [{ path: tokenPath(id), content: renderYaml(tokenFileData(token)) }], result: { token, view: tokenView(catalog, token, now) } };
  });
  return { token: secretToken, ...view };
}

export function revokeToken(writer: Writer, actor: Actor, id: string, now: Date) {
  return writer.update(commitMeta(actor, `Revoke bootstrap token ${id}`), ({ catalog }, files) => {
    const token = { ...requireToken(catalog, id, (path) => files.present(path)), revoked: true };
    const path = tokenPath(id);
    return { changes: [{ path, content: renderYaml(tokenFileData(token), files.text(path)) }], result: { token: tokenView(catalog, token, now) } };
  });
}

/**
 * A bootstrap token enrols hosts while it is active, and has no power at all otherwise:
 * expired, revoked and used-up tokens are refused with their own codes. Run again inside
 * the writer queue, against the catalog the change is planned on.
 */
export function requireActiveToken(catalog: Catalog, id: string, now: Date, enrolsNewHost: boolean): Token {
  const token = catalog.tokens.get(id);
  if (!token) throw new AamiError('unauthorized', 'the bootstrap token is not valid');
  const state = tokenState(catalog, token, now);
  if (token.revoked) throw new AamiError('token_revoked', `bootstrap token ${token.id} has been revoked`, { token_id: token.id });
  if (state.expired) throw new AamiError('token_expired', `bootstrap token ${token.id} expired at ${token.expires_at}`, { token_id: token.id, expires_at: token.expires_at });
  // An ephemeral token at its limit still re-enrols a node it counts already; an ordinary used-up token does nothing.
  if (state.exhausted && (enrolsNewHost || !token.ephemeral)) {
    const what = token.ephemeral ? `has ${state.registered} of ${token.max_uses} nodes registered` : `has been used ${token.uses} of ${token.max_uses} times`;
    throw new AamiError('token_exhausted', `bootstrap token ${token.id} ${what}`, { token_id: token.id });
  }
  return token;
}
