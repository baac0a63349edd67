import { formatAddress } from '../catalog/address.js';
import type { Catalog } from '../catalog/build.js';
import { changedKeys, PMap } from '../catalog/pmap.js';
import { byName, GroupLabels, sortedLabels } from '../catalog/labels.js';
import { own, type Exporter, type ExporterSettings, type Group, type Settings, type Target } from '../schema/index.js';

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

/** A target's groups with their parents: with the target itself and aami.yaml, what its entries are made from. */
type Chain = readonly Group[];

/**
 * Hosts of one SD file in host name order, and their entries as bytes. A host's entries in
 * the file (one: aami.yaml's checks give a job one exporter type, and a target a type once)
 * are a run of `runs` that ends in ",\n": host k's is runs[offsets[k], offsets[k + 1]). With each host, what its run
 * was rendered from: a later build copies the runs of hosts whose target, groups and
 * aami.yaml are the same objects, a stretch of them at a time, and renders only the others.
 */
interface Chunk {
  hosts: readonly Target[];
  chains: readonly Chain[];
  runs: Buffer;
  offsets: Uint32Array;
}

/**
 * Most hosts a chunk holds (~90 KB of entries). A change copies the chunks it touches and
 * shares the others with the last version of the file: one buffer for a whole file of 10k
 * targets (3.6 MB) made every registration allocate and copy it. Kept this way an entry
 * costs its bytes (~360) and ~20 bytes of arrays; a buffer for each entry, kept in a memo by
 * target, cost ~1 KB a target with two jobs (~100 MB at 100k targets, the largest thing the
 * server held), this ~780 bytes.
 */
const CHUNK = 256;

/** One SD file: its chunks in host name order, and the buffers the output writes. */
interface SdFile {
  chunks: readonly Chunk[];
  /** [OPEN, each chunk's runs (the last one's without its ",\n"), CLOSE], or [EMPTY]. */
  parts: Buffer[];
}

/** Files by job (a group's shards, or one file per job), and what they were built from. */
interface Build {
  settings: Settings;
  groupMap: ReadonlyMap<string, Group>;
  files: ReadonlyMap<string, SdFile>;
}

/** Hosts walked by a build, to hand the event loop back every `slice` of them. */
interface Walk {
  walked: number;
  slice: number;
}

/**
 * Catalog → file_sd JSON text per file name: one file per job, including jobs with no
 * targets (an empty list, so Prometheus's file_sd has a file to watch). The same catalog
 * always gives the same bytes: targets by host name, labels by name.
 *
 * Parsed entities are immutable and keep their identity while their file is unchanged, so
 * a target's entries are copied from the last build until the target, one of its groups
 * or aami.yaml changes: one edited file at 10k targets re-renders one target, not ten
 * thousand.
 */
export class Compiler {
  /** Per primary group, its shards as last built, and the group's map of targets they were built from. */
  private readonly shards = new Map<string, Build & { targets: ReadonlyMap<string, Target> }>();

  /** The last compile of shards: what it was made from, and its files. */
  private sharded: { settings: Settings; groupMap: ReadonlyMap<string, Group>; groupTargets: Catalog['groupTargets']; files: PMap<string, Buffer[]> } | undefined;

  /** The last build of one file per job, and the catalog's groups of targets it was made from. */
  private whole: (Build & { groupTargets: Catalog['groupTargets'] }) | undefined;

  /** Targets rendered since this compiler was made; every other one was copied (what a change costs, for tests). */
  rendered = 0;

  /** Hosts its compiles walked through in building files again since it was made; a change put in by a patch walks none (for tests). */
  walked = 0;

  /** `chunk`: most hosts a chunk of a file holds (tests cut small ones). */
  constructor(
    private readonly layout: SdLayout = 'file',
    private readonly chunk = CHUNK,
  ) {}

