import { addTarget, buildCatalog, catalogOf, keptWhenDeleted, kindOf, removeTarget, targetCandidate, targetEntity, tokenProblems, versionsOf, type Catalog, type FileRecord, type WritableCatalog } from './build.js';
import type { Entity, ParseResult } from './parse.js';
import { claimKeys, placeTargets, servedPath, type Established } from './place.js';
import { PMap, type PMapDraft } from './pmap.js';
import type { Problem } from './problem.js';
import type { Target } from '../schema/index.js';

/** A file a commit changed: its new blob and parse, or null when it was deleted. */
export interface FileUpdate {
  path: string;
  oid: string | null;
  parsed?: ParseResult;
  /** The file's text, kept only when it has comments (an API edit keeps what a pull-request author wrote). */
  text?: string;
}

/** Whether the file is in the repository (a deleted group kept while used is not). */
const isPresent = (files: ReadonlyMap<string, FileRecord> | PMap<string, FileRecord> | PMapDraft<string, FileRecord>, path: string) => (files.get(path)?.oid ?? null) !== null;

/**
 * The catalog at one commit: immutable. Readers hold one for as long as they like; the
 * writer builds the next one beside it and the live catalog swaps it in only once its
 * commit is durable (and pushed).
 */
export class Snapshot {
  private sortedProblems: Problem[] | undefined;

  /** Whether the file is in the repository, served or not (a broken one is). */
  present(path: string): boolean {
    return isPresent(this.files, path);
  }

  constructor(
    readonly version: number,
    /** The commit this snapshot shows (null: an empty repository). */
    readonly head: string | null,
    readonly files: PMap<string, FileRecord>,
    readonly catalog: Catalog,
    /** Files with problems; their current version is not what they contribute. */
    readonly problemsByFile: PMap<string, readonly Problem[]>,
    /** Files that contribute nothing at all. */
    readonly rejected: PMap<string, true>,
    /**
     * Claim key → the target files not contributing their current version that claim it in
     * some version: the files a change to that claim must look at again (and only those).
     */
    readonly wants: PMap<string, readonly string[]>,
  ) {}

  /** Every problem, by file. */
  get problems(): Problem[] {
    this.sortedProblems ??= [...this.problemsByFile.keys()].sort().flatMap((file) => this.problemsByFile.get(file)!);
    return this.sortedProblems;
  }

  /**
   * What this snapshot put off until it is read or there is time (the IP index of a
   * catalog restored from the image), a slice per step.
   */
  *deferred(): Generator<void> {
    const { hostsByIp } = this.catalog;
    if (hostsByIp instanceof PMap) yield* hostsByIp.making();
  }

  /** A file's text, when the catalog kept it (files with comments). */
  text(path: string): string | undefined {
    return this.files.get(path)?.text;
  }

  /** Build a snapshot from every file (start-up, `aami validate`). */
  static build(records: Map<string, FileRecord>, head: string | null, established?: Established | Catalog, version = 0): Snapshot {
    const result = buildCatalog(records, established);
    for (const path of result.dropped) records.delete(path);
    const files = new Map<string, FileRecord>();
    for (const [path, record] of records) files.set(path, withLastGood(record, result.accepted.get(path)));
    const rejected = new Map<string, true>();
    for (const path of files.keys()) if (!result.accepted.has(path)) rejected.set(path, true);
    const problems = new Map([...result.problems].map(([p, l]) => [p, Object.freeze(l)]));
    return new Snapshot(version, head, PMap.from(files), result.catalog, PMap.from(problems), PMap.from(rejected), PMap.from(wantsOf(result.catalog, files, problems, rejected)));
  }

  /**
   * The snapshot a stopped server had, from what it saved of it (writer/restart-image.ts):
   * its files, each with the version it contributes as its last good one, its problems and
   * the files that contribute nothing. Nothing is decided again (catalogOf).
   */
  static restore(head: string, files: Map<string, FileRecord>, problems: Map<string, readonly Problem[]>, rejected: Map<string, true>): Snapshot {
    const catalog = catalogOf(files, rejected);
    return new Snapshot(0, head, PMap.from(files), catalog, PMap.from(problems), PMap.from(rejected), PMap.from(wantsOf(catalog, files, problems, rejected)));
  }
}

