import type { Catalog } from '../catalog/build.js';
import { targetLabels } from '../catalog/labels.js';
import type { Group, Target, Token } from '../schema/index.js';

export function groupView(group: Group) {
  return {
    id: group.id,
    name: group.name,
    namespace: group.namespace,
    parent_id: group.parent ?? null,
    description: group.description ?? '',
    labels: group.labels,
  };
}

export function targetView(catalog: Catalog, target: Target, lastSeen?: Date) {
  return {
    id: target.hostname,
    hostname: target.hostname,
    ip_address: target.ip_address,
    primary_group_id: target.primary_group,
    group_ids: target.groups,
    exporters: target.exporters.map((e) => ({ ...e, port: e.port ?? catalog.settings.exporters[e.type]?.port })),
    labels: target.labels,
    /** The labels Prometheus sees, groups and aami's own included. */
    effective_labels: targetLabels(catalog, target),
    facts: target.facts ?? {},
    registered_by_token: target.registered_by_token ?? null,
    registered_at: target.registered_at ?? null,
    /** The node's last heartbeat (dynamic-check.sh sends one a minute). */
    last_seen: lastSeen?.toISOString() ?? null,
  };
}

export function tokenView(token: Token, now: Date) {
  const expired = Date.parse(token.expires_at) <= now.getTime();
  return {
    id: token.id,
    name: token.name,
    default_group_id: token.default_group,
    max_uses: token.max_uses,
    uses: token.uses,
    remaining: Math.max(0, token.max_uses - token.uses),
    expires_at: token.expires_at,
    expired,
    revoked: token.revoked,
    active: !expired && !token.revoked && token.uses < token.max_uses,
    labels: token.labels,
    created_at: token.created_at ?? null,
  };
}
