import * as fs from 'node:fs';
import { SHARED_TARGET_FIELDS, sharedParts, sharedValue, targetParse, type ParseResult } from '../catalog/parse.js';
import type { Target } from '../schema/index.js';

/** A parse, and whether the file has comments (its text is then read again when needed). */
export interface CachedParse {
  parsed: ParseResult;
  commented?: true;
}

/** Bumped whenever parsing, the schemas or the log's lines change: an old cache is then ignored. */
const FORMAT = 'aami-parse-cache 5';

/** Most values the log's dictionary numbers; past it, values are written in full (a fleet of ever new label sets cannot grow it without end). */
const DICTIONARY_LIMIT = 50_000;

/** A cached parse of one (path, blob) pair. */
interface Entry {
  path: string;
  cached: CachedParse;
  /** Taken by start-up (get): kept when the log is compacted. */
  used?: true;
}

/**
 * The numbers the log gives the values of SHARED_TARGET_FIELDS: a value is written once, as
 * `["=", n, value]`, before the first entry that refers to it by n. Keyed by the shared
 * copy itself (parses share one copy of each value), so a lookup costs no JSON. A number is
 * never given twice in one log: after a failed write, whose definitions may not have
 * reached the disk, a new dictionary goes on from the old one's next number and writes
 * again every value it uses.
 */
class Dictionary {
  private readonly numbers = new Map<unknown, number>();

  constructor(public next = 0) {}

  /** A value defined by the log as it is read: a later definition of a number replaces an earlier one. */
  learn(n: number, value: unknown, previous: unknown): void {
    if (previous !== undefined && this.numbers.get(previous) === n) this.numbers.delete(previous);
    if (this.numbers.size < DICTIONARY_LIMIT) this.numbers.set(value, n);
    this.next = Math.max(this.next, n + 1);
  }

  /** The entry's line, after the definitions of the values it is the first to use. */
  line(path: string, oid: string, cached: CachedParse): string {
    const entity = cached.parsed.entity;
    if (entity?.kind !== 'target') return `${JSON.stringify([path, oid, 'p', cached])}\n`;
    let lines = '';
    const value: Record<string, unknown> = { ...entity.value };
    for (const field of SHARED_TARGET_FIELDS) {
      const shared = value[field];
      if (shared === undefined) continue;
      let n = this.numbers.get(shared);
      if (n === undefined) {
        if (this.numbers.size >= DICTIONARY_LIMIT) continue; // written in full
        this.numbers.set(shared, (n = this.next++));
        lines += `${JSON.stringify(['=', n, shared])}\n`;
      }
      value[field] = n;
    }
    return `${lines}${JSON.stringify(cached.commented ? [path, oid, 't', value, 1] : [path, oid, 't', value])}\n`;
  }
}

/**
 * Parses by (path, blob id), kept in the state directory so a restart does not parse again
 * what it parsed before: Git already names every version of every file by its hash. An
 * append-only log of one JSON array a line — JSON, because a Git path may hold a newline or
 * a tab, and a path that could write a line of its own could forge another file's parse:
 * - `[path, oid, "t", target, 1?]`: a valid target (1: the file has comments), its shared
 *   fields as numbers of the dictionary;
 * - `[path, oid, "p", cachedParse]`: any other parse, in full;
 * - `["=", n, value]`: the dictionary's value n.
 * A target's line was ~440 bytes in full, ~220 by the dictionary: a 100k restart spent
 * ~0.8 s reading the log, most of it in `JSON.parse` and in sharing the values again.
 * Written without fsync: it is an optimization, and a torn or missing line only means a
 * blob is parsed again (an entry whose value is not defined before it is skipped). The log
 * is rewritten with only the entries start-up took when the others outnumber them.
 */
export class ParseCache {
  /**
   * By blob id: a 40-character key, hashed as it comes from the tree listing. Keyed by blob id
   * and path joined, each of a 100k restart's lookups first made and hashed an 80-character
   * string (~0.4 s in all, with the same again to settle). A blob at more paths than one (the
   * empty file, copies) keeps the others by path, so many paths of one blob cost no more.
   */
  private entries = new Map<string, Entry & { others?: Map<string, Entry> }>();
  private pending: Array<[string, string, CachedParse]> = [];
  private writing: Promise<void> = Promise.resolve();
  /** The numbers of the log on disk: lines are made with it as they are written, in the order they are. */
  private dictionary = new Dictionary();

  constructor(private readonly file: string | undefined) {}

  /** Read the log (a missing, old-format or unreadable one is an empty cache). */
  async load(): Promise<void> {
    if (!this.file) return;
    const values = new Map<number, unknown>();
    let format: string | undefined;
    try {
      for (const text of readLines(this.file)) {
        if (format === undefined) {
          format = text;
          if (format !== FORMAT) return;
          continue;
        }
        try {
          const line = JSON.parse(text) as unknown[];
          if (line[0] === '=') {
            const [, n, value] = line;
            if (!Number.isSafeInteger(n) || (n as number) < 0 || value === undefined) continue;
            const shared = sharedValue(value, '');
            this.dictionary.learn(n as number, shared, values.get(n as number));
            values.set(n as number, shared);
            continue;
          }
          const [path, oid, tag, body, commented] = line;
          if (typeof path !== 'string' || typeof oid !== 'string' || !/^[0-9a-f]{40}$/.test(oid)) continue;
          const cached = tag === 't' ? targetOf(body, values, commented === 1) : tag === 'p' ? (body as CachedParse) : undefined;
          if (!cached) continue;
          if (tag === 'p') cached.parsed = sharedParts(cached.parsed);
          this.put(path, oid, cached);
        } catch {
          // a torn last line
        }
      }
    } catch {
      // unreadable: what was read stays, the rest is parsed again
    }
  }

