import { packedBytes } from '../bytes.js';
import { formatAddress } from '../catalog/address.js';
import type { Catalog } from '../catalog/build.js';
import { PMap } from '../catalog/pmap.js';
import { byName, GroupLabels, sortedLabels } from '../catalog/labels.js';
import { own, type Group, type Settings, type Target } from '../schema/index.js';

/** File name of a job's file_sd output. */
export const sdFileName = (job: string) => `${job}.json`;

/**
 * 'file': one file per job (`node.json`). 'group': one file per job and primary group
 * (`node/<group>.json`, read by Prometheus through `files: [.../node/*.json]`): a change
 * rewrites one group's shard, so its cost follows the group, not the fleet.
 */
export type SdLayout = 'file' | 'group';

/** The job a file of either layout belongs to: `node.json` and `node/gpu.json` are job node's. */
export const jobOfFile = (name: string) => (name.includes('/') ? name.slice(0, name.indexOf('/')) : name.replace(/\.json$/, ''));

/** A target's entries, and what they were computed from (all immutable objects). */
interface Compiled {
  settings: Settings;
  /** The catalog's group map when this was checked: the same map means the same groups. */
  groupMap: ReadonlyMap<string, Group>;
  /** Shared by every target of the same groups. */
  groups: Group[];
  /** One entry per enabled exporter: its job (the list shared by every target with the same jobs) and its JSON. */
  jobs: readonly string[];
  json: Buffer[];
}

/**
 * Catalog → file_sd JSON text per file name: one file per job, including jobs with no
 * targets (an empty list, so Prometheus's file_sd has a file to watch). The same catalog
 * always gives the same bytes: targets by host name, labels by name.
 *
 * Parsed entities are immutable and keep their identity while their file is unchanged, so
 * a target's entries are reused until the target, one of its groups or aami.yaml changes:
 * one edited file at 10k targets re-renders one target, not ten thousand.
 */
export class Compiler {
  private readonly memo = new WeakMap<Target, Compiled>();
  /** Per primary group, the shards last made and what they were made from. */
  private readonly shards = new Map<string, { targets: ReadonlyMap<string, Target>; settings: Settings; groupMap: ReadonlyMap<string, Group>; files: Array<[string, Buffer[]]> }>();

  /** The last compile of shards: what it was made from, and its files. */
  private sharded: { settings: Settings; groupMap: ReadonlyMap<string, Group>; groupTargets: Catalog['groupTargets']; files: PMap<string, Buffer[]> } | undefined;

  /** The last compile of one file per job: what it was made from, and each job's entries. */
  private whole: { settings: Settings; groupMap: ReadonlyMap<string, Group>; groupTargets: Catalog['groupTargets']; columns: Map<string, Column> } | undefined;

  constructor(private readonly layout: SdLayout = 'file') {}

  /**
   * Each file as the list of buffers that make it up. A target's buffers are cached, so two
   * compiles of an unchanged job give the same buffers, comparable without reading them; and
   * a ~5 MB job file is written with writev instead of being copied into one buffer first.
   */
  compile(catalog: Catalog): ReadonlyMap<string, Buffer[]> {
    return this.layout === 'group' ? this.compileShards(catalog) : this.compileFiles(catalog);
  }

  /**
   * Renders, a slice of targets at a time, what the next compile would render for the whole
   * fleet (it then finds every target in the memo); the caller lets other work run between
   * slices. Only before a compile that takes every target again (the first, or one after
   * aami.yaml or a group changed): at 100k targets that is ~3 s of rendering, which in one
   * piece would hold every request (health included) for as long. Otherwise yields nothing.
   */
  *prepare(catalog: Catalog, slice = 2000): Generator<void> {
    const last = this.layout === 'group' ? this.shards.values().next().value : this.whole;
    if (last && last.settings === catalog.settings && last.groupMap === catalog.groups) return;
    const shared = new GroupLabels(catalog);
    let rendered = 0;
    for (const target of catalog.targets.values()) {
      this.compiled(catalog, target, shared);
      if (++rendered % slice === 0) yield;
    }
  }

