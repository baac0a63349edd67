import type { Catalog } from '../catalog/build.js';
import { tokenPath } from '../catalog/parse.js';
import { AamiError } from '../errors.js';
import type { Writer } from '../repo/writer.js';
import type { Token, TokenCreate } from '../schema/index.js';
import { newBootstrapToken, parseBootstrapToken, secretMatches } from '../tokens/secret.js';
import { commitMeta, type Actor } from './actor.js';
import { requireGroup } from './groups.js';
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
  };
}

export function requireToken(catalog: Catalog, id: string): Token {
  const token = catalog.tokens.get(id);
  if (!token) throw new AamiError('token_not_found', `bootstrap token "${id}" does not exist`, { token_id: id });
  return token;
}

export function listTokens(catalog: Catalog, now: Date) {
  return [...catalog.tokens.values()].sort((a, b) => (a.id < b.id ? -1 : 1)).map((t) => tokenView(t, now));
}

/** Create a token; the secret is in the result once and nowhere else (only its hash is committed). */
export async function createToken(writer: Writer, actor: Actor, input: TokenCreate, now: Date) {
  if (Date.parse(input.expires_at) <= now.getTime()) {
    throw new AamiError('validation_failed', 'expires_at must be in the future', [{ field: 'expires_at', message: 'must be in the future' }]);
  }
  const { id, token: secretToken, secretHash } = newBootstrapToken();
  const { token } = await writer.update(commitMeta(actor, `Create bootstrap token ${id} (${input.name})`), ({ catalog }) => {
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
    };
    return { changes: [{ path: tokenPath(id), content: renderYaml(tokenFileData(token)) }], result: { token } };
  });
  return { token: secretToken, ...tokenView(token, now) };
}

export function revokeToken(writer: Writer, actor: Actor, id: string, now: Date) {
  return writer.update(commitMeta(actor, `Revoke bootstrap token ${id}`), ({ catalog }, files) => {
    const token = { ...requireToken(catalog, id), revoked: true };
    const path = tokenPath(id);
    return { changes: [{ path, content: renderYaml(tokenFileData(token), files.text(path)) }], result: { token: tokenView(token, now) } };
  });
}

/**
 * The token a bootstrap secret names, if the secret is right and the token may still be
 * used; a wrong or unknown token gets the same answer so ids cannot be probed.
 */
export function authenticateToken(catalog: Catalog, presented: string, now: Date): Token {
  const parsed = parseBootstrapToken(presented);
  const token = parsed && catalog.tokens.get(parsed.id);
  if (!parsed || !token || !secretMatches(parsed.secret, token.secret_hash)) {
    throw new AamiError('unauthorized', 'the bootstrap token is not valid');
  }
  if (token.revoked) throw new AamiError('token_revoked', `bootstrap token ${token.id} has been revoked`, { token_id: token.id });
  if (Date.parse(token.expires_at) <= now.getTime()) {
    throw new AamiError('token_expired', `bootstrap token ${token.id} expired at ${token.expires_at}`, { token_id: token.id, expires_at: token.expires_at });
  }
  return token;
}
