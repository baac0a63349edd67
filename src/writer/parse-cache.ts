import * as fs from 'node:fs';
import type { Snapshot } from '../catalog/live.js';
import { clearTempsOf, tempPathOf } from '../git/fs.js';
import { sharedParts, targetParse, type ParseResult } from '../catalog/parse.js';
import { codeId } from './code-id.js';
import { DEFINITION, Definitions, Dictionary, readLines } from './json-log.js';

/** A parse, and whether the file has comments (its text is then read again when needed). */
export interface CachedParse {
  parsed: ParseResult;
  commented?: true;
}

/**
 * Bumped whenever the log's lines change. Each log also names the program that wrote it
 * (codeId): another program's parses are not this one's (an upgrade that refuses what an
 * older one took, a `metrics_path` it now bounds, must parse every file again).
 */
const FORMAT = 'aami-parse-cache 6';

/** A cached parse of one (path, blob) pair. */
interface Entry {
  path: string;
  cached: CachedParse;
  /** Taken by start-up (get): kept when the log is compacted. */
  used?: true;
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
  /** Lines of entries in the log as loaded (what compaction weighs against the live ones). */
  private logged = 0;
  /** The log on disk is of another format (or not a log): the first settle rewrites it rather than append to it. */
  private foreign = false;

  /** The log's first line: its format and the program's id. */
  private readonly header: string;

  /** `program`: the id of the program whose parses these are (a test's stand-in for another version). */
  constructor(
    private readonly file: string | undefined,
    program = codeId(),
  ) {
    this.header = `${FORMAT} ${program}`;
  }

