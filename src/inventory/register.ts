import { isDeepStrictEqual } from 'node:util';
import type { Catalog } from '../catalog/build.js';
import { groupChain } from '../catalog/labels.js';
import { tokenPath } from '../catalog/parse.js';
import type { PlanFiles } from '../writer/writer.js';
import { AamiError } from '../errors.js';
import type { Change } from '../git/repository.js';
import type { Writer } from '../writer/writer.js';
import type { Facts, NodeUpdate, Registration, Target, Token } from '../schema/index.js';
import { hashSecret, NODE_PREFIX, newSecretCredential } from '../tokens/secret.js';
import { commitMeta, type Actor } from './actor.js';
import { requireGroup } from './groups.js';
import { checkTarget, requireExporters, requireTarget, sameMachine, targetChanges } from './targets.js';
import { requireActiveToken, tokenFileData } from './tokens.js';
import { renderYaml } from './yaml-file.js';

export type RegistrationOutcome = 'created' | 'reenrolled' | 'updated' | 'unchanged';

export interface RegistrationResult {
  outcome: RegistrationOutcome;
  target: Target;
  /** Only when a new credential was issued: the node keeps it, we keep its hash. */
  nodeCredential?: string;
}

/** GPU facts become the node's labels, so dashboards can group by them. */
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

function hostnameTaken(hostname: string, why?: string): AamiError {
  const reason = why ? `: ${why}` : '';
  return new AamiError('hostname_taken', `hostname ${hostname} is held by another machine${reason}; choose another name (bootstrap.sh --hostname) or have an admin delete the old target (a target an admin made for this host is taken by its node only from the address it names)`, { target_id: hostname });
}

/**
 * Enrolment with a bootstrap token. A token creates new targets while it is active and does
 * nothing else: updating an enrolled host takes that host's node credential. The one
 * exception is a host that lost its credential (a reinstalled OS): the same machine (same
 * machine_id) may enrol again with an active token whose groups hold it; a different
 * machine claiming a taken host name is refused with `hostname_taken`. A target an admin
 * made that no node enrolled yet is taken by the first node that enrols it from the address
 * it names, with a token whose groups hold it: not a way to move another host's scraping.
 *
 * A token is on hundreds of machines and reads nothing of the inventory: what the request
 * alone decides (the token, the group asked for, the exporters) is checked before anything
 * of a host of that name is looked at, and every host that is not the caller's own is
 * "taken" alike. Else refusals told apart (taken: 409, free: 422) would list host names,
 * their groups and which are an admin's, at no cost.
 *
 * Runs inside the writer queue, so the token's use count read here is the committed one and
 * its increment lands in the same commit as the target: under any concurrency `max_uses: N`
 * admits exactly N hosts.
 */