  get(path: string, oid: string): CachedParse | undefined {
    const first = this.entries.get(oid);
    const entry = first?.path === path ? first : first?.others?.get(path);
    if (!entry) return undefined;
    entry.used = true;
    return entry.cached;
  }

  /** A later line for the same pair wins. */
  private put(path: string, oid: string, cached: CachedParse): void {
    const first = this.entries.get(oid);
    if (!first || first.path === path) this.entries.set(oid, { path, cached, others: first?.others });
    else (first.others ??= new Map()).set(path, { path, cached });
  }

  /** Remember a parse; written to the log by the next flush(). */
  add(path: string, oid: string, result: CachedParse): void {
    if (!this.file) return;
    this.pending.push([path, oid, result]);
  }

  /**
   * After start-up: drop the entries from memory (later blobs are new ones), compact the log
   * when the entries start-up did not take (get) outnumber those it did, and write this
   * start-up's parses either way. Left for the first write to flush, a first start's 100k
   * parses were 46 MB held in memory, and lost to a `kill -9` before it: the next start
   * parsed them all again.
   */
  async settle(): Promise<void> {
    const alive: Array<[string, string, CachedParse]> = [];
    let total = 0;
    const count = (oid: string, entry: Entry) => {
      total++;
      if (entry.used) alive.push([entry.path, oid, entry.cached]);
    };
    for (const [oid, first] of this.entries) {
      count(oid, first);
      for (const other of first.others?.values() ?? []) count(oid, other);
    }
    const dead = total - alive.length;
    this.entries = new Map();
    if (!this.file) return;
    if (dead <= alive.length && dead < 10_000) return this.flush();
    // The new parses of this start-up go into the compacted log too.
    const entries = [...alive, ...this.pending];
    this.pending = [];
    const file = this.file;
    const write = this.writing.then(async () => {
      // A new log numbers its values afresh.
      const dictionary = new Dictionary();
      try {
        const tmp = `${file}.tmp`;
        await fs.promises.writeFile(tmp, `${FORMAT}\n${entries.map((entry) => dictionary.line(...entry)).join('')}`);
        await fs.promises.rename(tmp, file);
        this.dictionary = dictionary;
      } catch (error) {
        // Whichever log is on disk now, the next numbers are new to it.
        this.dictionary = new Dictionary(Math.max(this.dictionary.next, dictionary.next));
        throw error;
      }
    });
    this.writing = write.catch(() => undefined);
    await write;
  }

  /** Append what was added since the last flush. Failures are logged by the caller and cost only a re-parse. */
  flush(): Promise<void> {
    if (!this.file || !this.pending.length) return this.writing;
    const entries = this.pending;
    this.pending = [];
    const file = this.file;
    const write = this.writing.catch(() => undefined).then(async () => {
      // Made here, in write order: the dictionary is the one of the log as it is now.
      const lines = entries.map((entry) => this.dictionary.line(...entry)).join('');
      try {
        const fresh = !(await fs.promises.stat(file).catch(() => undefined));
        await fs.promises.appendFile(file, fresh ? `${FORMAT}\n${lines}` : lines);
      } catch (error) {
        // Some of the definitions may not have reached the log: the next lines define their values again.
        this.dictionary = new Dictionary(this.dictionary.next);
        throw error;
      }
    });
    // A failed append costs a re-parse; the next flush starts afresh.
    this.writing = write.catch(() => undefined);
    return write;
  }
}

/** A target's cached parse from its line: each shared field a number the log defined before it, or (past the dictionary's limit) the value itself. */
function targetOf(body: unknown, values: Map<number, unknown>, commented: boolean): CachedParse | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const value = body as Record<string, unknown>;
  for (const field of SHARED_TARGET_FIELDS) {
    const ref = value[field];
    if (ref === undefined) continue;
    const shared = typeof ref === 'number' ? values.get(ref) : sharedValue(ref, field);
    if (shared === undefined) return undefined;
    value[field] = shared;
  }
  const parsed = targetParse(value as Target);
  return commented ? { parsed, commented } : { parsed };
}

/**
 * A file's lines, read a chunk at a time and each decoded on its own. The whole log as one
 * string (46 MB at 100k targets), and the buffer it was decoded from, were garbage the GC
 * took its time to return: the server's memory stayed that much higher after start-up.
 */
function* readLines(file: string): Generator<string> {
  const fd = fs.openSync(file, 'r');
  try {
    let buffer = Buffer.allocUnsafe(1 << 20);
    let start = 0;
    let end = 0;
    for (let eof = false; ; ) {
      const newline = buffer.indexOf(10, start);
      if (newline !== -1 && newline < end) {
        yield buffer.toString('utf8', start, newline);
        start = newline + 1;
        continue;
      }
      if (eof) {
        if (start < end) yield buffer.toString('utf8', start, end);
        return;
      }
      // Move the part of a line left to the front (a line longer than the buffer doubles it), then read on.
      if (start === 0 && end === buffer.length) buffer = Buffer.concat([buffer, Buffer.allocUnsafe(buffer.length)]);
      buffer.copy(buffer, 0, start, end);
      end -= start;
      start = 0;
      const read = fs.readSync(fd, buffer, end, buffer.length - end, null);
      if (read === 0) eof = true;
      end += read;
    }
  } finally {
    fs.closeSync(fd);
  }
}