  /**
   * Each file as the list of buffers that make it up: [OPEN, each chunk's entries, CLOSE] or
   * [EMPTY]. An unchanged file is the same list in two compiles, comparable without reading it.
   */
  compile(catalog: Catalog): ReadonlyMap<string, Buffer[]> {
    return this.layout === 'group' ? this.compileShards(catalog) : this.compileFiles(catalog);
  }

  /**
   * Builds, a slice of hosts at a time, what the next compile would build for the whole
   * fleet (it then finds the build done); the caller lets other work run between slices.
   * Only before a compile that takes every target again (the first, or one after aami.yaml
   * or a group changed): at 100k targets that is seconds of rendering, which in one piece
   * would hold every request (health included) for as long. Otherwise yields nothing.
   */
  *prepare(catalog: Catalog, slice = 2000): Generator<void> {
    const last = this.layout === 'group' ? this.shards.values().next().value : this.whole;
    if (last && last.settings === catalog.settings && last.groupMap === catalog.groups) return;
    const shared = new GroupLabels(catalog);
    const walk = { walked: 0, slice };
    if (this.layout === 'file') return yield* this.buildWhole(catalog, shared, walk);
    for (const [group, targets] of catalog.groupTargets) yield* this.shard(catalog, shared, group, targets, walk);
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
    const groups = incremental ? changedKeys(last.groupTargets, catalog.groupTargets) : new Set([...this.shards.keys(), ...catalog.groupTargets.keys()]);
    const walk = { walked: 0, slice: Infinity };
    for (const group of groups) {
      // Every job's shard name, not only those of this.shards (a prepare() of another catalog may have built the group since).
      for (const { job } of Object.values(catalog.settings.exporters)) files.delete(shardName(job, group));
      const targets = catalog.groupTargets.get(group);
      if (!targets) {
        this.shards.delete(group);
        continue;
      }
      for (const [job, file] of finish(this.shard(catalog, shared, group, targets, walk)).files) files.set(shardName(job, group), file.parts);
    }
    this.walked += walk.walked;
    const frozen = files instanceof Map ? PMap.from(files) : files.freeze();
    this.sharded = { settings: catalog.settings, groupMap: catalog.groups, groupTargets: catalog.groupTargets, files: frozen };
    return frozen;
  }

  /**
   * A group's shards: the last ones while its targets, the groups and aami.yaml are the same
   * objects; the last ones with the hosts that changed put in or taken out while only its
   * targets changed (a registration into a group of 10k hosts renders one and sorts none,
   * as the file layout's; its two maps are walked whole only when they share no base, after
   * a flatten); else built again from them. A patch runs in one piece, not in prepare()'s
   * slices: it is the size of the change.
   */
  private *shard(catalog: Catalog, shared: GroupLabels, group: string, targets: ReadonlyMap<string, Target>, walk: Walk): Generator<void, Build> {
    const last = this.shards.get(group);
    const same = last && last.settings === catalog.settings && last.groupMap === catalog.groups;
    if (same && last.targets === targets) return last;
    let files: Map<string, SdFile>;
    if (same) {
      const changes = [...changedKeys(last.targets, targets)].sort().map((hostname) => [hostname, targets.get(hostname)] as const);
      // Every job, a file with no hosts where the group had none of its entries: a change may bring the first.
      const all = new Map(Object.values(catalog.settings.exporters).map(({ job }) => [job, last.files.get(job) ?? fileOf([])]));
      files = new Map([...update(this.render(catalog, shared), all, changes)].filter(([, file]) => file.chunks.length > 0));
    } else files = yield* build(this.render(catalog, shared), [...targets.keys()].sort(), targets, last, walk);
    const shard = { targets, settings: catalog.settings, groupMap: catalog.groups, files };
    this.shards.set(group, shard);
    return shard;
  }