  /**
   * One shard per job and primary group. While aami.yaml and the groups stay the same
   * objects, only the groups whose map of targets changed are looked at (the catalog's
   * persistent map of groups names them): the work of a registration at 100k targets is
   * one group's, not a walk of a thousand. A group whose targets, groups and aami.yaml are
   * the objects of the last compile gives its last shards back as they were.
   */
  private compileShards(catalog: Catalog): PMap<string, Buffer[]> {
    const last = this.sharded;
    this.sharded = undefined; // a compile that throws part way leaves the next one to take every group
    const shared = new GroupLabels(catalog);
    const incremental = last && last.settings === catalog.settings && last.groupMap === catalog.groups;
    // The next version of the last compile's persistent map: the SD output writes only the files it names as changed.
    const files = incremental ? last.files.edit() : new Map<string, Buffer[]>();
    const groups = incremental ? changedGroups(last.groupTargets, catalog.groupTargets) : new Set([...this.shards.keys(), ...catalog.groupTargets.keys()]);
    for (const group of groups) {
      for (const [name] of this.shards.get(group)?.files ?? []) files.delete(name);
      const targets = catalog.groupTargets.get(group);
      if (!targets) {
        this.shards.delete(group);
        continue;
      }
      let shard = this.shards.get(group);
      if (!shard || shard.targets !== targets || shard.settings !== catalog.settings || shard.groupMap !== catalog.groups) {
        const parts = new Map<string, Buffer[]>();
        for (const hostname of [...targets.keys()].sort()) {
          const { jobs, json } = this.compiled(catalog, targets.get(hostname)!, shared);
          jobs.forEach((job, i) => {
            const list = parts.get(job) ?? parts.set(job, [OPEN]).get(job)!;
            if (list.length > 1) list.push(COMMA);
            list.push(json[i]!);
          });
        }
        shard = { targets, settings: catalog.settings, groupMap: catalog.groups, files: [...parts].map(([job, list]) => [`${job}/${group}.json`, [...list, CLOSE]]) };
        this.shards.set(group, shard);
      }
      for (const [name, parts] of shard.files) files.set(name, parts);
    }
    const frozen = files instanceof Map ? PMap.from(files) : files.freeze();
    this.sharded = { settings: catalog.settings, groupMap: catalog.groups, groupTargets: catalog.groupTargets, files: frozen };
    return frozen;
  }

  /**
   * One file per job, targets by host name. While aami.yaml and the groups stay the same
   * objects, only the targets of the groups whose map changed are looked at again, and their
   * entries are moved in or out of each job's sorted column: a registration at 100k targets
   * renders one target and sorts nothing. Any other change takes the whole fleet again
   * (through the memo, so only the targets it touched are rendered).
   */
  private compileFiles(catalog: Catalog): Map<string, Buffer[]> {
    const last = this.whole;
    const shared = new GroupLabels(catalog);
    let columns: Map<string, Column>;
    if (last && last.settings === catalog.settings && last.groupMap === catalog.groups) {
      columns = last.columns;
      const changes = [...changedHosts(last.groupTargets, catalog.groupTargets)].sort().map((hostname) => {
        const target = catalog.targets.get(hostname);
        return [hostname, target && this.compiled(catalog, target, shared)] as const;
      });
      if (changes.length) {
        for (const [job, column] of columns) column.replace(changes.map(([hostname, compiled]) => [hostname, compiled ? compiled.json.filter((_, i) => compiled.jobs[i] === job) : []]));
      }
    } else {
      columns = new Map(Object.values(catalog.settings.exporters).map((type) => [type.job, new Column()]));
      for (const hostname of [...catalog.targets.keys()].sort()) {
        const { jobs, json } = this.compiled(catalog, catalog.targets.get(hostname)!, shared);
        jobs.forEach((job, i) => columns.get(job)!.append(hostname, json[i]!));
      }
    }
    this.whole = { settings: catalog.settings, groupMap: catalog.groups, groupTargets: catalog.groupTargets, columns };
    return new Map([...columns].map(([job, column]) => [sdFileName(job), column.parts()]));
  }

  /** A target's entries: from the memo while the target, its groups and aami.yaml are unchanged. */
  private compiled(catalog: Catalog, target: Target, shared: GroupLabels): Compiled {
    let compiled = this.memo.get(target);
    if (compiled?.settings === catalog.settings && compiled.groupMap === catalog.groups) return compiled;
    const groups = shared.chain(target);
    if (!compiled || compiled.settings !== catalog.settings || !sameItems(compiled.groups, groups)) {
      const { jobs, json } = renderTarget(catalog, target, shared);
      compiled = { settings: catalog.settings, groupMap: catalog.groups, groups, jobs, json }; // a literal: a spread put two of its fields out of the object
      this.memo.set(target, compiled);
    }
    compiled.groupMap = catalog.groups;
    compiled.groups = groups; // the same groups: hold the shared array, not one of an earlier compile
    return compiled;
  }
}

