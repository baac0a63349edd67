import { randomUUID } from 'node:crypto';
import * as nodeFs from 'node:fs';
import type { FileRecord } from '../catalog/build.js';
import { fileRecord, Snapshot, type LiveCatalog } from '../catalog/live.js';
import { changedKeys } from '../catalog/pmap.js';
import { sharedParts, targetParse, type Entity, type ParseResult } from '../catalog/parse.js';
import type { Problem } from '../catalog/problem.js';
import { dirname } from 'node:path';
import { clearTempsOf, type Fs, syncPath, syncPathSync, tempPathOf, writeFileDurably } from '../git/fs.js';
import type { Logger } from '../log.js';
import { restoredState, savedStateOf, type SavedCatalogState } from './catalog-state.js';
import { codeId } from './code-id.js';
import { Definitions, Dictionary, readLines } from './json-log.js';

const FORMAT = 'aami-restart-image 3';
const BASE_FORMAT = 'aami-restart-base 1';

/** How RestartImage.keep() saves while the server serves. */
interface KeepOptions {
  /** Work under way: no save starts. */
  busy: () => boolean;
  logger: Logger;
  /** How long nothing must change before a save (default 5 s). */
  quietMs?: number;
  /** After a save that failed, none before this long (default a minute). */
  retryMs?: number;
  /** Told of each save made. */
  saved?: () => void;
}

/**
 * The base file on disk that this process's images name: its id, and the paths whose lines
 * may differ from its own in `seen` (the snapshot they were last worked out for): every one
 * that does, and some that changed back.
 */
interface Base {
  id: string;
  seen: Snapshot;
  changed: Set<string>;
}

/**
 * The snapshot a server serves, saved in the state directory so that the next start at the
 * same commit serves it without listing the tree, looking every file up in the parse cache
 * and building the catalog again (~2 s of a 100k-target restart). Two files of JSON lines:
 * - the base (`<file>.base`), every file of a snapshot once served: `[BASE_FORMAT, code, id,
 *   files]`, the file lines in path order, `["end", files]`;
 * - the image (`<file>`), what is served now, as the files that differ from a base:
 *   `[FORMAT, code, head, base id, files, state]`, the lines of the files changed since the
 *   base (`[path]`: deleted), `["end", lines]`. The code is a hash of the program (another
 *   build of the server may decide otherwise), the head the commit it shows, the state its
 *   catalog state (catalog-state.ts).
 * A file's line is `[path, oid, parse, last good, its oid, text, problems, contributes
 * nothing]` (the last good version 1: the current one; its oid 1: the current blob), and
 * `["=", n, value]` a value targets repeat (json-log.ts), each file its own numbers.
 * A save writes the lines of the files changed since the base, so a registration at 100k
 * targets writes those of the registrations since, not 100k (~0.3 s of CPU); a new base
 * once they pass a tenth of the files. A base is written through changes (it shows the
 * snapshot it was made from; the image over it, what is served). Only the image is ever
 * served from: without one naming it, a base is nothing.
 * Saved while the server serves once it is quiet (keep()), and at a clean stop. Taken once:
 * the image is taken away from its name (renamed, then removed) as it is read, so a server
 * killed before it is quiet again starts the long way, from Git and its state. Any doubt
 * (another commit, another program, another base, a line that does not read) means the
 * long way too.
 */
export class RestartImage {
  /**
   * Worked out when the server starts, from the program it runs: an upgrade in place replaces
   * the files under a running server, whose image must not then claim the new program's id.
   */
  private readonly code = codeId();

  /** The snapshot the image holds, when this process saved it: a stop with nothing new since writes nothing. */
  private saved: Snapshot | undefined;
  /** The base this process's images name; undefined when the next save writes a new one. */
  private base: Base | undefined;
  /** The save made while the server serves (keep()), under way. */
  private background: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** The removal of an outdated image (drop()), which a write waits for. */
  private removing: Promise<void> = Promise.resolve();
  /** No save while serving before this time (performance.now()): see keep(). */
  private notBefore = 0;