  /**
   * One file per job, targets by host name. While aami.yaml and the groups stay the same
   * objects, only the targets of the groups whose map changed are looked at again, and
   * their runs are put in or taken out of each job's file: a registration at 100k targets
   * renders one target and sorts nothing. Any other change takes the whole fleet again
   * (copying the runs of the targets it did not touch).
   */
  private compileFiles(catalog: Catalog): Map<string, Buffer[]> {
    const last = this.whole;
    const shared = new GroupLabels(catalog);
    if (!last || last.settings !== catalog.settings || last.groupMap !== catalog.groups) {
      const walk = { walked: 0, slice: Infinity };
      finish(this.buildWhole(catalog, shared, walk));
      this.walked += walk.walked;
    } else if (last.groupTargets !== catalog.groupTargets) {
      const changes = [...changedHosts(last.groupTargets, catalog.groupTargets)].sort().map((hostname) => [hostname, catalog.targets.get(hostname)] as const);
      this.whole = { ...last, groupTargets: catalog.groupTargets, files: update(this.render(catalog, shared), last.files, changes) };
    }
    return new Map([...this.whole!.files].map(([job, file]) => [sdFileName(job), file.parts]));
  }

  /** Every job's file, built again from every target (those of the last build copied while their inputs are the same objects). */
  private *buildWhole(catalog: Catalog, shared: GroupLabels, walk: Walk): Generator<void> {
    const last = this.whole;
    this.whole = undefined;
    const built = yield* build(this.render(catalog, shared), [...catalog.targets.keys()].sort(), catalog.targets, last, walk);
    // Every job has a file, an empty list when no target has its exporter.
    const files = new Map(Object.values(catalog.settings.exporters).map(({ job }) => [job, built.get(job) ?? fileOf([])]));
    this.whole = { settings: catalog.settings, groupMap: catalog.groups, groupTargets: catalog.groupTargets, files };
  }

  /** What a build renders a target with: its runs by job, and its chain. */
  private render(catalog: Catalog, shared: GroupLabels): Render {
    return {
      catalog,
      chunk: this.chunk,
      chain: (target) => shared.chain(target),
      runs: (target) => {
        this.rendered++;
        return renderRuns(catalog, target, shared);
      },
    };
  }
}

/** A build's catalog, and how it renders one of its targets. */
interface Render {
  catalog: Catalog;
  /** Most hosts a chunk holds. */
  chunk: number;
  chain(target: Target): Chain;
  runs(target: Target): Map<string, string>;
}

const shardName = (job: string, group: string) => `${job}/${group}.json`;

/** Runs a build through without handing the event loop back: its value. */
function finish<T>(work: Generator<void, T>): T {
  for (;;) {
    const step = work.next();
    if (step.done) return step.value;
  }
}

/**
 * The files of `hostnames` (sorted: a group's, or the fleet's), one per job with entries.
 * The runs of every host whose target and groups are the objects `last` (an earlier build)
 * rendered them from, under the same aami.yaml, are copied, and only the others rendered. Yields every `walk.slice` hosts.
 */
function* build(render: Render, hostnames: readonly string[], targets: ReadonlyMap<string, Target>, last: Build | undefined, walk: Walk): Generator<void, Map<string, SdFile>> {
  const { catalog } = render;
  const builders = new Map<string, FileBuilder>();
  const builder = (job: string) => builders.get(job) ?? builders.set(job, new FileBuilder(render.chunk)).get(job)!;
  const cursors = new Map<string, Cursor>();
  if (last?.settings === catalog.settings) for (const [job, file] of last.files) cursors.set(job, new Cursor(file, () => builder(job)));
  const sameGroups = last?.groupMap === catalog.groups;
  const found: boolean[] = [];
  for (const hostname of hostnames) {
    const target = targets.get(hostname)!;
    // Copied only when every file the target has entries in holds a run rendered from it and its groups, and no other
    // file does: a file keeps a run whose bytes a change left as they were with the target it was rendered from (update).
    let chain: Chain | undefined;
    let count = 0;
    let same = true;
    let i = 0;
    for (const cursor of cursors.values()) {
      const held = cursor.seek(hostname);
      if ((found[i++] = held !== undefined)) {
        count++;
        same &&= held === target && (sameGroups || sameItems(cursor.chain(), (chain ??= render.chain(target))));
      }
    }
    same &&= count > 0 && count === jobsOf(catalog.settings, target).length;
    i = 0;
    for (const cursor of cursors.values()) if (found[i++]) (same ? cursor.keep() : cursor.pass());
    if (!same) {
      chain ??= render.chain(target);
      for (const [job, run] of render.runs(target)) {
        cursors.get(job)?.flush(); // what comes before this host first
        builder(job).add(target, chain, run);
      }
    }
    if (++walk.walked % walk.slice === 0) yield;
  }
  for (const cursor of cursors.values()) cursor.flush();
  return new Map([...builders].map(([job, b]) => [job, fileOf(b.chunks())]));
}

