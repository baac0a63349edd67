import { DEFAULT_SETTINGS, type CheckPolicy, type CheckScript, type Credential, type Group, type Settings, type Target, type Token } from '../schema/index.js';
import { exporterType, portKeys, type AddressTable } from './address.js';
import type { Entity, ParseResult } from './parse.js';
import { PMap } from './pmap.js';
import { establishedIn, placeTargets, type Established } from './place.js';
import type { Problem } from './problem.js';

/** The validated view of the config repo: only entities whose references all resolve. */
export interface Catalog {
  readonly settings: Settings;
  readonly groups: ReadonlyMap<string, Group>;
  /** By hostname. */
  readonly targets: ReadonlyMap<string, Target>;
  readonly tokens: ReadonlyMap<string, Token>;
  /**
   * IP address → the host name of the one target scraped there, or the table of its
   * addresses when several targets are (address.ts, scrapedAt). A served target's file is
   * targets/<primary_group>/<hostname>.yaml (parse.ts checks both): no index of paths.
   */
  readonly hostsByIp: ReadonlyMap<string, string | AddressTable>;
  /** sha256 hash of a node credential → hostname. */
  readonly nodeCredentials: ReadonlyMap<string, string>;
  /** Named API credentials by id. */
  readonly apiCredentials: ReadonlyMap<string, Credential>;
  /** Token id → how many targets it enrolled are in the catalog (an ephemeral token's limit counts these). */
  readonly tokenHosts: ReadonlyMap<string, number>;
  readonly checks: ReadonlyMap<string, Check>;
  /**
   * Primary group → its targets by hostname. A group's map is a new object only when one of
   * its targets changed, so the compiler re-renders one group's SD shard, not the fleet.
   */
  readonly groupTargets: ReadonlyMap<string, ReadonlyMap<string, Target>>;
}

export interface Check {
  name: string;
  policy: CheckPolicy;
  script: CheckScript;
}

/**
 * A file of the repo as the catalog keeps it: its blob at the head (null: deleted, kept only
 * while something still uses its last good version), its parse, and the last version of it
 * that made it into a catalog.
 */
export interface FileRecord {
  readonly oid: string | null;
  readonly parsed: ParseResult;
  readonly lastGood?: Entity;
  readonly lastGoodOid?: string;
  /** The text, kept only when it has comments: an API edit keeps what a pull-request author wrote. */
  readonly text?: string;
}

export interface BuildResult {
  catalog: Catalog;
  /** Every file with a problem: its current version is not what it contributes. */
  problems: Map<string, Problem[]>;
  /** The version each file contributes. */
  accepted: Map<string, Entity>;
  /** Deleted files nothing uses any more: their records can go. */
  dropped: Set<string>;
}

/** A catalog's maps while it is being built or changed: Maps, or drafts of the previous snapshot's maps. */
export interface WritableMap<K, V> extends ReadonlyMap<K, V> {
  set(key: K, value: V): unknown;
  delete(key: K): boolean;
}

export interface WritableCatalog {
  settings: Settings;
  groups: WritableMap<string, Group>;
  targets: WritableMap<string, Target>;
  tokens: WritableMap<string, Token>;
  /** A full build's tables are plain Maps (frozen at its end); a draft replaces a table's PMap with a new one on each change. */
  hostsByIp: WritableMap<string, string | Map<string, string> | PMap<string, string>>;
  nodeCredentials: WritableMap<string, string>;
  apiCredentials: WritableMap<string, Credential>;
  tokenHosts: WritableMap<string, number>;
  checks: WritableMap<string, Check>;
  /** A full build fills plain Maps; a draft replaces a group's PMap with a new one on each change. */
  groupTargets: WritableMap<string, Map<string, Target> | PMap<string, Target>>;
}

/**
 * Kinds that let someone in fail closed: a credential or token file that breaks is not served
 * at its last good version, but not at all (a revocation with a typo, `revoked: yes`, must
 * not leave the secret working; a role lowered with a typo must not stay raised).
 */
const FAILS_CLOSED = new Set<Entity['kind']>(['credential', 'token']);

/** Whether a broken file may be served at this older version of it: not a credential's or a token's. */
export function mayFallBackTo(entity: Entity): boolean {
  return !FAILS_CLOSED.has(entity.kind);
}