  private readonly baseFile: string;

  constructor(
    private readonly file: string,
    /** node:fs, or one over it that watches or fails some calls (tests): the lines are read back by node:fs (readLines). */
    private readonly fs: Fs = nodeFs,
  ) {
    this.baseFile = `${file}.base`;
  }

  /**
   * Keep an image of what `live` serves while the server runs, so a start after a kill -9
   * (or a crash, or an OOM kill) is as quick as one after a clean stop: saved once nothing
   * has changed for `quietMs` and no work is under way (`busy`), a chunk of files at a time
   * between requests (a new base: ~0.3 s of CPU at 100k targets). The image only ever holds
   * the snapshot served: a change while it is written stops the save, and a change after it
   * removes the file (a branch moved away and back to the same commit is served with what
   * it went through, not as the image had it). Each save, finished or stopped, is followed
   * by thirty times its length without one, so a fleet that changes every few seconds
   * spends a few percent of a core on them at most.
   */
  keep(live: LiveCatalog, options: KeepOptions): void {
    const quietMs = options.quietMs ?? 5000;
    const later = (ms: number) => {
      clearTimeout(this.timer);
      if (this.stopped) return;
      this.timer = setTimeout(run, Math.max(ms, this.notBefore - performance.now()));
      this.timer.unref();
    };
    const run = () => {
      const snapshot = live.snapshot();
      if (this.stopped || this.background || snapshot === this.saved || !snapshot.head) return;
      if (options.busy() || performance.now() < this.notBefore) return later(quietMs);
      this.background = this.saveWhileServing(snapshot, () => live.snapshot() === snapshot, options).finally(() => {
        this.background = undefined;
        // What changed while it ran, counted now: the base's snapshot, written through changes, is not kept until the next one.
        this.track(live.snapshot());
        if (live.snapshot() === this.saved) return;
        // A change since its last look (the subscriber leaves a save under way alone): the image goes.
        this.drop(options.logger);
        // Not saved (a change while it ran, a failed write): tried again once quiet, and not before notBefore.
        later(quietMs);
      });
    };
    live.subscribe((snapshot) => {
      // Worked out as it comes: the base's snapshot, older ones, are not kept.
      this.track(snapshot);
      // A save under way finds out itself (see saveWhileServing).
      if (!this.background) this.drop(options.logger);
      later(quietMs);
    });
    later(quietMs);
  }

  /** The files changed between the base and `snapshot`, worked out; past a tenth of the files, a new base is due and they are no longer counted. */
  private track(snapshot: Snapshot): void {
    const base = this.base;
    if (!base || base.seen === snapshot) return;
    changedFiles(base.seen, snapshot, base.changed);
    base.seen = snapshot;
    if (base.changed.size > snapshot.files.size / 10) this.base = undefined;
  }

  private async saveWhileServing(snapshot: Snapshot, served: () => boolean, options: KeepOptions): Promise<void> {
    const started = performance.now();
    // Checked after each chunk, and once more just before a file takes its name. A base need
    // not show what is served (the image that names it does): a change does not stop it, or a
    // fleet that changes every second would never have one.
    const stillCurrent = (base: boolean) => () => {
      if ((!base && !served()) || this.stopped) throw new Stale('the snapshot changed');
    };
    let newBase: boolean;
    try {
      newBase = await this.write(snapshot, (chunks, base) => inSlices(chunks, stillCurrent(base)), stillCurrent);
    } catch (error) {
      if (!(error instanceof Stale)) options.logger.warn('saving the snapshot for the next start failed: tried again in a minute', { error: String(error) });
      this.notBefore = performance.now() + (error instanceof Stale ? 30 * (performance.now() - started) : (options.retryMs ?? 60_000));
      return;
    }
    const ms = performance.now() - started;
    this.notBefore = performance.now() + 30 * ms;
    // Changed after its last chunk (while it was flushed and renamed): no start may take it.
    if (!served()) return this.drop(options.logger);
    options.logger.info('saved the snapshot for a quick start after a crash or a kill', { head: snapshot.head!, ...(newBase ? { new_base: snapshot.files.size } : { changed_files: this.base?.changed.size ?? 0 }), ms: Math.round(ms) });
    if (!this.stopped) options.saved?.();
  }

