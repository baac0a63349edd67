import { randomBytes } from 'node:crypto';
import type { Snapshot } from '../catalog/live.js';
import type { Catalog } from '../catalog/build.js';
import { PMap } from '../catalog/pmap.js';
import { targetView } from '../inventory/views.js';
import type { Heartbeats } from '../nodes/heartbeats.js';
import type { Group, Settings, Target, Token } from '../schema/index.js';
import type { Selector, TargetsQuery } from './spec/query.js';

/** One target as the list serves it: its JSON, and its effective labels for selectors. */
interface Entry {
  hostname: string;
  target: Target;
  ephemeral: boolean;
  seen: number | undefined;
  labels: Readonly<Record<string, string>>;
  /** Its JSON: a view into its chunk's joined bytes once joined, so the list is kept once. */
  json: Buffer;
  chunk: Chunk;
}

type Rendered = Omit<Entry, 'chunk'>;

/** A run of entries in host name order, with their JSON joined (undefined once an entry changed). */
interface Chunk {
  entries: Entry[];
  json: Buffer | undefined;
}

/** Tells this process's ETags from another's, and from its own before a restart. */
const BOOT = randomBytes(6).toString('base64url');
/** A chunk past twice this size is split: a changed target re-joins ~1 MB, not the fleet, and the list is sent in ~1 MB pieces. */
const CHUNK = 1024;
const COMMA = Buffer.from(',');
const OPEN = Buffer.from('[');
const CLOSE = Buffer.from(']');

export interface Page {
  json: Buffer;
  /** The last host name of the page, when more targets match after it. */
  next?: string;
}

/**
 * GET /api/v1/targets without rendering the inventory on every call. Each target's JSON is
 * rendered once per version of the target (and of what its view depends on: the groups,
 * aami.yaml, its token's ephemeral flag, its last heartbeat) and kept in host-name order in
 * chunks of joined JSON. A call after a registration finds the changed targets from the
 * catalog's and the heartbeats' own change records (not by walking the fleet), re-renders
 * them and re-joins their chunks; the whole list is served as the chunks in order, the same
 * bytes (with the same ETag) until a target changes.
 */
export class TargetList {
  private readonly byHost = new Map<string, Entry>();
  private chunks: Chunk[] = [];
  private snapshot: Snapshot | undefined;
  private heartbeatVersion = -1;
  private groups: ReadonlyMap<string, Group> | undefined;
  private settings: Settings | undefined;
  private targets: ReadonlyMap<string, Target> | undefined;
  private tokens: ReadonlyMap<string, Token> | undefined;
  private whole: { parts: Buffer[]; etag: string } | undefined;
  /** Counts the versions of the whole list this process served. */
  private generation = 0;

  constructor(
    private readonly heartbeats: Heartbeats,
    private readonly chunkSize = CHUNK,
  ) {}

  /**
   * Every target, as the parts of one JSON array (written out in turn, never copied into
   * one buffer): the same parts and ETag until a target changes (by the catalog or by a
   * heartbeat). The ETag names this process and the list's generation.
   */
  all(): { parts: Buffer[]; etag: string } {
    if (!this.whole) {
      const parts: Buffer[] = [OPEN];
      this.chunks.forEach((chunk, i) => parts.push(...(i ? [COMMA] : []), joined(chunk)));
      parts.push(CLOSE);
      this.whole = { parts, etag: `"${BOOT}.${++this.generation}"` };
    }
    return this.whole;
  }

  /**
   * The targets matching `query`, in host name order, at most `limit` of them: members of
   * `group` directly or through a child group, host names after `cursor` (paging).
   */
  select({ hostname, group, label = [], cursor, limit }: TargetsQuery, visible: (hostname: string) => boolean = () => true): Page {
    const matches = (e: Entry) =>
      (!hostname || e.hostname === hostname) &&
      (!group || e.labels.aami_groups?.includes(`,${group},`)) &&
      label.every((s) => selects(s, e.labels)) &&
      visible(e.hostname);
    const found: Entry[] = [];
    // A host name selects one entry at most: looked up, not walked for (a node asks for its own).
    const one = hostname ? this.byHost.get(hostname) : undefined;
    const candidates = !hostname ? this.entriesAfter(cursor) : one && (cursor === undefined || one.hostname > cursor) ? [one] : [];
    for (const entry of candidates) {
      if (!matches(entry)) continue;
      if (found.length === limit) return { json: joinEntries(found), next: found.at(-1)!.hostname };
      found.push(entry);
    }
    return { json: joinEntries(found) };
  }