/** The host names whose target may differ between two catalogs: those of every group whose map is not the same object. */
function changedHosts(before: Catalog['groupTargets'], after: Catalog['groupTargets']): Set<string> {
  const changed = new Set<string>();
  const compare = (a: ReadonlyMap<string, Target> | undefined, b: ReadonlyMap<string, Target> | undefined) => {
    if (a === b) return;
    // Two versions of one persistent map name the keys either changed: a group of 100k hosts is not walked.
    const keys = a instanceof PMap && b instanceof PMap ? b.changedSince(a) : undefined;
    if (keys) {
      for (const hostname of keys) if (a!.get(hostname) !== b!.get(hostname)) changed.add(hostname);
      return;
    }
    for (const [hostname, target] of a ?? []) if (b?.get(hostname) !== target) changed.add(hostname);
    for (const [hostname, target] of b ?? []) if (a?.get(hostname) !== target) changed.add(hostname);
  };
  for (const group of changedGroups(before, after)) compare(before.get(group), after.get(group));
  return changed;
}

/** The groups whose map of targets is not the same object in two catalogs. */
function changedGroups(before: Catalog['groupTargets'], after: Catalog['groupTargets']): Set<string> {
  // Two versions of one persistent map name the keys either changed: a thousand groups are not walked.
  const keys = before instanceof PMap && after instanceof PMap ? after.changedSince(before) : undefined;
  const changed = new Set<string>();
  for (const group of keys ?? new Set([...before.keys(), ...after.keys()])) if (before.get(group) !== after.get(group)) changed.add(group);
  return changed;
}

/** One job's entries in host name order (a host may have several), kept sorted as hosts come and go. */
class Column {
  private hosts: string[] = [];
  private entries: Buffer[] = [];
  /** The last parts() while nothing changed: an unchanged job's file is the same array, compared by identity. */
  private file: Buffer[] | undefined;

  /** Adds entries after all others (a build in host name order). */
  append(hostname: string, json: Buffer): void {
    this.file = undefined;
    this.hosts.push(hostname);
    this.entries.push(json);
  }

  /**
   * Replaces the entries of some hosts (none: the host leaves), hosts in sorted order. One
   * merge pass over the column, whatever the number of hosts: splicing each host in moved
   * the whole column once a host (a storm's commit at 100k targets: 30 hosts × 100k).
   */
  replace(changes: Array<[hostname: string, entries: Buffer[]]>): void {
    const hosts: string[] = [];
    const entries: Buffer[] = [];
    let same = true;
    let at = 0;
    for (const [hostname, fresh] of changes) {
      while (at < this.hosts.length && this.hosts[at]! < hostname) hosts.push(this.hosts[at]!), entries.push(this.entries[at++]!);
      const from = at;
      while (at < this.hosts.length && this.hosts[at] === hostname) at++;
      same &&= at - from === fresh.length && fresh.every((entry, i) => entry === this.entries[from + i]);
      for (const entry of fresh) hosts.push(hostname), entries.push(entry);
    }
    if (same) return;
    for (; at < this.hosts.length; at++) hosts.push(this.hosts[at]!), entries.push(this.entries[at]!);
    this.hosts = hosts;
    this.entries = entries;
    this.file = undefined;
  }

  /** The file: [OPEN, entry, COMMA, entry, ..., CLOSE], or [EMPTY]. */
  parts(): Buffer[] {
    if (this.file) return this.file;
    const count = this.entries.length;
    if (!count) return (this.file = [EMPTY]);
    const parts: Buffer[] = (this.file = new Array<Buffer>(count * 2 + 1));
    parts[0] = OPEN;
    for (let i = 0; i < count; i++) {
      parts[2 * i + 1] = this.entries[i]!;
      parts[2 * i + 2] = i + 1 < count ? COMMA : CLOSE;
    }
    return parts;
  }
}

/** The bytes around and between a job file's entries: a file is [OPEN, entry, COMMA, entry, ..., CLOSE] or [EMPTY]. */
export const OPEN = Buffer.from('[\n');
export const COMMA = Buffer.from(',\n');
export const CLOSE = Buffer.from('\n]\n');
export const EMPTY = Buffer.from('[]\n');