  /**
   * The image this process saved no longer shows what is served: removed (before anything
   * is written to its name again). The base stays, for the next image to name.
   */
  private drop(logger: Logger): void {
    if (!this.saved) return;
    this.saved = undefined;
    this.removing = this.fs.promises
      .rm(this.file, { force: true })
      // Synced: after a power cut the image must not come back (a branch moved back to its commit would take it).
      .then(() => syncPath(this.fs, dirname(this.file)))
      .catch((error: unknown) => logger.warn('removing the outdated restart image failed: a start at its commit would take it', { error: String(error) }));
  }

  /** No more saves while serving: the server stops (a save under way stops at its next chunk). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /**
   * Save the snapshot at close, once the writes are answered: a save under way in the
   * background is stopped first, and nothing is written when the image holds this snapshot.
   */
  async save(snapshot: Snapshot): Promise<void> {
    this.stop();
    await this.background;
    if (!snapshot.head || (snapshot === this.saved && this.fs.existsSync(this.file))) return;
    await this.write(snapshot, (chunks) => [...chunks].join(''));
  }

  /**
   * Writes the image of `snapshot`, and first a new base when the files changed since the
   * last one are too many (or there is none): true then. `slices` makes the chunks of lines
   * of the base or the image into what is written, `beforeRename(base)` is called before the
   * base or the image takes its name.
   */
  private async write(snapshot: Snapshot, slices: (chunks: Iterable<string>, base: boolean) => string | AsyncIterable<string>, beforeRename?: (base: boolean) => () => void): Promise<boolean> {
    await this.removing;
    // Changes published before the subscriber saw them (between take() and keep()), or while
    // a base was written, when there was none to count them against.
    this.track(snapshot);
    const newBase = !this.base;
    if (!this.base) {
      const id = randomUUID();
      await writeOrRemove(this.fs, this.baseFile, slices(baseChunks(snapshot, this.code, id), true), beforeRename?.(true));
      this.base = { id, seen: snapshot, changed: new Set() };
    }
    // A write that failed part way (a directory sync after the rename) must not leave an image no drop() would remove.
    await writeOrRemove(this.fs, this.file, slices(imageChunks(snapshot, this.code, this.base), false), beforeRename?.(false));
    this.saved = snapshot;
    return newBase;
  }

  /**
   * The snapshot saved at `head` by this program, or why there is none to serve (undefined:
   * no image, or no head: the files are removed). The image is taken away from its name
   * before it is used: if it cannot be, it is not used. Its base stays, for this process's
   * images to name.
   */
  take(head: string | null): { snapshot: Snapshot } | { reason: string } | undefined {
    // What a save cut short by a kill left (tens of MB at 100k targets): the base's temps too (`.restart-image.base.…`).
    clearTempsOf(this.fs, this.file);
    // A base no image names: taken from its name at once (a later save's must not be removed), its blocks given back in the background.
    const forget = () => {
      const forgotten = tempPathOf(this.baseFile, 'forgotten');
      try {
        this.fs.renameSync(this.baseFile, forgotten);
        this.fs.rm(forgotten, { force: true }, () => undefined);
      } catch {
        // None (ENOENT), or one the start cannot move: no image names it.
      }
    };
    // No commit to show (an empty branch): an image is of no use, and must not wait for the branch to come back to its commit.
    if (head === null) {
      this.fs.rm(this.file, { force: true }, () => undefined);
      forget();
      return undefined;
    }
    let fd: number;
    try {
      fd = this.fs.openSync(this.file, 'r');
    } catch (error) {
      forget();
      return (error as NodeJS.ErrnoException).code === 'ENOENT' ? undefined : { reason: `it cannot be read (${(error as Error).message})` };
    }
    // Taken away from its name first, read from the open file, then removed in the
    // background under a temp name the next start clears if this one cannot.
    const taken = tempPathOf(this.file, 'taken');
    let baseFd: number | undefined;
    try {
      this.fs.renameSync(this.file, taken);
      // Synced: after a power cut the image must not come back (this process removes no image it did not save).
      syncPathSync(this.fs, dirname(this.file));
      const image = readImage(readLines(fd), head, this.code);
      if ('reason' in image) {
        forget();
        return image;
      }
      try {
        baseFd = this.fs.openSync(this.baseFile, 'r');
      } catch (error) {
        throw unreadable('base', `cannot be read (${(error as Error).message})`);
      }
      const snapshot = restoreSnapshot(readLines(baseFd), image, head, this.code);
      this.base = { id: image.base, seen: snapshot, changed: new Set(image.changes.keys()) };
      return { snapshot };
    } catch (error) {
      forget();
      return { reason: error instanceof Error ? error.message : String(error) };
    } finally {
      this.fs.closeSync(fd);
      if (baseFd !== undefined) this.fs.closeSync(baseFd);
      this.fs.rm(taken, { force: true }, () => undefined);
    }
  }
}