/** A walk through an earlier file in host name order, gathering the stretch of hosts a build copies from it. */
class Cursor {
  private chunk = 0;
  private at = 0;
  private from = 0;
  private to = 0;

  constructor(
    private readonly file: SdFile,
    private readonly into: () => FileBuilder,
  ) {}

  /** Goes past the hosts before `hostname`: the file's target of that name, if it has one. */
  seek(hostname: string): Target | undefined {
    for (;;) {
      const chunk = this.file.chunks[this.chunk];
      if (!chunk) return undefined;
      if (this.at === chunk.hosts.length) {
        this.flush(); // a stretch is copied from one chunk
        this.chunk++;
        this.at = 0;
        continue;
      }
      const host = chunk.hosts[this.at]!;
      if (host.hostname >= hostname) return host.hostname === hostname ? host : undefined;
      this.at++;
    }
  }

  /** The groups the run of the host found was rendered from. */
  chain(): Chain {
    return this.file.chunks[this.chunk]!.chains[this.at]!;
  }

  /** The host found is copied: next to the stretch, the stretch grows; else the stretch is copied and a new one starts. */
  keep(): void {
    if (this.to !== this.at || this.from === this.to) {
      this.flush();
      this.from = this.at;
    }
    this.to = ++this.at;
  }

  /** The host found is not copied (rendered again). */
  pass(): void {
    this.at++;
  }

  /** Copies the stretch gathered so far. */
  flush(): void {
    if (this.from < this.to) this.into().copy(this.file.chunks[this.chunk]!, this.from, this.to);
    this.from = this.to = 0;
  }
}

/** A file of these chunks. */
function fileOf(chunks: readonly Chunk[]): SdFile {
  const parts = chunks.length ? [OPEN, ...chunks.map((chunk) => chunk.runs), CLOSE] : [EMPTY];
  const last = chunks.at(-1)?.runs;
  if (last) parts[chunks.length] = last.subarray(0, last.length - COMMA.length);
  return { chunks, parts };
}

/**
 * Each job's file with the hosts of `changes` (sorted; a target, or none when the host
 * left) put in or taken out. Only the chunks they fall in are made again, and a chunk left
 * small takes in its neighbour; a file whose bytes the changes leave as they were keeps its
 * parts (the output skips it by identity).
 */