/** The last good version a file may fall back to. */
function fallbackOf(record: FileRecord): Entity | undefined {
  return record.lastGood && mayFallBackTo(record.lastGood) ? record.lastGood : undefined;
}

/** The versions of a file worth trying, best first: the current one, then the last good one it may fall back to. */
export function versionsOf(record: FileRecord): Entity[] {
  const versions: Entity[] = [];
  if (record.parsed.entity) versions.push(record.parsed.entity);
  const fallback = fallbackOf(record);
  if (fallback && fallback !== record.parsed.entity) versions.push(fallback);
  return versions;
}

/** What kind of entity a file holds (from any version of it). */
export function kindOf(record: FileRecord): Entity['kind'] | undefined {
  return (record.parsed.entity ?? record.lastGood)?.kind;
}

const KEEPS_WHEN_DELETED = new Set<Entity['kind']>(['settings', 'group', 'script']);

/** Whether a deleted file's record stays (its last good version may still be needed) or goes at once. */
export function keptWhenDeleted(record: FileRecord): boolean {
  return record.lastGood !== undefined && KEEPS_WHEN_DELETED.has(record.lastGood.kind);
}

/**
 * Build the catalog from every file: pure, so the server, `aami validate` on a pull
 * request's tree and the tests all go through the same checks. Each file contributes its
 * current version if that passes every check, else its last good version, else nothing,
 * and is reported against its own path. Where two files claim the same host name or
 * address, the file that held the claim before (`established`: who held each claim, or the
 * catalog this build follows, whose served targets hold their claims as this build's
 * aami.yaml keys them) keeps it; the newcomer is the invalid one, before and after a restart
 * alike. A file deleted while others still use it (a group with targets, a script a check
 * runs) keeps its last good version.
 */
export function buildCatalog(records: ReadonlyMap<string, FileRecord>, established?: Established | Catalog): BuildResult {
  /** Deleted group id → its path. */
  const deleted = new Map<string, string>();
  for (const [path, record] of records) if (record.oid === null && record.lastGood?.kind === 'group') deleted.set(record.lastGood.id, path);
  // A deleted group stays while a version its users keep after the build refers to it: a
  // restart (those versions, its last good one among them) then keeps the same groups, for
  // the same users. A last good version the build replaces does not count, and a group only
  // such versions used goes: built first with every version's groups, then again without
  // those, until every group kept is used.
  let kept = groupUsers(records, deleted, versionsOf);
  for (;;) {
    const result = buildWith(records, established, kept);
    if (!kept.size) return result;
    const used = groupUsers(records, kept, (record, path) => [record.parsed.entity, result.accepted.get(path) ?? fallbackOf(record)]);
    if (used.size < kept.size) {
      kept = used;
      continue;
    }
    for (const [id, users] of used) {
      const path = deleted.get(id)!;
      const stays = { file: path, field: '', message: deletedMessage(`it is still used by ${users}`) };
      result.problems.set(path, [stays, ...(result.problems.get(path) ?? [])]);
    }
    return result;
  }
}

const deletedMessage = (why: string) => `was deleted, but ${why}: its last good version stays until that changes`;

