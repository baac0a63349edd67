import * as fs from 'node:fs';
import { sharedParts, type ParseResult } from '../catalog/parse.js';

/** A parse, and whether the file has comments (its text is then read again when needed). */
export interface CachedParse {
  parsed: ParseResult;
  commented?: true;
}

/** Bumped whenever parsing or the schemas change what a blob parses to: an old cache is then ignored. */
const FORMAT = 'aami-parse-cache 4';

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
 * append-only log of one JSON array `[path, oid, entry]` a line — JSON, because a Git path
 * may hold a newline or a tab, and a path that could write a line of its own could forge
 * another file's parse. Written without fsync: it is an optimization, and a torn or missing
 * line only means that blob is parsed again. The log is rewritten with only the entries
 * start-up took when the others outnumber them.
 */
export class ParseCache {
  /**
   * By blob id: a 40-character key, hashed as it comes from the tree listing. Keyed by blob id
   * and path joined, each of a 100k restart's lookups first made and hashed an 80-character
   * string (~0.4 s in all, with the same again to settle). A blob at more paths than one (the
   * empty file, copies) keeps the others by path, so many paths of one blob cost no more.
   */
  private entries = new Map<string, Entry & { others?: Map<string, Entry> }>();
  private pending: string[] = [];
  private writing: Promise<void> = Promise.resolve();

  constructor(private readonly file: string | undefined) {}

  /** Read the log (a missing, old-format or unreadable one is an empty cache). */
  async load(): Promise<void> {
    if (!this.file) return;
    let format: string | undefined;
    try {
      for (const line of readLines(this.file)) {
        if (format === undefined) {
          format = line;
          if (format !== FORMAT) return;
          continue;
        }
        try {
          const [path, oid, entry] = JSON.parse(line) as [unknown, unknown, CachedParse];
          if (typeof path !== 'string' || typeof oid !== 'string' || !/^[0-9a-f]{40}$/.test(oid)) continue;
          entry.parsed = sharedParts(entry.parsed);
          this.put(path, oid, entry);
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
    this.pending.push(`${JSON.stringify([path, oid, result])}\n`);
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
    const lines = alive.map((entry) => `${JSON.stringify(entry)}\n`).join('') + this.pending.join('');
    this.pending = [];
    const tmp = `${this.file}.tmp`;
    const write = this.writing.then(async () => {
      await fs.promises.writeFile(tmp, `${FORMAT}\n${lines}`);
      await fs.promises.rename(tmp, this.file!);
    });
    this.writing = write.catch(() => undefined);
    await write;
  }

  /** Append what was added since the last flush. Failures are logged by the caller and cost only a re-parse. */
  flush(): Promise<void> {
    if (!this.file || !this.pending.length) return this.writing;
    const lines = this.pending.join('');
    this.pending = [];
    const file = this.file;
    const write = this.writing.catch(() => undefined).then(async () => {
      const fresh = !(await fs.promises.stat(file).catch(() => undefined));
      await fs.promises.appendFile(file, fresh ? `${FORMAT}\n${lines}` : lines);
    });
    // A failed append costs a re-parse; the next flush starts afresh.
    this.writing = write.catch(() => undefined);
    return write;
  }
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