function update(render: Render, files: ReadonlyMap<string, SdFile>, changes: ReadonlyArray<readonly [string, Target | undefined]>): Map<string, SdFile> {
  const fresh: Fresh[] = changes.map(([hostname, target]) => ({ hostname, target, chain: target && render.chain(target), runs: target && render.runs(target) }));
  const result = new Map<string, SdFile>();
  for (const [job, file] of files) {
    let chunks: Chunk[] = [];
    const made = new Set<Chunk>();
    let bytes = false;
    let records = false;
    let i = 0;
    const all = file.chunks.length ? file.chunks : [NO_HOSTS];
    all.forEach((chunk, c) => {
      // The changes before the next chunk's first host fall in this one (those before the first chunk's, in it).
      const next = all[c + 1]?.hosts[0]!.hostname;
      let j = i;
      while (j < fresh.length && (next === undefined || fresh[j]!.hostname < next)) j++;
      const patched = j > i ? patch(chunk, fresh.slice(i, j), job, render.chunk) : undefined;
      i = j;
      if (!patched) {
        if (chunk.hosts.length) chunks.push(chunk);
        return;
      }
      if (patched.bytes) bytes = true;
      else records = true;
      for (const piece of patched.chunks) made.add(piece);
      chunks.push(...patched.chunks);
    });
    if (bytes) chunks = mergeSmall(chunks, made, render.chunk);
    // The same bytes with newer records (a target re-enrolled: its entries did not change): the same parts.
    result.set(job, bytes ? fileOf(chunks) : records ? { ...file, chunks } : file);
  }
  return result;
}

/**
 * Chunks a change made that hold fewer than a quarter of a chunk's hosts joined with a
 * neighbour, while the two fit in one: removals would otherwise leave a file of many tiny
 * chunks (each costs its own buffer and arrays).
 */
function mergeSmall(chunks: readonly Chunk[], made: Set<Chunk>, size: number): Chunk[] {
  const merged: Chunk[] = [];
  for (const chunk of chunks) {
    const last = merged.at(-1);
    const small = (c: Chunk) => c.hosts.length < size / 4;
    if (last && (made.has(last) || made.has(chunk)) && (small(last) || small(chunk)) && last.hosts.length + chunk.hosts.length <= size) {
      const builder = new FileBuilder(size);
      builder.copy(last, 0, last.hosts.length, false);
      builder.copy(chunk, 0, chunk.hosts.length, false);
      const [joined] = builder.chunks();
      merged[merged.length - 1] = joined!;
      made.add(joined!);
    } else merged.push(chunk);
  }
  return merged;
}

/** A changed host: its target and what it renders to, or none when it left. */
interface Fresh {
  hostname: string;
  target: Target | undefined;
  chain: Chain | undefined;
  runs: Map<string, string> | undefined;
}

const NO_HOSTS: Chunk = { hosts: [], chains: [], runs: Buffer.alloc(0), offsets: Uint32Array.of(0) };

/**
 * The chunk with `changes` (sorted) put in or taken out of it, cut in even parts if it grew
 * past a chunk (cut at a chunk's size, hosts registered in random order left a chunk of one
 * host beside a full one at every insert); undefined when neither its bytes nor its records
 * change. When only records change (a target's new version renders the same bytes), the
 * chunk keeps its buffer with the new records: an old version kept there would stay in
 * memory, and be rendered again by the next build.
 */
