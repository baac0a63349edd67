import { isDeepStrictEqual } from 'node:util';
import type { Catalog } from '../catalog/build.js';
import { groupChain } from '../catalog/labels.js';
import { tokenPath } from '../catalog/parse.js';
import type { PlanFiles } from '../writer/writer.js';
import { AamiError } from '../errors.js';
import type { Change } from '../git/repository.js';
import type { Writer } from '../writer/writer.js';
import { exporter as exporterSchema, type Exporter, type Facts, type NodeUpdate, type Registration, type Target, type Token } from '../schema/index.js';

type NodeExporter = NonNullable<Registration['exporters']>[number];
import { hashSecret, NODE_PREFIX, newSecretCredential } from '../tokens/secret.js';
import { commitMeta, type Actor } from './actor.js';
import { checkTarget, checkTargetItself, heldAddress, requireTarget, sameMachine, targetChanges } from './targets.js';
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

/**
 * A host name or an address another machine holds: one answer for both, so a refusal tells
 * neither whether the name exists nor whether the address is scraped (a token is on hundreds
 * of machines and reads nothing of the inventory).
 */
function heldByAnother(target: Target): AamiError {
  return new AamiError(
    'hostname_taken',
    `another machine holds this host name or address: choose another name (bootstrap.sh --hostname); this machine's own host re-enrols with its machine identity (bootstrap.sh sends it), else an admin deletes the old target (hostname ${target.hostname}, address ${target.ip_address})`,
    { target_id: target.hostname },
  );
}

/**
 * Enrolment with a bootstrap token. A token creates new targets while it is active and does
 * nothing else: updating an enrolled host takes that host's node credential. The one
 * exception is a host that lost its credential (a reinstalled OS): the same machine (the
 * machine identity whose hash the target keeps) may enrol again with an active token whose
 * groups hold it. Any other host of the name — another machine's, one enrolled before
 * identities were kept as hashes, a target an admin made — is held: 409 `hostname_taken`.
 *
 * A token reads nothing of the inventory, and its answers tell nothing of it before a write:
 * what the request alone decides (the token, the group asked for, the target's own validity)
 * is checked first, and then a name and an address held by another machine get one answer.
 * Else refusals told apart (taken: 409, free: 422 or another 409) would list host names,
 * their groups and who is scraped where, at no cost.
 *
 * Runs inside the writer queue, so the token's use count read here is the committed one and
 * its increment lands in the same commit as the target: under any concurrency `max_uses: N`
 * admits exactly N hosts.
 */
export function enrolNode(writer: Writer, input: Registration, tokenId: string, address: string, now: Date): Promise<RegistrationResult & { commit: string | null }> {
  const actor: Actor = { kind: 'token', tokenId, address };
  return writer.update<RegistrationResult>(commitMeta(actor, `Register ${input.hostname}`), ({ catalog }, files) => {
    const found = catalog.targets.get(input.hostname);
    // Only the machine the host's identity is of re-enrols it (without a use of the token); for anyone else the request is a new host's.
    const own = found && sameMachine(found, input.machine_id) ? found : undefined;
    // A used-up ephemeral token still re-enrols a node it counts already, not one another token enrolled (that would pass its cap).
    const token = requireActiveToken(catalog, tokenId, now, !own || own.registered_by_token !== tokenId);
    const group = own?.primary_group ?? input.group_id ?? token.default_group;
    // A group that does not exist is outside the tree as well: one answer, so a token cannot list the groups.
    if (!inScope(catalog, token, group)) {
      const what = own ? `host "${own.hostname}" is in group "${group}", outside its group "${token.default_group}"` : `it may only register into group "${token.default_group}" and its children, not "${group}"`;
      throw new AamiError('forbidden', `bootstrap token ${token.id}: ${what}`, { group_id: group });
    }

    const credential = newSecretCredential(NODE_PREFIX);
    const target: Target = {
      hostname: input.hostname,
      ip_address: input.ip_address,
      primary_group: group,
      groups: own?.groups ?? [],
      exporters: withStoredFields(input.exporters, own?.exporters) ?? own?.exporters ?? [{ type: 'node_exporter', enabled: true }],
      labels: own?.labels ?? {},
      node_labels: { ...factLabels(input.facts), ...input.labels },
      token_labels: token.labels,
      facts: input.facts,
      registered_by_token: token.id,
      registered_at: own?.registered_at ?? now.toISOString(),
      machine_id_hash: input.machine_id === undefined ? undefined : hashSecret(input.machine_id),
      node_credential_hash: credential.hash,
    };
    if (own) checkTarget(catalog, target, { nameHolder: false });
    else {
      checkTargetItself(catalog, target);
      if (found || heldAddress(catalog, target)) throw heldByAnother(target);
    }
    const changes: Change[] = targetChanges(files, target, own);
    if (!own) changes.push(tokenUse(files, token));
    const outcome: RegistrationOutcome = own ? 'reenrolled' : 'created';
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
      throw new AamiError('hostname_taken', `hostname ${hostname} is held by another machine: this node credential was issued to another machine (a cloned disk image?); enrol this machine with a bootstrap token and another name (bootstrap.sh --hostname)`, { target_id: hostname });
    }
    const facts = input.facts ?? current.facts;
    const nodeLabels = input.labels === undefined && input.facts === undefined ? current.node_labels : { ...factLabels(facts), ...(input.labels ?? current.node_labels) };
    const credential = input.rotate_credential ? newSecretCredential(NODE_PREFIX) : undefined;
    // The node's own credential vouches for the identity it sends, unless that is the value an older file showed.
    const identity = current.machine_id_hash ?? (input.machine_id === undefined || input.machine_id === current.machine_id ? undefined : hashSecret(input.machine_id));
    const target: Target = {
      ...current,
      ip_address: input.ip_address ?? current.ip_address,
      exporters: withStoredFields(input.exporters, current.exporters) ?? current.exporters,
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

/**
 * The exporters a node sent, with what it did not send kept from the target's exporter of the
 * same type: whether it is scraped (`enabled`: an admin's `false` stays), where (metrics_path
 * and scheme, which a node cannot send) and, when the node sent none, its interval. Replaced
 * whole, an admin's settings were gone at the node's next bootstrap run.
 */
function withStoredFields(sent: NodeExporter[] | undefined, stored: readonly Exporter[] | undefined): Exporter[] | undefined {
  return sent?.map((exporter) => {
    const before = stored?.find((e) => e.type === exporter.type);
    const kept = { enabled: exporter.enabled ?? before?.enabled, metrics_path: before?.metrics_path, scheme: before?.scheme, interval: exporter.interval ?? before?.interval };
    const merged: Record<string, unknown> = { ...exporter };
    for (const [field, value] of Object.entries(kept)) if (value !== undefined) merged[field] = value;
    // Parsed again: the fields in the schema's order, as a file read back has them (`enabled` true by default).
    return exporterSchema.parse(merged);
  });
}