export function enrolNode(writer: Writer, input: Registration, tokenId: string, address: string, now: Date): Promise<RegistrationResult & { commit: string | null }> {
  const actor: Actor = { kind: 'token', tokenId, address };
  return writer.update<RegistrationResult>(commitMeta(actor, `Register ${input.hostname}`), ({ catalog }, files) => {
    const existing = catalog.targets.get(input.hostname);
    // Only the machine the host's identity is of re-enrols it (and then without a use of the token); anyone else enrols a new host.
    const owner = existing !== undefined && sameMachine(existing, input.machine_id);
    // A used-up ephemeral token still re-enrols a node it counts already, not one another token enrolled (that would pass its cap).
    const token = requireActiveToken(catalog, tokenId, now, !owner || existing.registered_by_token !== tokenId);
    const asked = input.group_id ?? token.default_group;
    // A group that does not exist is outside the tree as well: one answer, so a token cannot list the groups.
    if (!owner && !inScope(catalog, token, asked)) throw new AamiError('forbidden', `bootstrap token ${token.id}: it may only register into group "${token.default_group}" and its children, not "${asked}"`, { group_id: asked });
    if (input.exporters) requireExporters(catalog, input.exporters);
    if (existing && !owner) {
      const unenrolled = !existing.node_credential_hash && !existing.machine_id_hash && !existing.machine_id;
      if (!unenrolled || existing.ip_address !== input.ip_address || !inScope(catalog, token, existing.primary_group)) {
        throw hostnameTaken(input.hostname, input.machine_id === undefined ? 'this request sends no machine identity (machine_id), which re-enrolling a host takes' : undefined);
      }
    }
    const group = existing?.primary_group ?? asked;
    requireGroup(catalog, group);
    if (!inScope(catalog, token, group)) throw new AamiError('forbidden', `bootstrap token ${token.id}: host "${input.hostname}" is in group "${group}", outside the token's group "${token.default_group}"`, { group_id: group });

    const credential = newSecretCredential(NODE_PREFIX);
    const target: Target = {
      hostname: input.hostname,
      ip_address: input.ip_address,
      primary_group: group,
      groups: existing?.groups ?? [],
      exporters: input.exporters ?? existing?.exporters ?? [{ type: 'node_exporter', enabled: true }],
      labels: existing?.labels ?? {},
      node_labels: { ...factLabels(input.facts), ...input.labels },
      token_labels: token.labels,
      facts: input.facts,
      registered_by_token: token.id,
      registered_at: existing?.registered_at ?? now.toISOString(),
      machine_id_hash: input.machine_id === undefined ? undefined : hashSecret(input.machine_id),
      node_credential_hash: credential.hash,
    };
    checkTarget(catalog, target, { nameHolder: false });
    const changes: Change[] = targetChanges(files, target, existing);
    if (!owner) changes.push(tokenUse(files, token));
    const outcome: RegistrationOutcome = owner ? 'reenrolled' : 'created';
    const verb = outcome === 'created' ? 'Register' : 'Re-enrol';
    return { changes, message: `${verb} ${target.hostname} with bootstrap token ${token.id}`, result: { outcome, target, nodeCredential: credential.credential } };
  });
}

/** The token's use counter, one up, in the same commit as the host it admits. */
function tokenUse(files: PlanFiles, token: Token): Change {
  const path = tokenPath(token.id);
  return { path, content: renderYaml(tokenFileData({ ...token, uses: token.uses + 1 }), files.text(path)) };
}

/**
 * A node updates what it owns of its own target with its node credential: its address,
 * exporters, facts and its own labels. The admin's labels, the token's labels and the
 * groups stay as they are. Nothing changed: no commit.
 */
export function updateOwnTarget(writer: Writer, hostname: string, input: NodeUpdate, address: string): Promise<RegistrationResult & { commit: string | null }> {
  const actor: Actor = { kind: 'node', hostname, address };
  return writer.update<RegistrationResult>(commitMeta(actor, `Update ${hostname}`), ({ catalog }, files) => {
    const current = requireTarget(catalog, hostname);
    if (input.machine_id && current.machine_id_hash && !sameMachine(current, input.machine_id)) {
      throw hostnameTaken(hostname, 'this node credential was issued to another machine');
    }
    const facts = input.facts ?? current.facts;
    const nodeLabels = input.labels === undefined && input.facts === undefined ? current.node_labels : { ...factLabels(facts), ...(input.labels ?? current.node_labels) };
    const credential = input.rotate_credential ? newSecretCredential(NODE_PREFIX) : undefined;
    // The node's own credential vouches for the identity it sends, unless that is the value an older file showed.
    const identity = current.machine_id_hash ?? (input.machine_id === undefined || input.machine_id === current.machine_id ? undefined : hashSecret(input.machine_id));
    const target: Target = {
      ...current,
      ip_address: input.ip_address ?? current.ip_address,
      exporters: input.exporters ?? current.exporters,
      node_labels: nodeLabels,
      facts,
      machine_id_hash: identity,
      // An older file's identity as sent stays (public already, and never trusted) until one is
      // recorded: it tells a bootstrap.sh from before v2, which sends it again, every time.
      machine_id: identity ? undefined : current.machine_id,
      node_credential_hash: credential?.hash ?? current.node_credential_hash,
    };
    if (isDeepStrictEqual(stripUndefined(target), stripUndefined(current))) return { changes: [], result: { outcome: 'unchanged', target: current } };
    checkTarget(catalog, target, { nameHolder: false });
    return { changes: targetChanges(files, target, current), result: { outcome: 'updated', target, nodeCredential: credential?.credential } };
  });
}

function stripUndefined<T extends object>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}