  /** Entries in host name order, from just after `after` (or from the first). */
  private *entriesAfter(after: string | undefined): Generator<Entry> {
    for (let c = after === undefined ? 0 : Math.max(0, this.chunkFor(after)); c < this.chunks.length; c++) {
      for (const entry of this.chunks[c]!.entries) if (after === undefined || entry.hostname > after) yield entry;
    }
  }

  private inStep(snapshot: Snapshot): boolean {
    return snapshot === this.snapshot && this.heartbeats.version === this.heartbeatVersion;
  }

  /** Bring the entries in step with the snapshot and the heartbeats, touching only what changed. */
  sync(snapshot: Snapshot): void {
    if (this.inStep(snapshot)) return;
    const heartbeatVersion = this.heartbeats.version;
    const catalog = snapshot.catalog;
    if (catalog.groups !== this.groups || catalog.settings !== this.settings) this.rebuild(catalog);
    else {
      const changed = this.changedHosts(catalog);
      if (changed) for (const hostname of changed) this.reconcile(catalog, hostname);
      else {
        for (const hostname of catalog.targets.keys()) this.reconcile(catalog, hostname);
        if (this.byHost.size > catalog.targets.size) for (const hostname of [...this.byHost.keys()]) if (!catalog.targets.has(hostname)) this.reconcile(catalog, hostname);
      }
    }
    this.snapshot = snapshot;
    this.targets = catalog.targets;
    this.tokens = catalog.tokens;
    this.heartbeatVersion = heartbeatVersion;
  }

  /**
   * The hosts that may have changed since the last sync: the target map's changed keys and
   * the heartbeats' journal. Undefined when only a walk over every target can tell (the map
   * was flattened, the journal moved on, or a token file changed, which may flip `ephemeral`).
   */
  private changedHosts(catalog: Catalog): Set<string> | undefined {
    const [targets, before] = [catalog.targets, this.targets];
    const [tokens, tokensBefore] = [catalog.tokens, this.tokens];
    if (!(targets instanceof PMap && before instanceof PMap && tokens instanceof PMap && tokensBefore instanceof PMap)) return undefined;
    const changedTokens = tokens.changedSince(tokensBefore);
    if (!changedTokens) return undefined;
    for (const id of changedTokens) if (!!tokens.get(id)?.ephemeral !== !!tokensBefore.get(id)?.ephemeral) return undefined;
    const hosts = targets.changedSince(before);
    const seen = this.heartbeats.changedSince(this.heartbeatVersion);
    if (!hosts || !seen) return undefined;
    for (const hostname of seen) hosts.add(hostname);
    return hosts;
  }

  /** Insert, re-render or remove one host's entry, as the catalog and its heartbeat say. */
  private reconcile(catalog: Catalog, hostname: string): void {
    const target = catalog.targets.get(hostname);
    const entry = this.byHost.get(hostname);
    if (!target) {
      if (entry) this.remove(entry);
    } else if (!entry) this.insert(this.render(catalog, target));
    else if (entry.target !== target || entry.seen !== this.heartbeats.lastSeenMs(hostname) || entry.ephemeral !== ephemeralOf(catalog, target)) this.update(entry, catalog, target);
  }

  private rebuild(catalog: Catalog): void {
    this.byHost.clear();
    this.groups = catalog.groups;
    this.settings = catalog.settings;
    const entries = [...catalog.targets.values()].map((target) => this.render(catalog, target) as Entry).sort((a, b) => (a.hostname < b.hostname ? -1 : 1));
    this.chunks = [];
    for (let i = 0; i < entries.length; i += this.chunkSize) {
      const chunk: Chunk = { entries: entries.slice(i, i + this.chunkSize), json: undefined };
      for (const entry of chunk.entries) entry.chunk = chunk;
      this.chunks.push(chunk);
    }
    for (const entry of entries) this.byHost.set(entry.hostname, entry);
    this.whole = undefined;
  }

