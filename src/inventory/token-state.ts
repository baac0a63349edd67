import type { Catalog } from '../catalog/build.js';
import type { Token } from '../schema/index.js';

/**
 * A token's state. An ordinary token is used up after max_uses enrolments; an ephemeral
 * one is full while max_uses of its nodes are registered at the same time, and frees a
 * place whenever one leaves, so an autoscaling group can replace instances for the whole
 * life of the token.
 */
export function tokenState(catalog: Catalog, token: Token, now: Date) {
  const expired = Date.parse(token.expires_at) <= now.getTime();
  const registered = catalog.tokenHosts.get(token.id) ?? 0;
  const taken = token.ephemeral ? registered : token.uses;
  const exhausted = taken >= token.max_uses;
  return { expired, exhausted, registered, remaining: Math.max(0, token.max_uses - taken), active: !expired && !token.revoked && !exhausted };
}