/** Claim key → the files with problems, or contributing nothing, that claim it in some version. */
function wantsOf(catalog: Catalog, files: ReadonlyMap<string, FileRecord>, problems: ReadonlyMap<string, unknown>, rejected: ReadonlyMap<string, true>): Map<string, readonly string[]> {
  const wants = new Map<string, readonly string[]>();
  for (const path of new Set([...problems.keys(), ...rejected.keys()])) {
    for (const key of wantedKeys(catalog, files.get(path))) wants.set(key, [...(wants.get(key) ?? []), path]);
  }
  return wants;
}

/**
 * A file record, always of one shape. A record made by spreading another (`{ ...record,
 * lastGood }`) got a hidden class of its own in V8: ~250 bytes more a file (25 MB at 100k
 * targets), and as many more objects for every GC to mark.
 */
export function fileRecord(fields: FileRecord): FileRecord {
  return { oid: fields.oid, parsed: fields.parsed, lastGood: fields.lastGood, lastGoodOid: fields.lastGoodOid, text: fields.text };
}

/** The record with `accepted` as its last good version (the same record when nothing changes). */
function withLastGood(record: FileRecord, accepted: Entity | undefined): FileRecord {
  if (!accepted || accepted === record.lastGood) return record;
  const lastGoodOid = accepted === record.parsed.entity ? (record.oid ?? undefined) : record.lastGoodOid;
  return fileRecord({ oid: record.oid, parsed: record.parsed, lastGood: accepted, lastGoodOid, text: record.text });
}

interface Work {
  files: PMapDraft<string, FileRecord>;
  catalog: WritableCatalog & { [K in DraftKeys]: PMapDraft<any, any> };
  problems: PMapDraft<string, readonly Problem[]>;
  rejected: PMapDraft<string, true>;
  wants: PMapDraft<string, readonly string[]>;
}
type DraftKeys = 'groups' | 'targets' | 'tokens' | 'hostsByIp' | 'nodeCredentials' | 'apiCredentials' | 'tokenHosts' | 'checks' | 'groupTargets';

export interface Applied {
  /** Problems the change brings: on the files it touches, or on files it newly breaks. */
  problems: Problem[];
  /** Take the change back (the writer refuses a write alone). Only the last apply can be undone. */
  undo(): void;
}

/**
 * The next snapshot, being built by the writer: each write's files are applied, checked by
 * exactly the rules of a full build, and kept or taken back. A change to target, token and
 * credential files is applied in place (a registration at 100k targets re-places one file,
 * not the fleet); any other change rebuilds from every file. Nobody else sees a draft.
 */
export class Draft {
  private frozen: Snapshot;
  private work: Work | undefined;

  constructor(readonly base: Snapshot) {
    this.frozen = base;
  }

  get catalog(): Catalog {
    return this.work?.catalog ?? this.frozen.catalog;
  }

  text(path: string): string | undefined {
    return (this.work?.files ?? this.frozen.files).get(path)?.text;
  }

  present(path: string): boolean {
    return isPresent(this.work?.files ?? this.frozen.files, path);
  }

  apply(updates: FileUpdate[]): Applied {
    if (!updates.length) return { problems: [], undo: () => {} };
    return this.isLocal(updates) ? this.applyInPlace(updates) : this.rebuild(updates);
  }

  /** The snapshot this draft has become, for the given head. */
  freeze(head: string | null): Snapshot {
    const work = this.work;
    if (!work) return new Snapshot(this.base.version + 1, head, this.frozen.files, this.frozen.catalog, this.frozen.problemsByFile, this.frozen.rejected, this.frozen.wants);
    const c = work.catalog;
    const catalog: Catalog = {
      settings: c.settings,
      groups: c.groups.freeze(),
      targets: c.targets.freeze(),
      tokens: c.tokens.freeze(),
      hostsByIp: c.hostsByIp.freeze(),
      nodeCredentials: c.nodeCredentials.freeze(),
      apiCredentials: c.apiCredentials.freeze(),
      tokenHosts: c.tokenHosts.freeze(),
      checks: c.checks.freeze(),
      groupTargets: c.groupTargets.freeze(),
    };
    return new Snapshot(this.base.version + 1, head, work.files.freeze(), catalog, work.problems.freeze(), work.rejected.freeze(), work.wants.freeze());
  }