function patch(chunk: Chunk, changes: readonly Fresh[], job: string, size: number): { chunks: Chunk[]; bytes: boolean } | undefined {
  // Where each changed host would be in the chunk (places), where it is (found; -1: not there),
  // and whether each renders what the chunk holds. Plain loops: closures made on every call
  // were optimized again on most calls (see sameCuts).
  const places = new Array<number>(changes.length);
  const found = new Array<number>(changes.length);
  let same = true;
  for (let i = 0, from = 0; i < changes.length; i++) {
    const { hostname, runs } = changes[i]!;
    const place = (from = lowerBound(chunk.hosts, hostname, from));
    const k = chunk.hosts[place]?.hostname === hostname ? place : -1;
    places[i] = place;
    found[i] = k;
    const run = runs?.get(job);
    if (same) same = k < 0 ? run === undefined : run !== undefined && chunk.runs.toString('utf8', chunk.offsets[k], chunk.offsets[k + 1]) === run;
  }
  if (same) {
    let stale = false;
    for (let i = 0; i < changes.length && !stale; i++) {
      const k = found[i]!;
      stale = k >= 0 && (chunk.hosts[k] !== changes[i]!.target || !sameItems(chunk.chains[k]!, changes[i]!.chain!));
    }
    if (!stale) return undefined;
    const hosts = chunk.hosts.slice();
    const chains = chunk.chains.slice();
    for (let i = 0; i < changes.length; i++) {
      const k = found[i]!;
      if (k < 0) continue;
      hosts[k] = changes[i]!.target!;
      chains[k] = changes[i]!.chain!;
    }
    return { chunks: [{ ...chunk, hosts, chains }], bytes: false };
  }
  let total = chunk.hosts.length;
  for (let i = 0; i < changes.length; i++) total += (changes[i]!.runs?.get(job) === undefined ? 0 : 1) - (found[i]! < 0 ? 0 : 1);
  const builder = new FileBuilder(total > size ? Math.ceil(total / Math.ceil(total / size)) : size);
  let at = 0;
  for (let i = 0; i < changes.length; i++) {
    const { target, chain, runs } = changes[i]!;
    builder.copy(chunk, at, places[i]!);
    at = found[i]! < 0 ? places[i]! : places[i]! + 1;
    const run = runs?.get(job);
    if (run !== undefined) builder.add(target!, chain!, run);
  }
  builder.copy(chunk, at, chunk.hosts.length);
  return { chunks: builder.chunks(), bytes: true };
}

/** The first index from `from` whose host name is not before `hostname`. */
function lowerBound(hosts: readonly Target[], hostname: string, from: number): number {
  let low = from;
  let high = hosts.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (hosts[mid]!.hostname < hostname) low = mid + 1;
    else high = mid;
  }
  return low;
}

/** The chunks of a file put together from stretches of earlier chunks and fresh runs, in host name order. */
class FileBuilder {
  private readonly done: Chunk[] = [];
  // The chunk being filled.
  private pieces: Array<Buffer | string> = [];
  private hosts: Target[] = [];
  private chains: Chain[] = [];
  private offsets: number[] = [0];
  private size = 0;

  constructor(private readonly most: number) {}

  /**
   * Hosts from..to-1 of an earlier chunk: their runs in as few copies as chunks. A chunk taken
   * whole is shared, not copied, unless it holds fewer than half a chunk's hosts (or `share`
   * is false): small ones are copied together, so a full build joins the small chunks
   * changes left.
   */
  copy(chunk: Chunk, from: number, to: number, share = true): void {
    if (share && from === 0 && to === chunk.hosts.length && to >= this.most / 2) {
      this.cut();
      this.done.push(chunk);
      return;
    }
    while (from < to) {
      const end = Math.min(to, from + this.most - this.hosts.length);
      const shift = this.size - chunk.offsets[from]!;
      for (let k = from; k < end; k++) {
        this.hosts.push(chunk.hosts[k]!);
        this.chains.push(chunk.chains[k]!);
        this.offsets.push(chunk.offsets[k + 1]! + shift);
      }
      this.pieces.push(chunk.runs.subarray(chunk.offsets[from], chunk.offsets[end]));
      this.size = chunk.offsets[end]! + shift;
      from = end;
      if (this.hosts.length >= this.most) this.cut();
    }
  }

  add(target: Target, chain: Chain, run: string): void {
    this.hosts.push(target);
    this.chains.push(chain);
    this.pieces.push(run);
    this.size += Buffer.byteLength(run);
    this.offsets.push(this.size);
    if (this.hosts.length >= this.most) this.cut();
  }

  chunks(): Chunk[] {
    this.cut();
    return this.done;
  }

  /** Ends the chunk being filled. */
  private cut(): void {
    if (!this.hosts.length) return;
    // Its own allocation, not the shared pool's: a chunk is kept for long, and a pool slab stays while any of its buffers does.
    const runs = Buffer.allocUnsafeSlow(this.size);
    let at = 0;
    for (const piece of this.pieces) at += typeof piece === 'string' ? runs.write(piece, at) : piece.copy(runs, at);
    this.done.push({ hosts: this.hosts, chains: this.chains, runs, offsets: Uint32Array.from(this.offsets) });
    this.pieces = [];
    this.hosts = [];
    this.chains = [];
    this.offsets = [0];
    this.size = 0;
  }
}