/** One build, with the deleted groups `kept` (by id) and none other. */
function buildWith(records: ReadonlyMap<string, FileRecord>, established: Established | Catalog | undefined, kept: ReadonlyMap<string, string>): BuildResult {
  const problems = new Map<string, Problem[]>();
  const report = (problem: Problem) => {
    const list = problems.get(problem.file);
    if (list) list.push(problem);
    else problems.set(problem.file, [problem]);
  };
  const accepted = new Map<string, Entity>();
  const dropped = new Set<string>();
  const byKind = new Map<Entity['kind'], Array<[string, FileRecord]>>();
  // Sorted as they are, not by key and then looked up (100k lookups at 100k targets).
  for (const [path, record] of [...records].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    for (const problem of record.parsed.problems) report(problem);
    const kind = kindOf(record);
    if (!kind) continue;
    const list = byKind.get(kind);
    if (list) list.push([path, record]);
    else byKind.set(kind, [[path, record]]);
  }
  const ofKind = (kind: Entity['kind']) => byKind.get(kind) ?? [];
  const deletedStays = (path: string, why: string) => report({ file: path, field: '', message: deletedMessage(why) });

  // Settings: aami.yaml is always in use; deleting it keeps its last good version.
  let settings = DEFAULT_SETTINGS;
  for (const [path, record] of ofKind('settings')) {
    if (record.oid === null) deletedStays(path, 'every target depends on it (restore it; `exporters: {}` declares no exporter types)');
    const found = settleOne(record, (entity) => (entity.kind === 'settings' ? settingsProblems(path, entity.value) : []));
    if (found.problems) for (const problem of found.problems) report(problem);
    if (found.entity?.kind === 'settings') {
      settings = found.entity.value;
      accepted.set(path, found.entity);
    }
  }

  // Groups, with the deleted ones kept (buildCatalog reports those).
  const groupRecords = new Map<string, [string, FileRecord]>();
  for (const [path, record] of ofKind('group')) {
    const id = (record.parsed.entity ?? record.lastGood)!.id as string;
    if (record.oid === null && !kept.has(id)) dropped.add(path);
    else groupRecords.set(id, [path, record]);
  }
  const groups = resolveGroups(groupRecords, report, accepted);

  const catalog = emptyCatalog(settings, groups);

  // Targets: each version must fit the groups and aami.yaml, then claims are placed.
  const candidates = ofKind('target').map(([path, record]) => targetCandidate(catalog, path, record, report));
  const holder = typeof established === 'function' ? established : established ? establishedIn(established, settings) : () => undefined;
  const placed = placeTargets(candidates, catalog, { established: holder, settings });
  for (const [path, problemList] of placed.problems) for (const problem of problemList) report({ ...problem, file: path });
  for (const [path, target] of placed.accepted) {
    addTarget(catalog, target);
    accepted.set(path, targetEntity(records.get(path)!, target));
  }

  for (const [path, record] of ofKind('token')) {
    const found = settleOne(record, (entity) => (entity.kind === 'token' ? tokenProblems(catalog, path, entity.value) : []));
    if (found.problems) for (const problem of found.problems) report(problem);
    if (found.entity?.kind === 'token') {
      catalog.tokens.set(found.entity.id, found.entity.value);
      accepted.set(path, found.entity);
    }
  }
  for (const [path, record] of ofKind('credential')) {
    const [entity] = versionsOf(record);
    if (entity?.kind !== 'credential') continue;
    catalog.apiCredentials.set(entity.id, entity.value);
    accepted.set(path, entity);
  }

  // Checks and their scripts: a deleted script a check still runs keeps its last good version.
  const scripts = new Map<string, [string, FileRecord]>();
  for (const [path, record] of ofKind('script')) scripts.set((record.parsed.entity ?? record.lastGood)!.id, [path, record]);
  const usedScripts = new Set<string>();
  for (const [path, record] of ofKind('check')) {
    const found = settleOne(record, (entity) => {
      if (entity.kind !== 'check') return [];
      const found: Problem[] = [];
      const script = scripts.get(`${entity.id}/${entity.value.script}`);
      const text = script && versionsOf(script[1])[0];
      if (!text) found.push({ file: path, field: 'script', message: `checks/${entity.id}/${entity.value.script} does not exist` });
      for (const id of Object.keys(entity.value.groups)) if (!groups.has(id)) found.push({ file: path, field: `groups.${id}`, message: `group "${id}" does not exist` });
      return found;
    });
    if (found.problems) for (const problem of found.problems) report(problem);
    if (found.entity?.kind !== 'check') continue;
    const { id, value: policy } = found.entity;
    const [scriptPath, scriptRecord] = scripts.get(`${id}/${policy.script}`)!;
    const script = versionsOf(scriptRecord)[0]!;
    if (script.kind !== 'script') continue;
    usedScripts.add(scriptPath);
    catalog.checks.set(id, { name: id, policy, script: script.value });
    accepted.set(path, found.entity);
  }
  for (const [path, record] of scripts.values()) {
    if (record.oid === null) {
      if (usedScripts.has(path)) deletedStays(path, 'its check still runs it');
      else dropped.add(path);
    }
    const [version] = versionsOf(record);
    if (version && (record.oid !== null || usedScripts.has(path))) accepted.set(path, version);
  }

  return { catalog: freezeCatalog(catalog), problems, accepted, dropped };
}

/**
 * The catalog of files a build has settled: each file that contributes anything contributes
 * its last good version (what every build sets it to), and nothing is checked or decided
 * again. A restart from the snapshot a stopping server saved (writer/restart-image.ts) serves
 * what that server served; test/catalog.test.ts checks it against the builds after every
 * step of random change sequences.
 */