/**
 * Writes a file of the restart image durably; on a failure, its name holds no file: one left
 * there (a directory sync that failed after the rename) would not be known to be there.
 */
async function writeOrRemove(fs: Fs, file: string, data: string | AsyncIterable<string>, beforeRename?: () => void): Promise<void> {
  try {
    await writeFileDurably(fs, file, data, true, 0o600, beforeRename);
  } catch (error) {
    await fs.promises.rm(file, { force: true }).catch(() => undefined);
    throw error;
  }
}

/** A background save stopped: what it was saving is no longer served. */
class Stale extends Error {}

/** The chunks, each made on the event loop's next turn, after `check` (which throws to stop). */
async function* inSlices(chunks: Iterable<string>, check: () => void): AsyncGenerator<string> {
  for (const chunk of chunks) {
    yield chunk;
    await new Promise(setImmediate);
    check();
  }
}

/** The paths whose line in an image may differ between two snapshots (their record, problems or contribution), added to `changed`. */
export function changedFiles(older: Snapshot, newer: Snapshot, changed = new Set<string>()): Set<string> {
  changedKeys(older.files, newer.files, changed);
  changedKeys(older.problemsByFile, newer.problemsByFile, changed);
  return changedKeys(older.rejected, newer.rejected, changed);
}

/** Files a chunk of lines holds: ~5 ms of work at a time. */
const CHUNK_FILES = 1024;

/** A base of every file of `snapshot`, a chunk at a time, each made when asked for. */
function baseChunks(snapshot: Snapshot, code: string, id: string): Generator<string> {
  // In path order: the catalog is made again in the order a build makes it, and an image's
  // files are merged in as it is read. (The default sort, by UTF-16 code units like `<`:
  // 20-40 ms for 100k paths, a comparator 70-170.)
  const paths = [...snapshot.files.keys()].sort();
  return linesOf([BASE_FORMAT, code, id, paths.length], snapshot, paths);
}

/** The image of `snapshot` over `base`: the lines of the files changed since it. */
function imageChunks(snapshot: Snapshot, code: string, base: { id: string; changed: ReadonlySet<string> }): Generator<string> {
  // The catalog state a server computes from the snapshot, carried: worked out again, it
  // looks claims up in the IP index, which a restart makes only once it serves.
  return linesOf([FORMAT, code, snapshot.head, base.id, snapshot.files.size, savedStateOf(snapshot)], snapshot, [...base.changed].sort());
}