/** The host names whose target may differ between two catalogs: those of every group whose map is not the same object. */
function changedHosts(before: Catalog['groupTargets'], after: Catalog['groupTargets']): Set<string> {
  const changed = new Set<string>();
  for (const group of changedKeys(before, after)) changedKeys(before.get(group), after.get(group), changed);
  return changed;
}

/** The bytes around and between a job file's entries: a file is [OPEN, entries..., CLOSE] or [EMPTY], its entries joined by COMMA. */
export const OPEN = Buffer.from('[\n');
/** Also what ends each entry of a run (renderRuns), so runs put side by side are entries joined. */
const COMMA_TEXT = ',\n';
export const COMMA = Buffer.from(COMMA_TEXT);
export const CLOSE = Buffer.from('\n]\n');
export const EMPTY = Buffer.from('[]\n');

/** One-shot compile to whole files (tests); the server keeps a Compiler to reuse its last build. */
export function compile(catalog: Catalog): Map<string, Buffer> {
  return new Map([...new Compiler().compile(catalog)].map(([name, parts]) => [name, Buffer.concat(parts)]));
}

/**
 * Whether two lists of buffers hold the same bytes. Cached parts make this mostly an identity
 * check, and lists cut at the same places are compared part by part (a changed chunk shows at
 * once). Lists cut differently (a file read back from disk, against a compile's parts;
 * chunks a build cut elsewhere around the same bytes) are compared across the cuts, without
 * copying either: a concatenation for the comparison cost a restart at 100k targets 86 MB of garbage.
 */
export function sameParts(a: Buffer[] | undefined, b: Buffer[]): boolean {
  if (a === b) return true; // a shard the compiler gave back as it was
  if (a === undefined) return false;
  if (sameCuts(a, b)) {
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i] && !a[i]!.equals(b[i]!)) return false;
    return true;
  }
  if (totalLength(a) !== totalLength(b)) return false;
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

// Loops in module functions, not closures made on every call: V8's optimizing compiler
// compiled such closures again and again (its code for one is tied to the call that made it,
// and dropped once that call's context is collected); in a warmed one-client round at 10k
// targets they were a third of what it compiled.
function sameCuts(a: Buffer[], b: Buffer[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i]!.length !== b[i]!.length) return false;
  return true;
}

export function totalLength(list: Buffer[]): number {
  let sum = 0;
  for (const part of list) sum += part.length;
  return sum;
}

/**
 * A target's runs, one per job with an enabled exporter: its entries in that job's file,
 * each ending in ",\n". Labels are sorted and written once for all exporters that add none
 * of their own.
 */
function renderRuns(catalog: Catalog, target: Target, shared: GroupLabels): Map<string, string> {
  let base: Array<[string, string]> | undefined;
  let baseText: string | undefined;
  const runs = new Map<string, string>();
  for (const [exporter, type] of scraped(catalog.settings, target)) {
    const extra: Array<[string, string]> = [];
    const metricsPath = exporter.metrics_path ?? type.metrics_path;
    const scheme = exporter.scheme ?? type.scheme;
    const interval = exporter.interval ?? type.interval;
    if (metricsPath) extra.push(['__metrics_path__', metricsPath]);
    if (scheme) extra.push(['__scheme__', scheme]);
    if (interval) extra.push(['__scrape_interval__', interval]);
    const labels = extra.length ? renderLabels([...(base ??= sortedLabels(target, shared)), ...extra].sort(byName)) : (baseText ??= labelsText(target, shared));
    runs.set(type.job, `${runs.get(type.job) ?? ''}${renderEntry(formatAddress(target.ip_address, exporter.port ?? type.port), labels)}${COMMA_TEXT}`);
  }
  return runs;
}