export function catalogOf(files: ReadonlyMap<string, FileRecord>, rejected: ReadonlyMap<string, true>): Catalog {
  const catalog = emptyCatalog(DEFAULT_SETTINGS, new Map());
  const checks: Array<{ id: string; policy: CheckPolicy }> = [];
  const scripts = new Map<string, CheckScript>();
  for (const [path, record] of files) {
    const entity = record.lastGood;
    if (!entity || rejected.has(path)) continue;
    if (entity.kind === 'settings') catalog.settings = entity.value;
    else if (entity.kind === 'group') catalog.groups.set(entity.id, entity.value);
    else if (entity.kind === 'target') addTargetEntry(catalog, entity.value);
    else if (entity.kind === 'token') catalog.tokens.set(entity.id, entity.value);
    else if (entity.kind === 'credential') catalog.apiCredentials.set(entity.id, entity.value);
    else if (entity.kind === 'check') checks.push({ id: entity.id, policy: entity.value });
    else if (entity.kind === 'script') scripts.set(entity.id, entity.value);
  }
  for (const { id, policy } of checks) {
    const script = scripts.get(`${id}/${policy.script}`);
    if (script) catalog.checks.set(id, { name: id, policy, script });
  }
  const frozen = freezeCatalog(catalog);
  return { ...frozen, hostsByIp: PMap.later(hostsByIpOf(frozen.settings, frozen.targets)) };
}

/** Targets one step of hostsByIpOf indexes, short enough for the answers between steps. */
const INDEX_STEP = 2048;

/**
 * The IP index of a settled catalog's targets, made a slice at a time (PMap.later): a
 * restart serves before it is made. Which of several targets on one IP address comes first
 * does not matter: placed targets never share an address.
 */
function* hostsByIpOf(settings: Settings, targets: ReadonlyMap<string, Target>): Generator<void, Map<string, string | AddressTable>> {
  const index = { settings, targets, hostsByIp: new Map<string, string | Map<string, string> | PMap<string, string>>() };
  let count = 0;
  for (const target of targets.values()) {
    indexIp(index, target);
    if (++count % INDEX_STEP === 0) yield;
  }
  return frozenTables(index.hostsByIp);
}

function emptyCatalog(settings: Settings, groups: WritableMap<string, Group>): WritableCatalog {
  return {
    settings,
    groups,
    targets: new Map(),
    tokens: new Map(),
    hostsByIp: new Map(),
    nodeCredentials: new Map(),
    apiCredentials: new Map(),
    tokenHosts: new Map(),
    checks: new Map(),
    groupTargets: new Map(),
  };
}

/** A target file's versions that fit the groups and aami.yaml, best first; what is wrong with its current one, reported. */
export function targetCandidate(catalog: Pick<Catalog, 'groups' | 'settings'>, path: string, record: FileRecord, report: (problem: Problem) => void): { path: string; versions: Target[] } {
  const versions: Target[] = [];
  for (const [i, entity] of versionsOf(record).entries()) {
    if (entity.kind !== 'target') continue;
    const found = targetFieldProblems(catalog, path, entity.value);
    if (!found.length) versions.push(entity.value);
    else if (i === 0) for (const problem of found) report(problem);
  }
  return { path, versions };
}

/**
 * The file's own entity for a target placed from it (its current or its last good version):
 * the record keeps that one as its last good version, with the blob id of the current one.
 * An entity made anew lost the blob id after a full build and gave the next build a second
 * copy of the file's one version.
 */
export function targetEntity(record: FileRecord, target: Target): Entity {
  const current = record.parsed.entity;
  return current?.kind === 'target' && current.value === target ? current : record.lastGood!;
}

/** The first version of a file that passes `check`; the problems of its current version when that one did not. */
function settleOne(record: FileRecord, check: (entity: Entity) => Problem[]): { entity?: Entity; problems?: Problem[] } {
  let problems: Problem[] | undefined;
  for (const [i, entity] of versionsOf(record).entries()) {
    const found = check(entity);
    if (!found.length) return { entity, problems };
    if (i === 0) problems = found;
  }
  return { problems };
}

/**
 * Deleted group id → who uses it ("3 targets, 1 token"): the files that are not deleted, by
 * the `versions` of each, and the deleted groups kept for their users (a deleted group kept
 * keeps its deleted parent too). Only the groups in `deleted` are looked at.
 */
