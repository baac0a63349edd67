import { formatAddress } from '../catalog/address.js';
import type { Catalog } from '../catalog/build.js';
import { GroupLabels, groupChain, targetLabels } from '../catalog/labels.js';
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
  groups: Group[];
  entries: Array<[job: string, json: Buffer]>;
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

  constructor(private readonly layout: SdLayout = 'file') {}

  /**
   * Each file as the list of buffers that make it up. A target's buffers are cached, so two
   * compiles of an unchanged job give the same buffers, comparable without reading them; and
   * a ~5 MB job file is written with writev instead of being copied into one buffer first.
   */
  compile(catalog: Catalog): Map<string, Buffer[]> {
    return this.layout === 'group' ? this.compileShards(catalog) : this.compileFiles(catalog);
  }

  /**
   * One shard per job and primary group. A group whose map of targets, whose groups and
   * whose aami.yaml are the objects of the last compile gives its last shards back as they
   * were: the work of a change is one group's.
   */
  private compileShards(catalog: Catalog): Map<string, Buffer[]> {
    const files = new Map<string, Buffer[]>();
    const shared = new GroupLabels(catalog);
    for (const [group, targets] of catalog.groupTargets) {
      let shard = this.shards.get(group);
      if (!shard || shard.targets !== targets || shard.settings !== catalog.settings || shard.groupMap !== catalog.groups) {
        const parts = new Map<string, Buffer[]>();
        for (const hostname of [...targets.keys()].sort()) {
          for (const [job, json] of this.compiled(catalog, targets.get(hostname)!, shared).entries) {
            const list = parts.get(job) ?? parts.set(job, [OPEN]).get(job)!;
            if (list.length > 1) list.push(COMMA);
            list.push(json);
          }
        }
        shard = { targets, settings: catalog.settings, groupMap: catalog.groups, files: [...parts].map(([job, list]) => [`${job}/${group}.json`, [...list, CLOSE]]) };
        this.shards.set(group, shard);
      }
      for (const [name, parts] of shard.files) files.set(name, parts);
    }
    for (const group of this.shards.keys()) if (!catalog.groupTargets.has(group)) this.shards.delete(group);
    return files;
  }

  private compileFiles(catalog: Catalog): Map<string, Buffer[]> {
    const parts = new Map<string, Buffer[]>();
    for (const type of Object.values(catalog.settings.exporters)) parts.set(type.job, [OPEN]);
    for (const { entries } of this.targets(catalog)) {
      for (const [job, json] of entries) {
        const list = parts.get(job)!;
        if (list.length > 1) list.push(COMMA);
        list.push(json);
      }
    }
    return new Map([...parts].map(([job, list]) => [sdFileName(job), list.length > 1 ? [...list, CLOSE] : [EMPTY]]));
  }

  /** Targets by host name. */
  private *targets(catalog: Catalog): Generator<Compiled> {
    const shared = new GroupLabels(catalog);
    for (const hostname of [...catalog.targets.keys()].sort()) yield this.compiled(catalog, catalog.targets.get(hostname)!, shared);
  }

  /** A target's entries: from the memo while the target, its groups and aami.yaml are unchanged. */
  private compiled(catalog: Catalog, target: Target, shared: GroupLabels): Compiled {
    let compiled = this.memo.get(target);
    if (compiled?.settings === catalog.settings && compiled.groupMap === catalog.groups) return compiled;
    const groups = [target.primary_group, ...target.groups].flatMap((id) => groupChain(catalog.groups, id));
    if (!compiled || compiled.settings !== catalog.settings || !sameItems(compiled.groups, groups)) {
      compiled = { settings: catalog.settings, groupMap: catalog.groups, groups, entries: renderTarget(catalog, target, shared) };
      this.memo.set(target, compiled);
    }
    compiled.groupMap = catalog.groups;
    return compiled;
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
 * Whether two lists of buffers hold the same bytes, part by part; cached parts make this
 * mostly an identity check. Lists cut differently count as different: a needless rewrite
 * is harmless, copying 5 MB to compare is not.
 */
export function sameParts(a: Buffer[] | undefined, b: Buffer[]): boolean {
  return a !== undefined && a.length === b.length && a.every((part, i) => part === b[i] || part.equals(b[i]!));
}

function renderTarget(catalog: Catalog, target: Target, shared: GroupLabels): Compiled['entries'] {
  const base = Object.entries(targetLabels(catalog, target, shared));
  const entries: Compiled['entries'] = [];
  for (const exporter of target.exporters) {
    const type = own(catalog.settings.exporters, exporter.type);
    if (!exporter.enabled || !type) continue;
    const labels = [...base];
    const metricsPath = exporter.metrics_path ?? type.metrics_path;
    const scheme = exporter.scheme ?? type.scheme;
    const interval = exporter.interval ?? type.interval;
    if (metricsPath) labels.push(['__metrics_path__', metricsPath]);
    if (scheme) labels.push(['__scheme__', scheme]);
    if (interval) labels.push(['__scrape_interval__', interval]);
    labels.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    entries.push([type.job, Buffer.from(renderEntry(formatAddress(target.ip_address, exporter.port ?? type.port), labels))]);
  }
  return entries;
}

/**
 * One element of a job file: the same bytes JSON.stringify(list, null, 2) gives for it
 * (tests hold the two equal), written out directly: ~5x cheaper than stringify with an
 * indent and re-indenting the result.
 */
function renderEntry(address: string, labels: Array<[string, string]>): string {
  let text = `  {\n    "targets": [\n      ${JSON.stringify(address)}\n    ],\n    "labels": {`;
  labels.forEach(([name, value], i) => {
    text += `${i ? ',' : ''}\n      ${JSON.stringify(name)}: ${JSON.stringify(value)}`;
  });
  return `${text}${labels.length ? '\n    }' : '}'}\n  }`;
}

function sameItems<T>(a: T[], b: T[]): boolean {
  return a.length === b.length && a.every((item, i) => item === b[i]);
}