/** The header, the line of each path's file in `snapshot` (`[path]`: it has none), and the end, CHUNK_FILES files' worth at a time. */
function* linesOf(header: unknown[], snapshot: Snapshot, paths: readonly string[]): Generator<string> {
  const dictionary = new Dictionary();
  let lines: string[] = [`${JSON.stringify(header)}\n`];
  for (let i = 0; i < paths.length; i++) {
    if (i % CHUNK_FILES === 0 && i > 0) {
      yield lines.join('');
      lines = [];
    }
    const path = paths[i]!;
    const record = snapshot.files.get(path);
    if (!record) {
      lines.push(`${JSON.stringify([path])}\n`);
      continue;
    }
    const parsed = record.parsed.entity?.kind === 'target' && !record.parsed.problems.length ? ['t', dictionary.refer(record.parsed.entity.value, lines)] : ['p', record.parsed];
    const lastGood = !record.lastGood ? 0 : record.lastGood === record.parsed.entity ? 1 : record.lastGood.kind === 'target' ? ['t', dictionary.refer(record.lastGood.value, lines)] : ['e', record.lastGood];
    const problems = snapshot.problemsByFile.get(path) ?? null;
    // The last good version's blob is most often the current one: 1.
    const lastGoodOid = record.lastGoodOid === undefined ? null : record.lastGoodOid === record.oid ? 1 : record.lastGoodOid;
    lines.push(`${JSON.stringify([path, record.oid, parsed, lastGood, lastGoodOid, record.text ?? null, problems, snapshot.rejected.has(path) ? 1 : 0])}\n`);
  }
  lines.push(`${JSON.stringify(['end', paths.length])}\n`);
  yield lines.join('');
}

/** A base of every file of `snapshot`, whole (tests). */
export function baseOf(snapshot: Snapshot, code: string, id: string): string {
  return [...baseChunks(snapshot, code, id)].join('');
}

/** The image of `snapshot` over a base, whole (tests). */
export function imageOf(snapshot: Snapshot, code: string, base: { id: string; changed: ReadonlySet<string> }): string {
  return [...imageChunks(snapshot, code, base)].join('');
}

/** A file as a line gives it. */
interface FileLine {
  record: FileRecord;
  problems: readonly Problem[] | undefined;
  contributesNothing: boolean;
}

/** What an image holds: the base it names, how many files it shows, their catalog state, and the files changed since the base (null: deleted). */
interface Image {
  base: string;
  files: number;
  state: SavedCatalogState;
  changes: Map<string, FileLine | null>;
}

/** The snapshot an image and its base hold, or why it is not to be served (saved at another commit, by another program); throws on a line that does not read. */
export function restoreImage(image: Iterable<string>, base: Iterable<string>, head: string, code: string): { snapshot: Snapshot } | { reason: string } {
  const read = readImage(image, head, code);
  return 'reason' in read ? read : { snapshot: restoreSnapshot(base, read, head, code) };
}

function readImage(lines: Iterable<string>, head: string, code: string): Image | { reason: string } {
  let image: Image | undefined;
  let i = 0;
  const definitions = new Definitions();
  for (const json of lines) {
    i++;
    const line = JSON.parse(json) as unknown[];
    if (!image) {
      const [format, savedBy, savedAt, base, files, state] = line as [unknown, unknown, unknown, unknown, unknown, SavedCatalogState | undefined];
      if (format !== FORMAT) return { reason: `it is of another format (${String(format)})` };
      if (savedBy !== code) return { reason: 'another build of the server saved it' };
      if (savedAt !== head) return { reason: `it shows commit ${String(savedAt)}, and the branch is at ${head}` };
      if (typeof base !== 'string' || !Number.isSafeInteger(files) || typeof state?.last_good !== 'object' || !state.last_good || typeof state.established !== 'object' || !state.established || state.head !== head) throw unreadable('image', 'does not read at line 1');
      image = { base, files: files as number, state, changes: new Map() };
      continue;
    }
    if (line.length === 1 && typeof line[0] === 'string') {
      image.changes.set(line[0], null);
      continue;
    }
    if (definitions.read(line)) continue;
    if (line[0] === 'end' && line.length === 2) {
      if (line[1] !== image.changes.size) throw unreadable('image', 'misses files');
      return image;
    }
    const [path, file] = fileOf(line, definitions, () => unreadable('image', `does not read at line ${i}`));
    image.changes.set(path, file);
  }
  throw unreadable('image', 'was cut short');
}

