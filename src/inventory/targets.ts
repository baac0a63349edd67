import { formatAddress, scrapedAt } from '../catalog/address.js';
import { exporterProblems, type Catalog } from '../catalog/build.js';
import { targetPath } from '../catalog/parse.js';
import type { PlanFiles } from '../writer/writer.js';
import { AamiError } from '../errors.js';
import type { Change } from '../git/repository.js';
import type { Writer } from '../writer/writer.js';
import { own, targetFile, type Target, type TargetCreate, type TargetPatch, type TargetReplace } from '../schema/index.js';
import { describeZodError } from '../schema/describe.js';
import { commitMeta, type Actor } from './actor.js';
import { requireGroup } from './groups.js';
import { secretMatches } from '../tokens/secret.js';
import { renderYaml } from './yaml-file.js';

/**
 * Whether a node sent the machine identity the target holds: the target keeps a hash of it,
 * as of its credential, so whoever reads the target cannot send it (a bootstrap token and
 * a readable identity took a host over). An older file's identity as sent is not taken.
 */
export function sameMachine(target: Target, sent: string | undefined): boolean {
  return sent !== undefined && target.machine_id_hash !== undefined && secretMatches(sent, target.machine_id_hash);
}

export function requireTarget(catalog: Catalog, id: string): Target {
  const target = catalog.targets.get(id.toLowerCase());
  if (!target) throw new AamiError('target_not_found', `target "${id}" does not exist`, { target_id: id });
  return target;
}

/** Refuse exporters of a type aami.yaml does not define, or of one type twice: what the request alone decides. */
function requireExporters(catalog: Catalog, exporters: ReadonlyArray<{ type: string }>): void {
  const problems = exporterProblems(catalog.settings, exporters);
  if (problems.length) throw new AamiError('validation_failed', problems.map((p) => p.message).join('; '), problems);
}

/**
 * What a target alone decides, checked before anything of the inventory is looked at: its
 * groups exist, its exporters are of types aami.yaml defines (each once), and its file would
 * be valid (label counts and lengths: the file schema). A write refused after this is refused
 * for what other targets hold, and so a refusal that tells a taken address (or name) from a
 * free one is reached only by a write that would otherwise be made: a commit, in `git log`.
 */
export function checkTargetItself(catalog: Catalog, target: Target): void {
  requireGroup(catalog, target.primary_group);
  for (const id of target.groups) requireGroup(catalog, id);
  requireExporters(catalog, target.exporters);
  const data = targetFileData(target);
  const parsed = targetFile.safeParse(data);
  if (!parsed.success) {
    const details = describeZodError(parsed.error, data);
    throw new AamiError('validation_failed', `the target would be invalid: ${details.map((d) => `${d.field} ${d.message}`).join('; ')}`, details);
  }
}

/** The first of the target's addresses another target is scraped at, and that target. */
export function heldAddress(catalog: Catalog, target: Target): { address: string; holder: string } | undefined {
  for (const exporter of target.exporters) {
    const type = own(catalog.settings.exporters, exporter.type);
    if (!type || !exporter.enabled) continue;
    const port = exporter.port ?? type.port;
    const holder = scrapedAt(catalog, type.job, target.ip_address, port);
    if (holder && holder !== target.hostname) return { address: formatAddress(target.ip_address, port), holder };
  }
  return undefined;
}

/**
 * Refuse a target that is not valid by itself (checkTargetItself) or whose addresses another
 * target already has. `nameHolder: false` for a node, which may not read the inventory: the
 * answer says an address is taken, not by which host.
 */
export function checkTarget(catalog: Catalog, target: Target, { nameHolder = true } = {}): void {
  checkTargetItself(catalog, target);
  const held = heldAddress(catalog, target);
  if (!held) return;
  if (!nameHolder) throw new AamiError('conflict', `${held.address} is already scraped for another target (an admin finds which by searching ${target.ip_address} on the console's Fleet page)`);
  throw new AamiError('conflict', `${held.address} is already scraped for target "${held.holder}"`, { target_id: held.holder });
}