  private render(catalog: Catalog, target: Target): Rendered {
    const seen = this.heartbeats.lastSeenMs(target.hostname);
    const view = targetView(catalog, target, seen === undefined ? undefined : new Date(seen));
    return { hostname: target.hostname, target, ephemeral: view.ephemeral, seen, labels: view.effective_labels, json: Buffer.from(JSON.stringify(view)) };
  }

  private update(entry: Entry, catalog: Catalog, target: Target): void {
    Object.assign(entry, this.render(catalog, target));
    this.changed(entry.chunk);
  }

  private insert(rendered: Rendered): void {
    const entry = rendered as Entry;
    this.byHost.set(entry.hostname, entry);
    if (!this.chunks.length) this.chunks.push({ entries: [], json: undefined });
    const index = Math.max(0, this.chunkFor(entry.hostname));
    const chunk = this.chunks[index]!;
    chunk.entries.splice(sortedIndex(chunk.entries, entry.hostname), 0, entry);
    entry.chunk = chunk;
    this.changed(chunk);
    if (chunk.entries.length > 2 * this.chunkSize) {
      const tail: Chunk = { entries: chunk.entries.splice(this.chunkSize), json: undefined };
      for (const moved of tail.entries) moved.chunk = tail;
      this.chunks.splice(index + 1, 0, tail);
    }
  }

  private remove(entry: Entry): void {
    this.byHost.delete(entry.hostname);
    const chunk = entry.chunk;
    chunk.entries.splice(chunk.entries.indexOf(entry), 1);
    this.changed(chunk);
    if (!chunk.entries.length) this.chunks.splice(this.chunks.indexOf(chunk), 1);
  }

  private changed(chunk: Chunk): void {
    chunk.json = undefined;
    this.whole = undefined;
  }

  /** The index of the last chunk whose first host name is at or before `hostname` (-1: before them all). */
  private chunkFor(hostname: string): number {
    let low = 0;
    let high = this.chunks.length - 1;
    let found = -1;
    while (low <= high) {
      const mid = (low + high) >> 1;
      const first = this.chunks[mid]!.entries[0];
      if (!first || first.hostname <= hostname) {
        found = mid;
        low = mid + 1;
      } else high = mid - 1;
    }
    return found;
  }
}

function ephemeralOf(catalog: Catalog, target: Target): boolean {
  return (target.registered_by_token && catalog.tokens.get(target.registered_by_token)?.ephemeral) || false;
}

function selects(selector: Selector, labels: Readonly<Record<string, string>>): boolean {
  const value = Object.hasOwn(labels, selector.name) ? labels[selector.name] : undefined;
  switch (selector.op) {
    case '=':
      return value === selector.value;
    case '!=':
      return value !== selector.value;
    case 'exists':
      return value !== undefined;
    case 'absent':
      return value === undefined;
  }
}

function sortedIndex(entries: Entry[], hostname: string): number {
  let low = 0;
  let high = entries.length;
  while (low < high) {
    const mid = (low + high) >> 1;
    if (entries[mid]!.hostname < hostname) low = mid + 1;
    else high = mid;
  }
  return low;
}

const joinEntries = (entries: Entry[]) => join(entries.map((e) => e.json), COMMA, OPEN, CLOSE);

/** A chunk's entries joined by commas; each entry's JSON becomes a view into it, so the old bytes can go. */
function joined(chunk: Chunk): Buffer {
  if (chunk.json) return chunk.json;
  const json = join(chunk.entries.map((e) => e.json), COMMA);
  let offset = 0;
  for (const entry of chunk.entries) {
    const length = entry.json.length;
    entry.json = json.subarray(offset, offset + length);
    offset += length + COMMA.length;
  }
  chunk.json = json;
  return json;
}

function join(parts: Buffer[], separator: Buffer, open?: Buffer, close?: Buffer): Buffer {
  const list: Buffer[] = open ? [open] : [];
  parts.forEach((part, i) => (i ? list.push(separator, part) : list.push(part)));
  if (close) list.push(close);
  return Buffer.concat(list);
}