  /**
   * Read the log (a missing, old-format or unreadable one is an empty cache). With `entries`
   * false only its dictionary is read, for the lines appended later (a start from the restart
   * image needs no parse of the log's).
   */
  async load({ entries = true } = {}): Promise<void> {
    if (!this.file) return;
    // What a compaction a kill cut short left (as large as the log, tens of MB at 100k targets): nothing reads it.
    clearTempsOf(fs, this.file);
    const definitions = new Definitions(this.dictionary);
    let format: string | undefined;
    try {
      for (const text of readLines(this.file, entries ? undefined : DEFINITION)) {
        if (format === undefined) {
          format = text;
          if (format === this.header) continue;
          this.foreign = true;
          return;
        }
        this.logged++;
        if (!entries && !text.startsWith(DEFINITION)) continue;
        try {
          const line = JSON.parse(text) as unknown[];
          if (definitions.read(line)) {
            this.logged--;
            continue;
          }
          const [path, oid, tag, body, commented] = line;
          if (typeof path !== 'string' || typeof oid !== 'string' || !/^[0-9a-f]{40}$/.test(oid)) continue;
          const target = tag === 't' ? definitions.target(body) : undefined;
          const cached: CachedParse | undefined = target ? (commented === 1 ? { parsed: targetParse(target), commented: true } : { parsed: targetParse(target) }) : tag === 'p' ? (body as CachedParse) : undefined;
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
    const take = (oid: string, entry: Entry) => entry.used && alive.push([entry.path, oid, entry.cached]);
    for (const [oid, first] of this.entries) {
      take(oid, first);
      for (const other of first.others?.values() ?? []) take(oid, other);
    }
    this.entries = new Map();
    // Weighed against every line of the log: lines a later one replaced, and lines that did
    // not read (another program's), are dead too.
    return this.compactOrFlush(() => alive, alive.length, this.logged);
  }

  /**
   * Start-up from the restart image: the log's entries were not read; `alive` gives the
   * `live` parses its snapshot holds (parsesOf; made only when the log is to be compacted).
   */
  settleTo(alive: () => Array<[string, string, CachedParse]>, live: number): Promise<void> {
    return this.compactOrFlush(alive, live, this.logged);
  }

  /** Rewrite the log with only the `live` entries `alive` gives (and the new ones) when the others outnumber them, else append the new ones. */
  private async compactOrFlush(alive: () => Array<[string, string, CachedParse]>, live: number, total: number): Promise<void> {
    const dead = total - live;
    if (!this.file) return;
    if (!this.foreign && dead <= live && dead < 10_000) return this.flush();
    // The new parses of this start-up go into the compacted log too.
    const entries = [...alive(), ...this.pending];
    this.pending = [];
    const file = this.file;
    const write = this.writing.then(async () => {
      // A new log numbers its values afresh.
      const dictionary = new Dictionary();
      const tmp = compactionTemp(file);
      try {
        await writeLines(tmp, 'w', `${this.header}\n`, dictionary, entries);
        await fs.promises.rename(tmp, file);
        this.dictionary = dictionary;
        this.foreign = false;
        this.logged = entries.length;
      } catch (error) {
        // Whichever log is on disk now, the next numbers are new to it.
        this.dictionary = new Dictionary(Math.max(this.dictionary.next, dictionary.next));
        // A log cut short (tens of MB at 100k targets, on a disk that may just have filled up) is not kept until the next start.
        await fs.promises.rm(tmp, { force: true }).catch(() => undefined);
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
      // Made here, in write order: the dictionary is the one of the log as it is now (the
      // writes are chained: no other one changes it meanwhile).
      try {
        const fresh = !(await fs.promises.stat(file).catch(() => undefined));
        await writeLines(file, 'a', fresh ? `${this.header}\n` : '', this.dictionary, entries);
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

/** Where a compaction writes the log before it takes the log's name: a temp name clearTempsOf knows. */
export const compactionTemp = (file: string) => tempPathOf(file, 'compacted');

/** Lines made between two turns of the event loop, and written together. */
const LINES_SLICE = 5_000;

/**
 * Writes (`w`) or appends (`a`) `head` and the entries' lines to `file`, a slice at a time:
 * the server answers between slices, and holds one slice, not the whole log. A first start's
 * 100k parses were one string and one buffer of 22 MB each, made while the server already
 * took a storm of registrations. Each slice's lines define their values before they use them,
 * so a write cut short leaves whole lines that read, and at most a torn last one: an append
 * that fails takes its bytes back, and one after a kill starts on a line of its own.
 */
async function writeLines(file: string, flags: 'w' | 'a', head: string, dictionary: Dictionary, entries: Array<[string, string, CachedParse]>): Promise<void> {
  const handle = await fs.promises.open(file, flags === 'a' ? 'a+' : 'w', 0o600);
  let from = 0;
  try {
    if (flags === 'a') {
      from = (await handle.stat()).size;
      const last = Buffer.alloc(1);
      if (from > 0 && (await handle.read(last, 0, 1, from - 1)).bytesRead === 1 && last[0] !== 0x0a) head = `\n${head}`;
    }
    let lines: string[] = head ? [head] : [];
    for (let i = 0; i < entries.length; i++) {
      lines.push(lineOf(dictionary, ...entries[i]!));
      if ((i + 1) % LINES_SLICE === 0 || i === entries.length - 1) {
        await handle.writeFile(lines.join(''));
        lines = [];
        await new Promise(setImmediate);
      }
    }
    if (lines.length) await handle.writeFile(lines.join('')); // the head alone
  } catch (error) {
    if (flags === 'a') await handle.truncate(from).catch(() => undefined);
    await handle.close().catch(() => undefined); // the write's error is the one told
    throw error;
  }
  await handle.close();
}

/** An entry's line, after the lines defining the values it is the first to use. */
function lineOf(dictionary: Dictionary, path: string, oid: string, cached: CachedParse): string {
  const entity = cached.parsed.entity;
  if (entity?.kind !== 'target') return `${JSON.stringify([path, oid, 'p', cached])}\n`;
  const lines: string[] = [];
  const value = dictionary.refer(entity.value, lines);
  lines.push(`${JSON.stringify(cached.commented ? [path, oid, 't', value, 1] : [path, oid, 't', value])}\n`);
  return lines.join('');
}

/**
 * The parse-cache entries of a snapshot: each file's current parse, when it is valid. (One
 * without an entity may be a refusal by mode, a symbolic link, not a parse of the blob; a
 * last good version is left out: whether its blob has comments is not known, and taken
 * from the cache without its text, an API edit would drop them.)
 */
export function parsesOf(snapshot: Snapshot): Array<[string, string, CachedParse]> {
  const entries: Array<[string, string, CachedParse]> = [];
  for (const [path, record] of snapshot.files) {
    if (record.oid !== null && record.parsed.entity) entries.push([path, record.oid, record.text === undefined ? { parsed: record.parsed } : { parsed: record.parsed, commented: true }]);
  }
  return entries;
}
