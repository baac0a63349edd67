import { isDeepStrictEqual } from 'node:util';
import type { Catalog } from '../catalog/build.js';
import { groupChain } from '../catalog/labels.js';
import { tokenPath } from '../catalog/parse.js';
import { AamiError } from '../errors.js';
import type { Change } from '../repo/store.js';
import type { Writer } from '../repo/writer.js';
import type { Facts, Registration, Target, Token } from '../schema/index.js';
import { NODE_PREFIX, newSecretCredential, parseBootstrapToken } from '../tokens/secret.js';
import { commitMeta } from './actor.js';
import { requireGroup } from './groups.js';
import { checkTarget, targetChanges } from './targets.js';
import { authenticateToken, tokenFileData } from './tokens.js';
import { renderYaml } from './yaml-file.js';

export type RegistrationOutcome = 'created' | 'updated' | 'unchanged';

export interface RegistrationResult {
  outcome: RegistrationOutcome;
  target: Target;
  /** Only when a new credential was issued: the node keeps it, we keep its hash. */
  nodeCredential?: string;
  tokenId: string;
}

/** GPU facts become labels, so dashboards can group by them; the node's own labels win. */
function factLabels(facts: Facts | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  if (facts?.gpu_count) {
    labels.gpu_count = String(facts.gpu_count);
    if (facts.gpu_model) labels.gpu_model = facts.gpu_model;
    if (facts.gpu_vendor) labels.gpu_vendor = facts.gpu_vendor;
  }
  return labels;
}

/** A token may enrol nodes into its default group or any group below it. */
function inScope(catalog: Catalog, token: Token, groupId: string): boolean {
  return groupChain(catalog.groups, groupId).some((g) => g.id === token.default_group);
}

/**
 * Self-registration with a bootstrap token. Runs inside the writer queue, so the token's
 * use count read here is the committed one and its increment lands in the same commit as
 * the target: under any concurrency `max_uses: N` admits exactly N new hosts. Re-running on
 * the same host updates it and uses no token use; a registration that changes nothing
 * makes no commit.
 */
export function registerNode(writer: Writer, input: Registration, presentedToken: string, address: string, now: Date): Promise<RegistrationResult & { commit: string | null }> {
  // The commit's author is the token the caller names; a wrong secret fails inside, before any commit.
  const tokenId = parseBootstrapToken(presentedToken)?.id ?? 'unknown';
  return writer.update<RegistrationResult>(commitMeta({ kind: 'token', tokenId, address }, `Register ${input.hostname}`), ({ catalog }, files) => {
    const token = authenticateToken(catalog, presentedToken, now);
    const group = input.group_id ?? token.default_group;
    requireGroup(catalog, group);
    if (!inScope(catalog, token, group)) {
      throw new AamiError('forbidden', `bootstrap token ${token.id} may only register into group "${token.default_group}" and its children`, { group_id: group });
    }
    const existing = catalog.targets.get(input.hostname);
    if (existing && existing.registered_by_token !== token.id && !inScope(catalog, token, existing.primary_group)) {
      throw new AamiError('conflict', `host "${input.hostname}" is already registered outside this token's groups`, { target_id: input.hostname });
    }
    if (!existing && token.uses >= token.max_uses) {
      throw new AamiError('token_exhausted', `bootstrap token ${token.id} has been used ${token.uses} of ${token.max_uses} times`, { token_id: token.id });
    }

    const credential = !existing?.node_credential_hash || input.rotate_credential ? newSecretCredential(NODE_PREFIX) : undefined;
    const target: Target = {
      hostname: input.hostname,
      ip_address: input.ip_address,
      primary_group: group,
      groups: existing?.groups ?? [],
      exporters: input.exporters ?? existing?.exporters ?? [{ type: 'node_exporter', enabled: true }],
      // The token's labels are fixed: nothing the node sends can override them.
      labels: { ...factLabels(input.facts), ...input.labels, ...token.labels },
      facts: input.facts,
      registered_by_token: token.id,
      registered_at: existing?.registered_at ?? now.toISOString(),
      node_credential_hash: credential?.hash ?? existing?.node_credential_hash,
    };
    if (existing && isDeepStrictEqual(stripUndefined(target), stripUndefined(existing))) {
      return { changes: [], result: { outcome: 'unchanged', target: existing, tokenId: token.id } };
    }
    checkTarget(catalog, target);

    const changes: Change[] = targetChanges(files, target, existing);
    if (!existing) {
      const used = { ...token, uses: token.uses + 1 };
      changes.push({ path: tokenPath(token.id), content: renderYaml(tokenFileData(used), files.text(tokenPath(token.id))) });
    }
    const outcome: RegistrationOutcome = existing ? 'updated' : 'created';
    return {
      changes,
      message: `${existing ? 'Update' : 'Register'} ${target.hostname} with bootstrap token ${token.id}`,
      result: { outcome, target, nodeCredential: credential?.credential, tokenId: token.id },
    };
  });
}

function stripUndefined<T extends object>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}