/**
 * The text of a target's labels (none of an exporter's own), renderLabels's, from what it is
 * made of: its groups' labels (one object per compile and set of groups: GroupLabels), its
 * node's, token's and admin's labels (values parses share, frozen: parse.ts), and its host
 * name. The targets of a rack differ in the host name only: the text is kept cut around it,
 * by the objects it is made of (a compile's, dropped with its GroupLabels). Rendering the
 * labels of each target took ~0.8 s of a first start's compile at 100k targets. Label maps
 * that are not frozen (not a parse's) are rendered every time: only a value that cannot
 * change may stand for its text.
 */
function labelsText(target: Target, shared: GroupLabels): string {
  const { node_labels: node, token_labels: token, labels: admin } = target;
  if (!Object.isFrozen(node) || !Object.isFrozen(token) || !Object.isFrozen(admin)) return renderLabels(sortedLabels(target, shared));
  const byAdmin = inner(inner(inner(labelTexts, shared.of(target)), node), token);
  let cut = byAdmin.get(admin);
  if (!cut) {
    // No label value holds a control character (schema/common.ts): the host name's place is found by one.
    const text = renderLabels(sortedLabels({ ...target, hostname: HOST_MARK }, shared));
    const at = text.indexOf(HOST_MARK_JSON);
    if (at < 0) throw new Error('the labels rendered without the host name');
    byAdmin.set(admin, (cut = [text.slice(0, at), text.slice(at + HOST_MARK_JSON.length)]));
  }
  return `${cut[0]}${JSON.stringify(target.hostname)}${cut[1]}`;
}
const labelTexts = new WeakMap<object, Map<object, Map<object, Map<object, [string, string]>>>>();
/** The map `outer` holds under `key`, made empty the first time. */
function inner<V>(outer: Map<object, Map<object, V>> | WeakMap<object, Map<object, V>>, key: object): Map<object, V> {
  let found = outer.get(key);
  if (!found) outer.set(key, (found = new Map()));
  return found;
}
const HOST_MARK = '\u0000';
const HOST_MARK_JSON = JSON.stringify(HOST_MARK);

/** The target's exporters that are scraped: enabled, of a type aami.yaml defines; with their type. */
function scraped(settings: Settings, target: Target): Array<[Exporter, ExporterSettings]> {
  const found: Array<[Exporter, ExporterSettings]> = [];
  for (const exporter of target.exporters) {
    const type = own(settings.exporters, exporter.type);
    if (exporter.enabled && type) found.push([exporter, type]);
  }
  return found;
}

/** The jobs whose files hold the target's entries. */
function jobsOf(settings: Settings, target: Target): string[] {
  const jobs: string[] = [];
  for (const [, { job }] of scraped(settings, target)) if (!jobs.includes(job)) jobs.push(job);
  return jobs;
}

/**
 * One element of a job file, on a line of its own: the bytes JSON.stringify gives for it
 * (tests hold the two equal), written out directly. Not indented: at 100k targets the
 * indented entries made each job's file 37 MB, a third of it spaces and line breaks, written
 * again at every change with the one-file layout and held in memory to be. One line a target
 * is as easy to grep.
 */
function renderEntry(address: string, labels: string): string {
  return `{"targets":[${JSON.stringify(address)}],"labels":${labels}}`;
}

/** An entry's label object, sorted labels in, as renderEntry places it. */
function renderLabels(labels: Array<[string, string]>): string {
  let text = '{';
  labels.forEach(([name, value], i) => {
    text += `${i ? ',' : ''}${JSON.stringify(name)}:${JSON.stringify(value)}`;
  });
  return `${text}}`;
}

function sameItems<T>(a: readonly T[], b: readonly T[]): boolean {
  return a.length === b.length && a.every((item, i) => item === b[i]);
}
