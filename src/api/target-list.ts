import { randomBytes } from 'node:crypto';
import { constants, deflateRawSync } from 'node:zlib';
import { inflateSync } from 'fflate';
import type { Snapshot } from '../catalog/live.js';
import type { Catalog } from '../catalog/build.js';
import { GroupLabels, targetLabel } from '../catalog/labels.js';
import { PMap } from '../catalog/pmap.js';
import { targetView } from '../inventory/views.js';
import type { Heartbeats } from '../nodes/heartbeats.js';
import type { Group, Settings, Target, Token } from '../schema/index.js';
import type { Streamed } from './conventions.js';
import type { Selector, TargetsQuery } from './spec/query.js';

/** One target of the list: what its JSON was rendered from, to tell when it must be rendered again. */
interface Entry {
  hostname: string;
  target: Target;
  ephemeral: boolean;
  /** Only while its chunk is open: where its JSON is in the chunk's bytes from before (undefined: to be rendered). */
  old: number | undefined;
}

/**
 * A run of entries in host name order, and their JSON (without `last_seen`'s value and the
 * closing brace) one after the other: undefined while the chunk is open (a target of it
 * changed), when `previous` holds what it was.
 */
interface Chunk {
  entries: Entry[];
  joined: Joined | undefined;
  previous?: Joined;
}

interface Joined {
  /** The entries' JSON as it is, or deflated (raw deflate) when the list is longer than the budget. */
  bytes: Buffer;
  deflated: boolean;
  /** The JSON's length, and where each entry's JSON ends in it. */
  length: number;
  ends: Uint32Array;
}

/** Tells this process's ETags from another's, and from its own before a restart. */
const BOOT = randomBytes(6).toString('base64url');
/** A chunk past twice this size is split: a changed target re-joins ~1 MB, not the fleet, and the list is sent in ~1 MB pieces. */
const CHUNK = 1024;
/**
 * The target list's JSON kept as it is, at most: ~15k targets' worth. A longer list is kept
 * deflated (~12-20× smaller; level 1 deflates ~1 MB in ~1.5 ms, fflate inflates it in ~2):
 * 100k targets' list holds ~5 MB, not ~90, while a 10k fleet's list is never inflated.
 */
const PLAIN_BUDGET = 16 * 1024 * 1024;
/** A page renders up to this many matches of a chunk not kept as plain JSON (~1.3 ms), rather than inflate or join it (~2 ms). */
const RENDER_FEW = 64;
const COMMA = Buffer.from(',');
const OPEN = Buffer.from('[');
const CLOSE = Buffer.from(']');
/**
 * How a view rendered with no heartbeat ends (`last_seen` is its last field). The list keeps
 * each target's JSON without it and adds the heartbeat's value as it sends: a fleet's
 * heartbeats (100k nodes: ~1,700 a second) change what is sent, never the chunks kept.
 */
const NO_SEEN = ',"last_seen":null}';
const KEPT = NO_SEEN.length - 'null}'.length;

export interface Page {
  json: Buffer;
  /** The last host name of the page, when more targets match after it. */
  next?: string;
}

/**
 * GET /api/v1/targets without rendering the inventory on every call. Each target's JSON is
 * rendered once per version of the target (and of what its view depends on: the groups,
 * aami.yaml, its token's ephemeral flag) and kept in host-name order in chunks of joined
 * JSON, deflated past a budget; its `last_seen` is added as it is sent. A sync after a
 * registration finds the changed targets from the catalog's own change records (not by
 * walking the fleet) and opens their chunks; a read renders the changed targets and joins
 * their chunks again. The whole list is served as the chunks in order, the same bytes
 * (with the same ETag) until a target or a listed host's heartbeat changes (the
 * heartbeats' journal says which). Label selectors look each target's labels up; a host
 * name is rendered on its own.
 */
export class TargetList {
  private chunks: Chunk[] = [];
  private size = 0;
  private snapshot: Snapshot | undefined;
  private heartbeatVersion = -1;
  private groups: ReadonlyMap<string, Group> | undefined;
  private settings: Settings | undefined;
  private targets: ReadonlyMap<string, Target> | undefined;
  private tokens: ReadonlyMap<string, Token> | undefined;
  private whole: { parts: Streamed; etag: string } | undefined;
  private shared: GroupLabels | undefined;
  /** Counts the versions of the whole list this process served. */
  private generation = 0;
  /** Bytes of JSON kept as they are (not deflated), against `plainBudget`. */
  private plainBytes = 0;