/** The snapshot the base's lines and the image's changes make: the files merged in path order, as the base has them. */
function restoreSnapshot(lines: Iterable<string>, image: Image, head: string, code: string): Snapshot {
  // The files the image holds, in path order: each is put in the base's file's place, or between the base's files where it has none.
  const changed = [...image.changes.keys()].sort();
  let next = 0;
  const files = new Map<string, FileRecord>();
  const problems = new Map<string, readonly Problem[]>();
  const rejected = new Map<string, true>();
  const put = (path: string, file: FileLine | null | undefined) => {
    if (!file) return;
    files.set(path, file.record);
    if (file.problems) problems.set(path, file.problems);
    if (file.contributesNothing) rejected.set(path, true);
  };
  const putChangedBefore = (path: string | undefined) => {
    while (next < changed.length && (path === undefined || changed[next]! < path)) put(changed[next]!, image.changes.get(changed[next++]!));
  };
  let header: unknown[] | undefined;
  let i = 0;
  let previous: string | undefined;
  let count = 0;
  const definitions = new Definitions();
  for (const json of lines) {
    i++;
    const line = JSON.parse(json) as unknown[];
    if (!header) {
      header = line;
      if (line[0] !== BASE_FORMAT || line[1] !== code || line[2] !== image.base) throw unreadable('base', 'is not the one the image names');
      continue;
    }
    if (definitions.read(line)) continue;
    if (line[0] === 'end' && line.length === 2) {
      if (line[1] !== header[3] || count !== header[3]) throw unreadable('base', 'misses files');
      putChangedBefore(undefined);
      if (files.size !== image.files) throw unreadable('base', 'and the image do not add up to the files the image shows');
      const snapshot = Snapshot.restore(head, files, problems, rejected);
      restoredState(snapshot, image.state);
      return snapshot;
    }
    const [path, file] = fileOf(line, definitions, () => unreadable('base', `does not read at line ${i}`));
    if (previous !== undefined && !(previous < path)) throw unreadable('base', `is out of order at line ${i}`);
    previous = path;
    count++;
    putChangedBefore(path);
    if (changed[next] === path) put(path, image.changes.get(changed[next++]!));
    else put(path, file);
  }
  throw unreadable('base', 'was cut short');
}

function unreadable(which: 'image' | 'base', what: string): Error {
  return new Error(`the ${which === 'image' ? 'image' : "image's base"} ${what}`);
}

/** A file's line read: its path and what it holds. */
function fileOf(line: unknown[], definitions: Definitions, bad: () => Error): [string, FileLine] {
  const [path, oid, parsedPart, lastGoodPart, lastGoodOidPart, text, fileProblems, contributesNothing] = line as [string, string | null, [string, unknown], unknown, string | 1 | null, string | null, Problem[] | null, number];
  const lastGoodOid = lastGoodOidPart === 1 ? oid : lastGoodOidPart;
  const parsed = parseOf(parsedPart, definitions);
  const lastGood = lastGoodPart === 0 ? undefined : lastGoodPart === 1 ? parsed.entity : entityOf(lastGoodPart as [string, unknown], definitions);
  if (typeof path !== 'string' || (lastGoodPart !== 0 && !lastGood)) throw bad();
  const record = fileRecord({ oid, parsed, lastGood, lastGoodOid: lastGoodOid ?? undefined, text: text ?? undefined });
  return [path, { record, problems: fileProblems ? Object.freeze(fileProblems) : undefined, contributesNothing: contributesNothing === 1 }];
}

function parseOf([tag, body]: [string, unknown], definitions: Definitions): ParseResult {
  if (tag === 'p') return sharedParts(body as ParseResult);
  const target = tag === 't' ? definitions.target(body) : undefined;
  if (!target) throw new Error('the image holds a parse that does not read');
  return targetParse(target);
}

function entityOf([tag, body]: [string, unknown], definitions: Definitions): Entity | undefined {
  if (tag === 'e') return body as Entity;
  return tag === 't' ? parseOf([tag, body], definitions).entity : undefined;
}