  /**
   * Target, token and credential files depend on groups and aami.yaml, never the other way
   * round — except a deleted group kept for its users, whose fate (and report) a target edit
   * can change: while one exists, changes rebuild. (A deleted script or aami.yaml kept for
   * its users cannot be touched by these files.)
   */
  private isLocal(updates: FileUpdate[]): boolean {
    const files = this.work?.files ?? this.frozen.files;
    const problems = this.work?.problems ?? this.frozen.problemsByFile;
    for (const path of problems.keys()) {
      const record = files.get(path);
      if (record?.oid === null && record.lastGood?.kind === 'group') return false;
    }
    return updates.every((u) => {
      const kind = u.parsed?.entity?.kind ?? (files.get(u.path) ? kindOf(files.get(u.path)!) : undefined) ?? kindFromPath(u.path);
      return kind === 'target' || kind === 'token' || kind === 'credential';
    });
  }

  private begin(): Work {
    if (this.work) return this.work;
    const f = this.frozen;
    const c = f.catalog as { [K in DraftKeys]: PMap<any, any> } & Catalog;
    this.work = {
      files: f.files.edit(),
      catalog: {
        settings: c.settings,
        groups: c.groups.edit(),
        targets: c.targets.edit(),
        tokens: c.tokens.edit(),
        hostsByIp: c.hostsByIp.edit(),
        nodeCredentials: c.nodeCredentials.edit(),
        apiCredentials: c.apiCredentials.edit(),
        tokenHosts: c.tokenHosts.edit(),
        checks: c.checks.edit(),
        groupTargets: c.groupTargets.edit(),
      },
      problems: f.problemsByFile.edit(),
      rejected: f.rejected.edit(),
      wants: f.wants.edit(),
    };
    return this.work;
  }

  private applyInPlace(updates: FileUpdate[]): Applied {
    const work = this.begin();
    const drafts: Array<PMapDraft<any, any>> = [work.files, work.problems, work.rejected, work.wants, ...Object.values(work.catalog).filter((v): v is PMapDraft<any, any> => typeof v === 'object' && 'rollback' in v)];
    const marks = drafts.map((d) => d.mark());
    const { catalog, files } = work;
    const touched = new Set<string>();
    const changed = { target: new Set<string>(), token: new Set<string>(), credential: new Set<string>() };
    // What each changed file contributed before: only that entry may leave the catalog.
    const accepted = new Map<string, Entity>();
    const before = new Map<string, FileRecord | undefined>();
    for (const update of updates) {
      const previous = files.get(update.path);
      before.set(update.path, previous);
      if (previous?.lastGood && !work.rejected.has(update.path)) accepted.set(update.path, previous.lastGood);
      const kind = (update.parsed?.entity?.kind ?? (previous && kindOf(previous)) ?? kindFromPath(update.path)) as keyof typeof changed;
      touched.add(update.path);
      changed[kind].add(update.path);
      if (update.oid === null) files.delete(update.path);
      else files.set(update.path, fileRecord({ oid: update.oid, parsed: update.parsed!, lastGood: previous?.lastGood, lastGoodOid: previous?.lastGoodOid, text: update.text }));
    }

    if (changed.target.size) this.placeAffected(work, changed.target, before);
    for (const path of changed.token) {
      const before = accepted.get(path);
      if (before?.kind === 'token') catalog.tokens.delete(before.id);
      this.settle(work, path, files.get(path), (entity) => (entity.kind === 'token' ? tokenProblems(catalog, path, entity.value) : []), (entity) => entity.kind === 'token' && catalog.tokens.set(entity.id, entity.value));
    }
    for (const path of changed.credential) {
      const before = accepted.get(path);
      if (before?.kind === 'credential') catalog.apiCredentials.delete(before.id);
      this.settle(work, path, files.get(path), () => [], (entity) => entity.kind === 'credential' && catalog.apiCredentials.set(entity.id, entity.value));
    }
    const problems = [...touched].flatMap((path) => work.problems.get(path) ?? []);
    return { problems, undo: () => drafts.forEach((d, i) => d.rollback(marks[i]!)) };
  }

