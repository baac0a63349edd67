import type { Catalog } from '../catalog/build.js';
import { labelSources, targetLabels } from '../catalog/labels.js';
import type { CredentialAnswer, GroupAnswer, TargetAnswer, TokenAnswer } from '../schema/answers.js';
import { own, type Credential, type Group, type Target, type Token } from '../schema/index.js';
import { tokenState } from './token-state.js';

export function groupView(group: Group): GroupAnswer {
  return {
    id: group.id,
    name: group.name,
    namespace: group.namespace,
    parent_id: group.parent ?? null,
    description: group.description ?? '',
    labels: group.labels,
  };
}

export function targetView(catalog: Catalog, target: Target, lastSeen?: Date): TargetAnswer {
  const token = target.registered_by_token ? catalog.tokens.get(target.registered_by_token) : undefined;
  return {
    id: target.hostname,
    hostname: target.hostname,
    ip_address: target.ip_address,
    primary_group_id: target.primary_group,
    group_ids: target.groups,
    exporters: target.exporters.map((e) => ({ ...e, port: e.port ?? own(catalog.settings.exporters, e.type)?.port })),
    /** The admin's labels; node_labels and token_labels are the node's and the enrolling token's. */
    labels: target.labels,
    node_labels: target.node_labels,
    token_labels: target.token_labels,
    /** The labels Prometheus sees, groups and aami's own included, and where each comes from. */
    effective_labels: targetLabels(catalog, target),
    label_sources: labelSources(catalog, target),
    facts: target.facts ?? {},
    registered_by_token: target.registered_by_token ?? null,
    registered_at: target.registered_at ?? null,
    machine_id: target.machine_id_hash ?? null,
    /** Enrolled by an ephemeral token: removed once its heartbeat is older than the token's TTL. */
    ephemeral: token?.ephemeral ?? false,
    /** The node's last heartbeat (dynamic-check.sh sends one a minute). */
    last_seen: lastSeen?.toISOString() ?? null,
  };
}

export function tokenView(catalog: Catalog, token: Token, now: Date): TokenAnswer {
  const state = tokenState(catalog, token, now);
  return {
    id: token.id,
    name: token.name,
    default_group_id: token.default_group,
    max_uses: token.max_uses,
    uses: token.uses,
    remaining: state.remaining,
    expires_at: token.expires_at,
    expired: state.expired,
    revoked: token.revoked,
    active: state.active,
    labels: token.labels,
    created_at: token.created_at ?? null,
    ephemeral: token.ephemeral,
    ttl_after_last_seen: token.ttl_after_last_seen ?? null,
    /** Targets it enrolled that are registered now (an ephemeral token's limit counts these). */
    registered: state.registered,
    allow_deregister: token.allow_deregister,
  };
}

export function credentialView(credential: Credential, now: Date): CredentialAnswer {
  const expired = credential.expires_at !== undefined && Date.parse(credential.expires_at) <= now.getTime();
  return {
    id: credential.id,
    name: credential.name,
    role: credential.role,
    expires_at: credential.expires_at ?? null,
    expired,
    revoked: credential.revoked,
    active: !expired && !credential.revoked,
    created_at: credential.created_at ?? null,
    created_by: credential.created_by ?? null,
  };
}