  /**
   * Buffers written over and over: where a chunk's JSON is joined, where its bytes from
   * before it changed are inflated, where a page's chunks are, and the ones whole reads
   * inflate chunks into and send them from (a pair each while it runs). So a read leaves no
   * megabyte of garbage.
   */
  private readonly scratch = { joined: new Scratch(), previous: new Scratch(), page: new Scratch(), reads: [] as Array<{ inflated: Scratch; sent: Scratch }> };

  constructor(
    private readonly heartbeats: Heartbeats,
    private readonly chunkSize = CHUNK,
    private readonly plainBudget = PLAIN_BUDGET,
    /** Most matches of a chunk not kept as plain JSON a page renders on their own rather than inflate or join the chunk. */
    private readonly renderFew = RENDER_FEW,
  ) {}

  /**
   * Every target, as one JSON array written out chunk by chunk (never copied into one
   * buffer): the same bytes and ETag until a target changes (by the catalog or by a
   * heartbeat). The ETag names this process and the list's generation. Each chunk is
   * inflated (when deflated) and its entries written with their heartbeats into two buffers
   * the read reuses: a part is good until the next is asked for (Streamed's contract).
   */
  all(): { parts: Streamed; etag: string } {
    if (!this.whole) {
      // The chunks and heartbeats as they are now: a registration or a heartbeat while a client still reads changes neither.
      const chunks = this.chunks.map((chunk) => {
        const [joined, seen] = [this.join(chunk), Float64Array.from(chunk.entries, (entry) => this.heartbeats.lastSeenMs(entry.hostname) ?? NaN)];
        return { joined, seen, length: sentLength(joined, seen) };
      });
      const byteLength = OPEN.length + CLOSE.length + chunks.reduce((sum, { length }, i) => sum + (i ? COMMA.length : 0) + length, 0);
      const idle = this.scratch.reads;
      const read = function* () {
        const scratch = idle.pop() ?? { inflated: new Scratch(), sent: new Scratch() };
        try {
          yield OPEN;
          for (const [i, { joined, seen, length }] of chunks.entries()) {
            if (i) yield COMMA;
            yield scratch.sent.entries(scratch.inflated.plain(joined), joined.ends, seen, length);
          }
          yield CLOSE;
        } finally {
          // Kept for the next read (a few, for reads at once). A read stops early only once nothing sends from it any more (writeStreamed).
          if (idle.length < 4) idle.push(scratch);
        }
      };
      this.whole = { parts: { byteLength, read }, etag: `"${BOOT}.${++this.generation}"` };
    }
    return this.whole;
  }

  /**
   * The targets matching `query`, in host name order, at most `limit` of them: members of
   * `group` directly or through a child group, host names after `cursor` (paging).
   */
  select({ hostname, group, label = [], cursor, limit }: TargetsQuery, visible: (hostname: string) => boolean = () => true): Page {
    const catalog = this.snapshot!.catalog;
    if (hostname !== undefined) {
      // One target at most (a node asks for its own): rendered, not looked for in the chunks.
      const target = catalog.targets.get(hostname);
      const found = target && (cursor === undefined || hostname > cursor) && visible(hostname) && matches(target, this.labels(catalog), group, label);
      return { json: found ? join([this.view(catalog, target)], COMMA, OPEN, CLOSE) : Buffer.from('[]') };
    }
    const shared = this.labels(catalog);
    const found: Buffer[] = [];
    let last = '';
    for (let c = cursor === undefined ? 0 : Math.max(0, this.chunkFor(cursor)); c < this.chunks.length; c++) {
      const chunk = this.chunks[c]!;
      const picked: number[] = [];
      let full = false;
      for (const [i, entry] of chunk.entries.entries()) {
        if (cursor !== undefined && entry.hostname <= cursor) continue;
        if (!matches(entry.target, shared, group, label)) continue;
        if (!visible(entry.hostname)) continue;
        if ((full = found.length + picked.length === limit)) break;
        picked.push(i);
      }
      if (picked.length) {
        const { entries } = chunk;
        // A chunk not kept as plain JSON (deflated, or changed since it was joined) with few matches: each rendered (~20 µs) costs less than inflating or joining the chunk (~2 ms a MB; a first read after the groups changed renders all of it), which a whole read does.
        if (!(chunk.joined && !chunk.joined.deflated) && picked.length <= this.renderFew) for (const i of picked) found.push(this.view(catalog, entries[i]!.target));
        else {
          // The chunk's JSON is inflated once for all its matches; each is copied out.
          const joined = this.join(chunk);
          const json = this.scratch.page.plain(joined);
          for (const i of picked) found.push(Buffer.concat([slice(json, joined.ends, i), Buffer.from(seenJson(this.heartbeats.lastSeenMs(entries[i]!.hostname) ?? NaN))]));
        }
        last = entries[picked.at(-1)!]!.hostname;
      }
      if (full) return { json: join(found, COMMA, OPEN, CLOSE), next: last };
    }
    return { json: join(found, COMMA, OPEN, CLOSE) };
  }