/** One-shot compile to whole files (tests); the server keeps a Compiler to reuse its memo. */
export function compile(catalog: Catalog): Map<string, Buffer> {
  return new Map([...new Compiler().compile(catalog)].map(([name, parts]) => [name, Buffer.concat(parts)]));
}

/**
 * Whether two lists of buffers hold the same bytes. Cached parts make this mostly an identity
 * check, and lists of one length are compared part by part (a changed entry shows at once).
 * Lists cut differently (a file read back or adopted from disk, against a compile's parts)
 * are compared across the cuts, without copying either: a concatenation for the comparison
 * cost a restart at 100k targets 86 MB of garbage.
 */
export function sameParts(a: Buffer[] | undefined, b: Buffer[]): boolean {
  if (a === b) return true; // a shard the compiler gave back as it was
  if (a === undefined) return false;
  if (a.length === b.length) {
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i] && !a[i]!.equals(b[i]!)) return false;
    return true;
  }
  const size = (list: Buffer[]) => list.reduce((sum, part) => sum + part.length, 0);
  if (size(a) !== size(b)) return false;
  // Part i of a from offset at, part j of b from offset bt: compare the run both still have.
  for (let i = 0, j = 0, at = 0, bt = 0; i < a.length && j < b.length; ) {
    const run = Math.min(a[i]!.length - at, b[j]!.length - bt);
    if (run > 0 && a[i]!.compare(b[j]!, bt, bt + run, at, at + run) !== 0) return false;
    at += run;
    bt += run;
    if (at === a[i]!.length) {
      i++;
      at = 0;
    }
    if (bt === b[j]!.length) {
      j++;
      bt = 0;
    }
  }
  return true;
}

/** Lists of jobs, one of each: a target's entries name theirs by one of these. */
const jobLists = new Map<string, readonly string[]>();

/** A target's entries, one per enabled exporter; labels are sorted and written once for all exporters that add none of their own. */
function renderTarget(catalog: Catalog, target: Target, shared: GroupLabels): Pick<Compiled, 'jobs' | 'json'> {
  const base = sortedLabels(target, shared);
  let baseText: string | undefined;
  const jobs: string[] = [];
  const json: Buffer[] = [];
  for (const exporter of target.exporters) {
    const type = own(catalog.settings.exporters, exporter.type);
    if (!exporter.enabled || !type) continue;
    const extra: Array<[string, string]> = [];
    const metricsPath = exporter.metrics_path ?? type.metrics_path;
    const scheme = exporter.scheme ?? type.scheme;
    const interval = exporter.interval ?? type.interval;
    if (metricsPath) extra.push(['__metrics_path__', metricsPath]);
    if (scheme) extra.push(['__scheme__', scheme]);
    if (interval) extra.push(['__scrape_interval__', interval]);
    const labels = extra.length ? renderLabels([...base, ...extra].sort(byName)) : (baseText ??= renderLabels(base));
    jobs.push(type.job);
    json.push(packedBytes(renderEntry(formatAddress(target.ip_address, exporter.port ?? type.port), labels)));
  }
  const key = JSON.stringify(jobs);
  let list = jobLists.get(key);
  if (!list) {
    if (jobLists.size >= 1000) jobLists.clear();
    jobLists.set(key, (list = Object.freeze(jobs)));
  }
  // A copy of its exact size: the list pushed to holds room for 17 (~150 bytes a target, kept in the memo).
  return { jobs: list, json: json.slice() };
}

/**
 * One element of a job file: the same bytes JSON.stringify(list, null, 2) gives for it
 * (tests hold the two equal), written out directly: ~5x cheaper than stringify with an
 * indent and re-indenting the result.
 */
function renderEntry(address: string, labels: string): string {
  return `  {\n    "targets": [\n      ${JSON.stringify(address)}\n    ],\n    "labels": ${labels}\n  }`;
}

/** An entry's label object, sorted labels in, as renderEntry places it. */
function renderLabels(labels: Array<[string, string]>): string {
  if (!labels.length) return '{}';
  let text = '{';
  labels.forEach(([name, value], i) => {
    text += `${i ? ',' : ''}\n      ${JSON.stringify(name)}: ${JSON.stringify(value)}`;
  });
  return `${text}\n    }`;
}

function sameItems<T>(a: T[], b: T[]): boolean {
  return a.length === b.length && a.every((item, i) => item === b[i]);
}