  /**
   * Re-place the changed target files, and every target file not contributing its current
   * version that wants a claim one of them holds, held or claims (and so on: a file that
   * moves can free a claim a third one wants), against all the others, which keep their
   * claims. The full build gives the same answer: the others hold their claims uncontested,
   * so they would win them there too; and a file that wants none of these claims meets the
   * same holders as before.
   */
  private placeAffected(work: Work, changed: Set<string>, before: Map<string, FileRecord | undefined>): void {
    const { catalog, files } = work;
    const affected = new Set<string>();
    const keys: string[] = [];
    const seen = new Set<string>();
    const touch = (key: string) => {
      if (!seen.has(key)) seen.add(key), keys.push(key);
    };
    const add = (path: string, record: FileRecord | undefined) => {
      if (affected.has(path)) return;
      affected.add(path);
      const held = heldTarget(catalog, path);
      if (held) for (const key of claimKeys(catalog.settings, held)) touch(key);
      for (const key of wantedKeys(catalog, record)) touch(key);
    };
    for (const path of changed) {
      add(path, before.get(path));
      for (const key of wantedKeys(catalog, files.get(path))) touch(key);
    }
    for (let i = 0; i < keys.length; i++) for (const path of work.wants.get(keys[i]!) ?? []) add(path, files.get(path));

    const established = new Map<string, string>();
    for (const path of affected) {
      const held = heldTarget(catalog, path);
      if (!held) continue;
      for (const key of claimKeys(catalog.settings, held)) established.set(key, path);
      removeTarget(catalog, held.hostname);
    }
    // Out of the index with what each affected file wanted; back in below if it still is not placed.
    for (const path of affected) {
      const wasRecord = changed.has(path) ? before.get(path) : files.get(path);
      for (const key of wantedKeys(catalog, wasRecord)) {
        const list = work.wants.get(key)?.filter((p) => p !== path);
        if (list?.length) work.wants.set(key, list);
        else if (work.wants.has(key)) work.wants.delete(key);
      }
    }
    const found = new Map<string, Problem[]>();
    const candidates = [...affected].flatMap((path) => {
      const record = files.get(path);
      if (!record) return [];
      found.set(path, [...record.parsed.problems]);
      return [targetCandidate(catalog, path, record, (problem) => found.get(path)!.push(problem))];
    });
    const placed = placeTargets(candidates, catalog, { established: (key) => established.get(key), settings: catalog.settings });
    for (const [path, list] of placed.problems) for (const problem of list) found.get(path)!.push({ ...problem, file: path });
    for (const path of affected) {
      const record = files.get(path);
      const target = placed.accepted.get(path);
      if (target) {
        addTarget(catalog, target);
        files.set(path, withLastGood(record!, targetEntity(record!, target)));
      }
      const problems = found.get(path) ?? [];
      setProblems(work, path, problems);
      if (record && !target) work.rejected.set(path, true);
      else if (work.rejected.has(path)) work.rejected.delete(path);
      if (record && (!target || problems.length)) for (const key of wantedKeys(catalog, record)) work.wants.set(key, [...(work.wants.get(key) ?? []), path]);
    }
  }

  /** A file that depends only on groups: its first version that passes `check` goes in. */
  private settle(work: Work, path: string, record: FileRecord | undefined, check: (entity: Entity) => Problem[], accept: (entity: Entity) => unknown): void {
    const found: Problem[] = record ? [...record.parsed.problems] : [];
    let accepted: Entity | undefined;
    if (record) {
      for (const [i, entity] of versionsOf(record).entries()) {
        const problems = check(entity);
        if (!problems.length) {
          accepted = entity;
          break;
        }
        if (i === 0) found.push(...problems);
      }
    }
    if (accepted) {
      accept(accepted);
      work.files.set(path, withLastGood(record!, accepted));
    }
    setProblems(work, path, found);
    if (record && !accepted) work.rejected.set(path, true);
    else if (work.rejected.has(path)) work.rejected.delete(path);
  }