  /** The groups' labels, worked out once for every read while the groups stay the same (a page at 100k targets in 1,000 groups looked up each group's again: ~2 ms). */
  private labels(catalog: Catalog): GroupLabels {
    if (this.shared?.groups !== catalog.groups) this.shared = new GroupLabels(catalog);
    return this.shared;
  }

  /** One target's JSON as the list sends it, rendered on its own. */
  private view(catalog: Catalog, target: Target): Buffer {
    return Buffer.from(JSON.stringify(targetView(catalog, target, this.heartbeats.lastSeen(target.hostname))));
  }

  private inStep(snapshot: Snapshot): boolean {
    return snapshot === this.snapshot && this.heartbeats.version === this.heartbeatVersion;
  }

  /** Bring the entries in step with the snapshot, touching only what changed, and the whole list with the heartbeats. */
  sync(snapshot: Snapshot): void {
    if (this.inStep(snapshot)) return;
    const catalog = snapshot.catalog;
    if (snapshot !== this.snapshot) {
      if (catalog.groups !== this.groups || catalog.settings !== this.settings) this.rebuild(catalog);
      else {
        const changed = this.changedHosts(catalog);
        if (changed) for (const hostname of changed) this.reconcile(catalog, hostname);
        else {
          for (const hostname of catalog.targets.keys()) this.reconcile(catalog, hostname);
          if (this.size > catalog.targets.size) for (const entry of this.chunks.flatMap((chunk) => chunk.entries)) if (!catalog.targets.has(entry.hostname)) this.reconcile(catalog, entry.hostname);
        }
      }
    }
    // A heartbeat of a listed host changes the whole list's last_seen, not its chunks.
    const seen = this.heartbeats.changedSince(this.heartbeatVersion);
    if (!seen || seen.some((hostname) => this.find(hostname))) this.whole = undefined;
    this.snapshot = snapshot;
    this.targets = catalog.targets;
    this.tokens = catalog.tokens;
    this.heartbeatVersion = this.heartbeats.version;
  }

  /**
   * The hosts that may have changed since the last sync, from the target map's changed keys.
   * Undefined when only a walk over every target can tell (the map was flattened, or a token
   * file changed, which may flip `ephemeral`).
   */
  private changedHosts(catalog: Catalog): Set<string> | undefined {
    const [targets, before] = [catalog.targets, this.targets];
    const [tokens, tokensBefore] = [catalog.tokens, this.tokens];
    if (!(targets instanceof PMap && before instanceof PMap && tokens instanceof PMap && tokensBefore instanceof PMap)) return undefined;
    const changedTokens = tokens.changedSince(tokensBefore);
    if (!changedTokens) return undefined;
    for (const id of changedTokens) if (!!tokens.get(id)?.ephemeral !== !!tokensBefore.get(id)?.ephemeral) return undefined;
    return targets.changedSince(before);
  }

  /** Insert, mark for rendering or remove one host's entry, as the catalog says. */
  private reconcile(catalog: Catalog, hostname: string): void {
    const target = catalog.targets.get(hostname);
    const found = this.find(hostname);
    if (!target) {
      if (found) this.remove(found);
    } else if (!found) this.insert(catalog, target);
    else {
      const { chunk, index } = found;
      const entry = chunk.entries[index]!;
      const ephemeral = ephemeralOf(catalog, target);
      if (entry.target === target && entry.ephemeral === ephemeral) return;
      this.open(chunk);
      Object.assign(entry, { target, ephemeral, old: undefined });
    }
  }

  private rebuild(catalog: Catalog): void {
    this.groups = catalog.groups;
    this.settings = catalog.settings;
    const targets = [...catalog.targets.values()].sort((a, b) => (a.hostname < b.hostname ? -1 : 1));
    this.chunks = [];
    this.plainBytes = 0;
    for (let i = 0; i < targets.length; i += this.chunkSize) {
      const chunk: Chunk = { entries: [], joined: undefined };
      for (const target of targets.slice(i, i + this.chunkSize)) chunk.entries.push(this.entry(catalog, target));
      this.chunks.push(chunk);
    }
    this.size = targets.length;
    this.whole = undefined;
  }