function groupUsers(records: ReadonlyMap<string, FileRecord>, deleted: ReadonlyMap<string, unknown>, versions: (record: FileRecord, path: string) => Array<Entity | undefined>): Map<string, string> {
  if (!deleted.size) return new Map();
  const users = new Map<string, Map<string, Set<string>>>();
  const use = (group: string | null | undefined, kind: string, who: string) => {
    if (!group || !deleted.has(group)) return;
    let byKind = users.get(group);
    if (!byKind) users.set(group, (byKind = new Map()));
    let set = byKind.get(kind);
    if (!set) byKind.set(kind, (set = new Set()));
    set.add(who);
  };
  const deletedGroups = new Map<string, Group>();
  for (const [path, record] of records) {
    if (record.oid === null) {
      if (record.lastGood?.kind === 'group' && deleted.has(record.lastGood.id)) deletedGroups.set(record.lastGood.id, record.lastGood.value);
      continue;
    }
    for (const entity of versions(record, path)) {
      if (entity?.kind === 'target') for (const id of [entity.value.primary_group, ...entity.value.groups]) use(id, 'target', entity.id);
      if (entity?.kind === 'token') use(entity.value.default_group, 'token', entity.id);
      if (entity?.kind === 'group') use(entity.value.parent, 'child group', entity.id);
      if (entity?.kind === 'check') for (const id of Object.keys(entity.value.groups)) use(id, 'check', entity.id);
    }
  }
  // A deleted group kept for its users keeps its deleted parent too.
  for (let grew = true; grew; ) {
    grew = false;
    for (const [id, group] of deletedGroups) {
      if (users.has(id) && group.parent && !users.get(group.parent)?.get('child group')?.has(id)) {
        use(group.parent, 'child group', id);
        grew = true;
      }
    }
  }
  const described = new Map<string, string>();
  for (const [group, byKind] of users) {
    const parts = [...byKind].sort(([a], [b]) => (a < b ? -1 : 1)).map(([kind, who]) => {
      const names = [...who].sort();
      const shown = names.slice(0, 3).join(', ') + (names.length > 3 ? `, … (${names.length} in all)` : '');
      return `${kind}${names.length === 1 ? '' : 's'} ${shown}`;
    });
    described.set(group, parts.join('; '));
  }
  return described;
}

/**
 * Keep the groups whose parent chain reaches a root through valid groups of the same
 * namespace. Each group is settled after its parent (depth first, in id order), trying its
 * current version and then its last good one, so a child never falls back because of a
 * parent that itself falls back to a good version.
 */
function resolveGroups(files: Map<string, [string, FileRecord]>, report: (problem: Problem) => void, accepted: Map<string, Entity>): Map<string, Group> {
  const settled = new Map<string, Group | null>();
  const visiting = new Set<string>();
  const visit = (id: string): Group | null => {
    const known = settled.get(id);
    if (known !== undefined) return known;
    const file = files.get(id);
    if (!file) return null;
    const [path, record] = file;
    visiting.add(id);
    let chosen: Group | null = null;
    for (const [i, entity] of versionsOf(record).entries()) {
      if (entity.kind !== 'group') continue;
      const problem = parentProblem(entity.value, files, visiting, visit);
      if (!problem) {
        chosen = entity.value;
        accepted.set(path, entity);
        break;
      }
      if (i === 0) report({ file: path, field: 'parent', message: problem });
    }
    visiting.delete(id);
    settled.set(id, chosen);
    return chosen;
  };
  const groups = new Map<string, Group>();
  for (const id of [...files.keys()].sort()) {
    const group = visit(id);
    if (group) groups.set(id, group);
  }
  return groups;
}

function parentProblem(group: Group, files: Map<string, [string, FileRecord]>, visiting: Set<string>, visit: (id: string) => Group | null): string | undefined {
  if (!group.parent) return undefined;
  if (!files.has(group.parent)) return `group "${group.parent}" does not exist`;
  if (visiting.has(group.parent)) return `groups form a cycle through "${group.parent}"`;
  const parent = visit(group.parent);
  if (!parent) return `parent group "${group.parent}" is invalid`;
  if (parent.namespace !== group.namespace) return `group "${group.parent}" is in namespace "${parent.namespace}", not "${group.namespace}"`;
  return undefined;
}