  private rebuild(updates: FileUpdate[]): Applied {
    const before = this.freeze(this.frozen.head);
    const next = rebuildWith(before, updates);
    const previousWork = this.work;
    const previousFrozen = this.frozen;
    this.frozen = next;
    this.work = undefined;
    // Problems on the touched files, and on any file this change newly breaks.
    const touched = new Set(updates.map((u) => u.path));
    const problems: Problem[] = [];
    for (const [file, list] of next.problemsByFile) {
      const was = before.problemsByFile.get(file);
      if (touched.has(file) || !was || was.length !== list.length) for (const problem of list) problems.push(problem);
    }
    return {
      problems,
      undo: () => {
        this.frozen = previousFrozen;
        this.work = previousWork;
      },
    };
  }
}

/**
 * The snapshot after `updates`, built from every file: what any change comes to, and what
 * an in-place change must equal (the property test holds them to it).
 */
export function rebuildWith(before: Snapshot, updates: FileUpdate[]): Snapshot {
  const records = new Map<string, FileRecord>(before.files);
  for (const update of updates) {
    const previous = records.get(update.path);
    if (update.oid !== null) {
      records.set(update.path, fileRecord({ oid: update.oid, parsed: update.parsed!, lastGood: previous?.lastGood, lastGoodOid: previous?.lastGoodOid, text: update.text }));
    } else if (previous && keptWhenDeleted(previous)) {
      records.set(update.path, fileRecord({ oid: null, parsed: { problems: [] }, lastGood: previous.lastGood, lastGoodOid: previous.lastGoodOid }));
    } else {
      records.delete(update.path);
    }
  }
  return Snapshot.build(records, before.head, before.catalog, before.version);
}

function setProblems(work: Work, path: string, problems: Problem[]): void {
  if (problems.length) work.problems.set(path, Object.freeze(problems));
  else if (work.problems.has(path)) work.problems.delete(path);
}

/** The target a file contributes to the catalog now, if any. */
function heldTarget(catalog: Catalog, path: string): Target | undefined {
  const hostname = path.slice(path.lastIndexOf('/') + 1, -'.yaml'.length);
  return servedPath(catalog, hostname) === path ? catalog.targets.get(hostname) : undefined;
}

/** The claims a target file's versions make (what it wants, whether it got it or not). */
function wantedKeys(catalog: Pick<Catalog, 'settings'>, record: FileRecord | undefined): string[] {
  if (!record) return [];
  const keys = new Set<string>();
  for (const entity of versionsOf(record)) if (entity.kind === 'target') for (const key of claimKeys(catalog.settings, entity.value)) keys.add(key);
  return [...keys];
}

function kindFromPath(path: string): Entity['kind'] | undefined {
  if (path.startsWith('targets/')) return 'target';
  if (path.startsWith('tokens/')) return 'token';
  if (path.startsWith('credentials/')) return 'credential';
  return undefined;
}

type Listener = (snapshot: Snapshot, previous: Snapshot) => void;

/**
 * The one owner of the live catalog. Readers take snapshot() and keep it as long as they
 * like; only the writer publishes, and only a snapshot whose commit is durable (and, with
 * a remote, pushed): nobody ever reads a write that is later undone.
 */
export class LiveCatalog {
  private current: Snapshot;
  private readonly listeners: Listener[] = [];

  constructor(initial: Snapshot) {
    this.current = initial;
  }

  snapshot(): Snapshot {
    return this.current;
  }

  /** Start the next snapshot from the current one. */
  draft(): Draft {
    return new Draft(this.current);
  }

  publish(next: Snapshot): void {
    const previous = this.current;
    if (next === previous) return;
    this.current = next;
    for (const listener of this.listeners) listener(next, previous);
  }

  /** Called with every published snapshot (the compiler, the parse cache, heartbeats). */
  subscribe(listener: Listener): void {
    this.listeners.push(listener);
  }
}