  /** A new entry, to be rendered when its chunk is next joined. */
  private entry(catalog: Catalog, target: Target): Entry {
    return { hostname: target.hostname, target, ephemeral: ephemeralOf(catalog, target), old: undefined };
  }

  /** A target's JSON as the list keeps it: its view without a heartbeat, but for the `null}` that ends it. */
  private render(catalog: Catalog, target: Target): string {
    const json = JSON.stringify(targetView(catalog, target));
    if (!json.endsWith(NO_SEEN)) throw new Error(`a target's view no longer ends with last_seen: ${json.slice(-40)}`);
    return json.slice(0, json.length - NO_SEEN.length + KEPT);
  }

  private insert(catalog: Catalog, target: Target): void {
    if (!this.chunks.length) this.chunks.push({ entries: [], joined: undefined });
    const index = Math.max(0, this.chunkFor(target.hostname));
    const chunk = this.chunks[index]!;
    this.open(chunk);
    chunk.entries.splice(sortedIndex(chunk.entries, target.hostname), 0, this.entry(catalog, target));
    this.size++;
    if (chunk.entries.length > 2 * this.chunkSize) {
      const tail: Chunk = { entries: chunk.entries.splice(this.chunkSize), joined: undefined, previous: chunk.previous };
      this.chunks.splice(index + 1, 0, tail);
    }
  }

  private remove({ chunk, index }: { chunk: Chunk; index: number }): void {
    this.open(chunk);
    chunk.entries.splice(index, 1);
    this.size--;
    if (!chunk.entries.length) this.chunks.splice(this.chunks.indexOf(chunk), 1);
  }

  /** The chunk and index of a host's entry, if it has one. */
  private find(hostname: string): { chunk: Chunk; index: number } | undefined {
    const chunk = this.chunks[this.chunkFor(hostname)];
    if (!chunk) return undefined;
    const index = sortedIndex(chunk.entries, hostname);
    return chunk.entries[index]?.hostname === hostname ? { chunk, index } : undefined;
  }

  /**
   * Before a chunk's entries change: its joined bytes become what it was (each entry knows
   * where its JSON is in them), and the whole list is made again at its next read.
   */
  private open(chunk: Chunk): void {
    this.whole = undefined;
    const joined = chunk.joined;
    if (!joined) return;
    chunk.entries.forEach((entry, i) => (entry.old = i));
    chunk.previous = joined;
    chunk.joined = undefined;
    if (!joined.deflated) this.plainBytes -= joined.length;
  }