/**
 * What is wrong with a target apart from its claims (host name and addresses, which
 * placeTargets decides): its groups and exporter types must exist, none listed twice.
 */
export function targetFieldProblems(catalog: Pick<Catalog, 'groups' | 'settings'>, path: string, target: Target): Problem[] {
  const problems: Problem[] = [];
  const add = (field: string, message: string) => problems.push({ file: path, field, message });
  const { groups, exporters } = target;
  if (!catalog.groups.has(target.primary_group)) add('primary_group', `group "${target.primary_group}" does not exist`);
  for (let i = 0; i < groups.length; i++) {
    const id = groups[i]!;
    if (!catalog.groups.has(id)) add(`groups[${i}]`, `group "${id}" does not exist`);
    else if (id === target.primary_group || groups.indexOf(id) !== i) add(`groups[${i}]`, `group "${id}" is listed twice`);
  }
  for (const { field, message } of exporterProblems(catalog.settings, exporters)) add(field, message);
  return problems;
}

/** A target's exporters: each of a type aami.yaml defines, each type once. */
export function exporterProblems(settings: Settings, exporters: ReadonlyArray<{ type: string }>): Array<{ field: string; message: string }> {
  const problems: Array<{ field: string; message: string }> = [];
  for (let i = 0; i < exporters.length; i++) {
    const { type } = exporters[i]!;
    if (!exporterType(settings, type)) problems.push({ field: `exporters[${i}].type`, message: `unknown exporter type "${type}" (aami.yaml defines ${Object.keys(settings.exporters).join(', ')})` });
    // An earlier exporter of the type is known too: it was counted.
    else if (exporters.findIndex((e) => e.type === type) !== i) problems.push({ field: `exporters[${i}].type`, message: `"${type}" is listed twice` });
  }
  return problems;
}

export function tokenProblems(catalog: Pick<Catalog, 'groups'>, path: string, token: Token): Problem[] {
  return catalog.groups.has(token.default_group) ? [] : [{ file: path, field: 'default_group', message: `group "${token.default_group}" does not exist` }];
}

/** Put a placed target into the catalog with its indexes. */
export function addTarget(catalog: WritableCatalog, target: Target): void {
  addTargetEntry(catalog, target);
  indexIp(catalog, target);
}

/** The target and every index of it but its IP address. */
function addTargetEntry(catalog: WritableCatalog, target: Target): void {
  catalog.targets.set(target.hostname, target);
  if (target.node_credential_hash) catalog.nodeCredentials.set(target.node_credential_hash, target.hostname);
  if (target.registered_by_token) catalog.tokenHosts.set(target.registered_by_token, (catalog.tokenHosts.get(target.registered_by_token) ?? 0) + 1);
  setGroupTarget(catalog, target.primary_group, target.hostname, target);
}

type IpIndex = Pick<WritableCatalog, 'settings' | 'hostsByIp'> & { targets: ReadonlyMap<string, Target> };

/**
 * A target under its IP address, when it is scraped anywhere: its host name while it is the
 * only one there, else the IP address's table of addresses (the first target's go in too).
 * A table costs a registration what its own addresses cost, however many targets share the
 * IP address (behind NAT, say).
 */
function indexIp(catalog: IpIndex, target: Target): void {
  const { ip_address: ip, hostname } = target;
  const ports = portKeys(catalog.settings, target);
  if (!ports.length) return;
  const on = catalog.hostsByIp.get(ip);
  if (on === hostname) return;
  if (on === undefined) return void catalog.hostsByIp.set(ip, hostname);
  const first = typeof on === 'string' ? portKeys(catalog.settings, catalog.targets.get(on)).map((port) => [port, on] as const) : [];
  changeTable(catalog, ip, typeof on === 'string' ? undefined : on, (table) => {
    for (const [port, holder] of first) table.set(port, holder);
    for (const port of ports) table.set(port, hostname);
  });
}

function unindexIp(catalog: IpIndex, target: Target): void {
  const { ip_address: ip, hostname } = target;
  const ports = portKeys(catalog.settings, target);
  if (!ports.length) return; // never indexed
  const on = catalog.hostsByIp.get(ip);
  if (on === hostname) catalog.hostsByIp.delete(ip);
  else if (on !== undefined && typeof on !== 'string') {
    changeTable(catalog, ip, on, (table) => {
      for (const port of ports) if (table.get(port) === hostname) table.delete(port);
    });
  }
}