function targetFileData(target: Target) {
  return {
    hostname: target.hostname,
    ip_address: target.ip_address,
    primary_group: target.primary_group,
    groups: target.groups.length ? target.groups : undefined,
    exporters: target.exporters,
    labels: nonEmpty(target.labels),
    node_labels: nonEmpty(target.node_labels),
    token_labels: nonEmpty(target.token_labels),
    facts: target.facts && Object.keys(target.facts).length ? target.facts : undefined,
    registered_by_token: target.registered_by_token,
    registered_at: target.registered_at,
    machine_id_hash: target.machine_id_hash,
    // An older file's identity as sent, kept (untrusted: sameMachine) until the node records one.
    machine_id: target.machine_id_hash ? undefined : target.machine_id,
    node_credential_hash: target.node_credential_hash,
  };
}

const nonEmpty = (labels: Record<string, string>) => (Object.keys(labels).length ? labels : undefined);

/** The file changes that store `target`, moving the file when its primary group changed. */
export function targetChanges(files: PlanFiles, target: Target, previous?: Target): Change[] {
  const path = targetPath(target);
  const oldPath = previous && targetPath(previous);
  const changes: Change[] = [{ path, content: renderYaml(targetFileData(target), files.text(oldPath ?? path)) }];
  if (oldPath && oldPath !== path) changes.push({ path: oldPath, content: null });
  return changes;
}

const DEFAULT_EXPORTERS: Target['exporters'] = [{ type: 'node_exporter', enabled: true }];

export function createTarget(writer: Writer, actor: Actor, input: TargetCreate) {
  return writer.update(commitMeta(actor, `Add target ${input.hostname}`), ({ catalog }, files) => {
    if (catalog.targets.has(input.hostname)) throw new AamiError('conflict', `target "${input.hostname}" already exists`, { target_id: input.hostname });
    const target: Target = {
      hostname: input.hostname,
      ip_address: input.ip_address,
      primary_group: input.primary_group_id,
      groups: input.group_ids ?? [],
      exporters: input.exporters ?? DEFAULT_EXPORTERS,
      labels: input.labels ?? {},
      node_labels: {},
      token_labels: {},
    };
    checkTarget(catalog, target);
    return { changes: targetChanges(files, target), result: { target } };
  });
}

/** PUT replaces what an admin owns of the target (what the node and its token set is kept). */
export function replaceTarget(writer: Writer, actor: Actor, id: string, input: TargetReplace) {
  return writer.update(commitMeta(actor, `Update target ${id.toLowerCase()}`), ({ catalog }, files) => {
    const current = requireTarget(catalog, id);
    if (input.hostname && input.hostname !== current.hostname) throw hostnameFixed(current.hostname);
    const target: Target = {
      ...current,
      ip_address: input.ip_address,
      primary_group: input.primary_group_id,
      groups: input.group_ids ?? [],
      exporters: input.exporters ?? DEFAULT_EXPORTERS,
      labels: input.labels ?? {},
    };
    checkTarget(catalog, target);
    return { changes: targetChanges(files, target, current), result: { target } };
  });
}

/** PATCH is a JSON merge patch (RFC 7396): a label set to null is removed, labels not named are kept. */
export function patchTarget(writer: Writer, actor: Actor, id: string, input: TargetPatch) {
  return writer.update(commitMeta(actor, `Update target ${id.toLowerCase()}`), ({ catalog }, files) => {
    const current = requireTarget(catalog, id);
    const labels = input.labels === null ? {} : { ...current.labels };
    for (const [name, value] of Object.entries(input.labels ?? {})) {
      if (value === null) delete labels[name];
      else labels[name] = value;
    }
    const target: Target = {
      ...current,
      ip_address: input.ip_address ?? current.ip_address,
      primary_group: input.primary_group_id ?? current.primary_group,
      groups: input.group_ids === undefined ? current.groups : (input.group_ids ?? []),
      exporters: input.exporters === undefined ? current.exporters : (input.exporters ?? DEFAULT_EXPORTERS),
      labels,
    };
    checkTarget(catalog, target);
    return { changes: targetChanges(files, target, current), result: { target } };
  });
}

function hostnameFixed(hostname: string): AamiError {
  return new AamiError('validation_failed', 'the hostname is the target id and cannot change', [{ field: 'hostname', message: `must be "${hostname}"` }]);
}

export function deleteTarget(writer: Writer, actor: Actor, id: string) {
  return writer.update(commitMeta(actor, `Remove target ${id.toLowerCase()}`), ({ catalog }) => {
    const target = requireTarget(catalog, id);
    return { changes: [{ path: targetPath(target), content: null }], result: { deleted: target.hostname } };
  });
}