  /**
   * A chunk's JSON: as joined, or joined now from the unchanged entries' JSON from before and
   * the others rendered. It is written into a buffer kept for it, then kept as it is (copied
   * out) while the plain bytes are within their budget, else deflated.
   */
  private join(chunk: Chunk): Joined {
    if (chunk.joined) return chunk.joined;
    const catalog = this.snapshot!.catalog;
    const previous = chunk.previous;
    const before = previous && this.scratch.previous.plain(previous);
    const ends = new Uint32Array(chunk.entries.length);
    const out = this.scratch.joined;
    let end = 0;
    // Each entry written as it is rendered: a chunk's rendered strings, kept until all were, outlived young collections and went to the old generation (~60 MB more RSS rendering 100k).
    chunk.entries.forEach((entry, i) => {
      end = entry.old === undefined ? out.put(this.render(catalog, entry.target), end) : out.put(slice(before!, previous!.ends, entry.old), end);
      ends[i] = end;
      entry.old = undefined;
    });
    chunk.previous = undefined;
    const json = out.take(end);
    // Kept as it is only while the whole list would fit the budget (this chunk's size per target, times the fleet): any whole read inflates every chunk, so a list past it is deflated throughout.
    const plain = this.plainBytes + end <= this.plainBudget && (end / chunk.entries.length) * this.size <= this.plainBudget;
    if (plain) this.plainBytes += end;
    chunk.joined = { bytes: plain ? Buffer.from(json) : deflateRawSync(json, { level: constants.Z_BEST_SPEED }), deflated: !plain, length: end, ends };
    return chunk.joined;
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

/** A buffer's size for `length` bytes: an eighth more, so a chunk that grows by a few targets does not need a new one. */
const grown = (length: number) => Math.ceil(length * 1.125);

/**
 * A buffer written over again and again, grown when asked for more. Buffers made and
 * dropped per chunk were garbage V8 freed late: a young buffer made while a full
 * collection is marking lives until it ends, and the 86 MB of inflated JSON that one read
 * of a 100k list made took RSS from ~300 to ~400 MB across back-to-back reads.
 */
class Scratch {
  private buffer = Buffer.alloc(0);

  /** Its first `length` bytes, good until the next call. */
  take(length: number): Buffer {
    if (this.buffer.length < length) this.buffer = Buffer.allocUnsafeSlow(grown(length));
    return this.buffer.subarray(0, length);
  }

  /** Writes `part` at `at`, growing the buffer (what is before `at` kept): where it ends. */
  put(part: string | Buffer, at: number): number {
    const length = typeof part === 'string' ? Buffer.byteLength(part) : part.length;
    if (this.buffer.length < at + length) {
      // Doubled: a chunk is written into it entry by entry.
      const bigger = Buffer.allocUnsafeSlow(Math.max(grown(at + length), 2 * this.buffer.length));
      this.buffer.copy(bigger, 0, 0, at);
      this.buffer = bigger;
    }
    if (typeof part === 'string') this.buffer.write(part, at);
    else part.copy(this.buffer, at);
    return at + length;
  }

  /** A chunk's entries as they are sent (`length` bytes), written into this buffer (good until the next call): each one's JSON, its heartbeat, commas between. */
  entries(json: Buffer, ends: Uint32Array, seen: Float64Array, length: number): Buffer {
    const out = this.take(length);
    let at = 0;
    for (let i = 0; i < ends.length; i++) {
      if (i) at += COMMA.copy(out, at);
      at += slice(json, ends, i).copy(out, at);
      at += out.write(seenJson(seen[i]!), at);
    }
    if (at !== length) throw new Error(`a chunk of the target list made ${at} bytes, not the ${length} its length said`);
    return out;
  }

  /** A chunk's JSON as it is: its kept bytes, or inflated into this buffer (good until the next call). fflate inflates into a buffer given; Node's zlib always makes one. */
  plain(joined: Joined): Buffer {
    if (!joined.deflated) return joined.bytes;
    const out = inflateSync(joined.bytes, { out: this.take(joined.length) });
    // Short, it would send fewer bytes than the Content-Length told, and the client would wait for the rest.
    if (out.length !== joined.length) throw new Error(`a chunk of the target list inflated to ${out.length} bytes, not ${joined.length}`);
    return Buffer.from(out.buffer, out.byteOffset, out.length);
  }
}

/** Entry `i`'s JSON in its chunk's joined JSON. */
const slice = (json: Buffer, ends: Uint32Array, i: number) => json.subarray(i ? ends[i - 1]! : 0, ends[i]);

/** What ends a target's JSON: its last heartbeat (NaN: none), and the view's closing brace. */
const seenJson = (ms: number) => `${Number.isNaN(ms) ? 'null' : JSON.stringify(new Date(ms).toISOString())}}`;

/** ISO 8601 times of years 0000 to 9999 are all as long (24 characters); others are longer. */
const FOUR_DIGIT_YEARS = [Date.parse('0000-01-01T00:00:00.000Z'), Date.parse('9999-12-31T23:59:59.999Z')] as const;
const [NEVER_LENGTH, TIME_LENGTH] = [seenJson(NaN).length, seenJson(0).length];

/** The length of what a chunk sends: its entries' JSON, their heartbeats, and the commas between them. */
function sentLength(joined: Joined, seen: Float64Array): number {
  let length = joined.length + Math.max(0, seen.length - 1) * COMMA.length;
  for (const ms of seen) length += Number.isNaN(ms) ? NEVER_LENGTH : ms >= FOUR_DIGIT_YEARS[0] && ms <= FOUR_DIGIT_YEARS[1] ? TIME_LENGTH : seenJson(ms).length;
  return length;
}

function ephemeralOf(catalog: Catalog, target: Target): boolean {
  return (target.registered_by_token && catalog.tokens.get(target.registered_by_token)?.ephemeral) || false;
}

/** Whether a target's effective labels make it a member of `group` (directly or through a child group) and pass every selector. */
function matches(target: Target, shared: GroupLabels, group: string | undefined, selectors: Selector[]): boolean {
  if (group && !targetLabel(target, 'aami_groups', shared)?.includes(`,${group},`)) return false;
  return selectors.every((selector) => selects(selector, targetLabel(target, selector.name, shared)));
}

function selects(selector: Selector, value: string | undefined): boolean {
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

function join(parts: Buffer[], separator: Buffer, open?: Buffer, close?: Buffer): Buffer {
  const list: Buffer[] = open ? [open] : [];
  parts.forEach((part, i) => (i ? list.push(separator, part) : list.push(part)));
  if (close) list.push(close);
  return Buffer.concat(list);
}