/**
 * Changes an IP address's table (a new one when undefined): in place while a full build
 * makes the index (its Maps are frozen at its end); in a draft, a new PMap, as snapshots
 * share the one it had. A table left empty goes.
 */
function changeTable(catalog: IpIndex, ip: string, table: Map<string, string> | PMap<string, string> | undefined, change: (table: WritableMap<string, string>) => void): void {
  if (catalog.hostsByIp instanceof Map) {
    const inPlace = table instanceof Map ? table : new Map(table);
    change(inPlace);
    if (inPlace.size) catalog.hostsByIp.set(ip, inPlace);
    else catalog.hostsByIp.delete(ip);
    return;
  }
  const draft = (table instanceof PMap ? table : PMap.from(new Map(table))).edit();
  change(draft);
  const next = draft.freeze();
  if (next.size) catalog.hostsByIp.set(ip, next);
  else catalog.hostsByIp.delete(ip);
}

/** A full build's index, its tables frozen: a draft changes them by making new ones. */
function frozenTables(hostsByIp: Map<string, string | Map<string, string> | PMap<string, string>>): Map<string, string | AddressTable> {
  for (const [ip, on] of hostsByIp) if (on instanceof Map) hostsByIp.set(ip, PMap.from(on));
  return hostsByIp;
}

export function removeTarget(catalog: WritableCatalog, hostname: string): void {
  const target = catalog.targets.get(hostname);
  if (!target) return;
  unindexIp(catalog, target);
  catalog.targets.delete(hostname);
  if (target.node_credential_hash && catalog.nodeCredentials.get(target.node_credential_hash) === hostname) catalog.nodeCredentials.delete(target.node_credential_hash);
  setGroupTarget(catalog, target.primary_group, hostname, undefined);
  const token = target.registered_by_token;
  if (token) {
    const left = (catalog.tokenHosts.get(token) ?? 1) - 1;
    if (left > 0) catalog.tokenHosts.set(token, left);
    else catalog.tokenHosts.delete(token);
  }
}

function setGroupTarget(catalog: WritableCatalog, group: string, hostname: string, target: Target | undefined): void {
  const inner = catalog.groupTargets.get(group);
  if (inner instanceof Map) {
    if (target) inner.set(hostname, target);
    else inner.delete(hostname);
    if (!inner.size) catalog.groupTargets.delete(group);
    return;
  }
  if (!inner) {
    // A full build collects plain Maps (frozen at its end); a draft holds immutable PMaps.
    if (!target) return;
    catalog.groupTargets.set(group, catalog.groupTargets instanceof Map ? new Map([[hostname, target]]) : PMap.from(new Map([[hostname, target]])));
    return;
  }
  const draft = inner.edit();
  if (target) draft.set(hostname, target);
  else draft.delete(hostname);
  const next = draft.freeze();
  if (next.size) catalog.groupTargets.set(group, next);
  else catalog.groupTargets.delete(group);
}

function settingsProblems(path: string, settings: Settings): Problem[] {
  const jobs = new Map<string, string>();
  for (const [type, { job }] of Object.entries(settings.exporters)) {
    const other = jobs.get(job);
    if (other) return [{ file: path, field: `exporters.${type}.job`, message: `job "${job}" is already used by exporter type "${other}"` }];
    jobs.set(job, type);
  }
  return [];
}

function freezeCatalog(catalog: WritableCatalog): Catalog {
  const freeze = <K, V>(map: WritableMap<K, V>) => (map instanceof Map ? PMap.from(map) : map);
  return {
    settings: catalog.settings,
    groups: freeze(catalog.groups),
    targets: freeze(catalog.targets),
    tokens: freeze(catalog.tokens),
    hostsByIp: catalog.hostsByIp instanceof Map ? PMap.from(frozenTables(catalog.hostsByIp)) : catalog.hostsByIp,
    nodeCredentials: freeze(catalog.nodeCredentials),
    apiCredentials: freeze(catalog.apiCredentials),
    tokenHosts: freeze(catalog.tokenHosts),
    checks: freeze(catalog.checks),
    groupTargets: PMap.from(new Map([...catalog.groupTargets].map(([group, targets]) => [group, targets instanceof Map ? PMap.from(targets) : targets]))),
  };
}

export function assertNever(value: never): never {
  throw new Error(`unexpected value: ${JSON.stringify(value)}`);
}
