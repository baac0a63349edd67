import * as fs from 'node:fs';
import type { FileRecord } from '../catalog/build.js';
import { fileRecord, Snapshot, type LiveCatalog } from '../catalog/live.js';
import { sharedParts, targetParse, type Entity, type ParseResult } from '../catalog/parse.js';
import type { Problem } from '../catalog/problem.js';
import { dirname } from 'node:path';
import { clearTempsOf, PROCESS_TAG, syncPath, tempPathOf, writeFileDurably } from '../git/fs.js';
import type { Logger } from '../log.js';
import { restoredState, savedStateOf, type SavedCatalogState } from './catalog-state.js';
import { codeId } from './code-id.js';
import { Definitions, Dictionary, readLines } from './json-log.js';

const FORMAT = 'aami-restart-image 2';

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
 * The snapshot a server serves, saved in the state directory so that the next
 * start at the same commit serves it without listing the tree, looking every file up in the
 * parse cache and building the catalog again (~2 s of a 100k-target restart). JSON lines:
 * - `[FORMAT, code, head, files, state]`: the code that wrote it (a hash of the program:
 *   another build of the server may decide otherwise), the commit it shows, and its catalog
 *   state (catalog-state.ts);
 * - `["=", n, value]`: a value targets repeat (json-log.ts);
 * - one line a file: `[path, oid, parse, last good, its oid, text, problems, contributes nothing]`
 *   (the last good version 1: the current one; its oid 1: the current blob);
 * - `["end", files]`: without it (a write cut short) the image is not used.
 * Saved while the server serves once it is quiet (keep()), and at a clean stop. Taken once:
 * the file is taken away from its name (renamed, then removed) as it is read, so a server
 * killed before it is quiet again starts the long way, from Git and its state. Any doubt
 * (another commit, another program, a line that does not read) means the long way too.
 */
export class RestartImage {
  /**
   * Worked out when the server starts, from the program it runs: an upgrade in place replaces
   * the files under a running server, whose image must not then claim the new program's id.
   */
  private readonly code = codeId();

  /** The snapshot the file holds, when this process saved it: a stop with nothing new since writes nothing. */
  private saved: Snapshot | undefined;
  /** The save made while the server serves (keep()), under way. */
  private background: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** The removal of an outdated file (drop()), which a write waits for. */
  private removing: Promise<void> = Promise.resolve();
  /** No save while serving before this time (performance.now()): see keep(). */
  private notBefore = 0;

  /** What a save writes over (see drop()); a start clears what another process left (take()). */
  private readonly spare: string;

  constructor(private readonly file: string) {
    this.spare = tempPathOf(file, `${process.pid}.${PROCESS_TAG}.spare`);
  }

  /**
   * Keep an image of what `live` serves while the server runs, so a start after a kill -9
   * (or a crash, or an OOM kill) is as quick as one after a clean stop: saved once nothing
   * has changed for `quietMs` and no work is under way (`busy`), a chunk of files at a time
   * between requests (~0.8 s of CPU at 100k targets). The file only ever holds the snapshot
   * served: a change while it is written stops the save, and a change after it removes the
   * file (a branch moved away and back to the same commit is served with what it went
   * through, not as the image had it). Each save, finished or stopped, is followed by thirty
   * times its length without one, so a fleet that changes every few seconds spends a few
   * percent of a core on them at most.
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
        // Not saved (a change while it ran, a failed write): tried again once quiet, and not before notBefore.
        if (live.snapshot() !== this.saved) later(quietMs);
      });
    };
    live.subscribe(() => {
      // A save under way finds out itself (see saveWhileServing).
      if (!this.background) this.drop(options.logger);
      later(quietMs);
    });
    later(quietMs);
  }

  private async saveWhileServing(snapshot: Snapshot, served: () => boolean, options: KeepOptions): Promise<void> {
    const started = performance.now();
    // Checked after each chunk, and once more just before the file takes its name.
    const stillCurrent = () => {
      if (!served() || this.stopped) throw new Stale('the snapshot changed');
    };
    try {
      await this.write(snapshot, inSlices(imageChunks(snapshot, this.code), stillCurrent), stillCurrent);
    } catch (error) {
      if (!(error instanceof Stale)) options.logger.warn('saving the snapshot for the next start failed: tried again in a minute', { error: String(error) });
      this.notBefore = performance.now() + (error instanceof Stale ? 30 * (performance.now() - started) : (options.retryMs ?? 60_000));
      return;
    }
    const ms = performance.now() - started;
    this.notBefore = performance.now() + 30 * ms;
    // Changed after its last chunk (while it was flushed and renamed): no start may take it.
    if (!served()) return this.drop(options.logger);
    options.logger.info('saved the snapshot for a quick start after a crash or a kill', { head: snapshot.head!, ms: Math.round(ms) });
    if (!this.stopped) options.saved?.();
  }

  /**
   * The file this process saved no longer shows what is served: taken from its name (before
   * anything is written to it again), kept as the spare the next save writes over. Removed,
   * its 25 MB at 100k targets were given back on the registration's heels (~5 ms of CPU),
   * and taken anew by the save.
   */
  private drop(logger: Logger): void {
    if (!this.saved) return;
    this.saved = undefined;
    this.removing = fs.promises
      .rename(this.file, this.spare)
      .then(
        // Synced before a save writes over it: after a power cut the image's name must not hold a save half made (not synced: not written over).
        () => syncPath(fs, dirname(this.file)).catch(() => fs.promises.rm(this.spare, { force: true })),
        (error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? undefined : fs.promises.rm(this.file, { force: true })),
      )
      .catch((error: unknown) => logger.warn('removing the outdated restart image failed: a start at its commit would take it', { error: String(error) }));
  }

  /** No more saves while serving: the server stops (a save under way stops at its next chunk). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /**
   * Save the snapshot at close, once the writes are answered: a save under way in the
   * background is stopped first, and nothing is written when the file holds this snapshot.
   */
  async save(snapshot: Snapshot): Promise<void> {
    this.stop();
    await this.background;
    if (!snapshot.head || (snapshot === this.saved && fs.existsSync(this.file))) return;
    await this.write(snapshot, imageOf(snapshot, this.code));
  }

  private async write(snapshot: Snapshot, data: string | AsyncIterable<string>, beforeRename?: () => void): Promise<void> {
    await this.removing;
    await writeFileDurably(fs, this.file, data, true, 0o600, beforeRename, this.spare);
    this.saved = snapshot;
  }

  /**
   * The snapshot saved at `head` by this program, or why there is none to serve (undefined:
   * no image, or no head: the file is removed). The file is taken away from its name before
   * it is used: if it cannot be, it is not used.
   */
  take(head: string | null): { snapshot: Snapshot } | { reason: string } | undefined {
    // What a save cut short by a kill left (tens of MB at 100k targets).
    clearTempsOf(fs, this.file);
    // No commit to show (an empty branch): an image is of no use, and must not wait for the branch to come back to its commit.
    if (head === null) {
      fs.rm(this.file, { force: true }, () => undefined);
      return undefined;
    }
    let fd: number;
    try {
      fd = fs.openSync(this.file, 'r');
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === 'ENOENT' ? undefined : { reason: `it cannot be read (${(error as Error).message})` };
    }
    // Taken away from its name first (a rename: an unlink of its 25 MB at 100k targets held
    // the start ~20 ms), read from the open file, then removed in the background under a
    // temp name the next start clears if this one cannot.
    const taken = tempPathOf(this.file, 'taken');
    try {
      fs.renameSync(this.file, taken);
      return restoreImage(readLines(fd), head, this.code);
    } catch (error) {
      return { reason: error instanceof Error ? error.message : String(error) };
    } finally {
      fs.closeSync(fd);
      fs.rm(taken, { force: true }, () => undefined);
    }
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

/** The lines of a snapshot's image. */
export function imageOf(snapshot: Snapshot, code: string): string {
  return [...imageChunks(snapshot, code)].join('');
}

/** Files a chunk of imageChunks holds: ~5 ms of work at a time. */
const CHUNK_FILES = 1024;

/** The image's lines, CHUNK_FILES files' worth at a time, each made when asked for. */
function* imageChunks(snapshot: Snapshot, code: string): Generator<string> {
  const dictionary = new Dictionary();
  // The catalog state a server computes from the snapshot, carried: worked out again, it
  // looks claims up in the IP index, which a restart makes only once it serves.
  let lines: string[] = [`${JSON.stringify([FORMAT, code, snapshot.head, snapshot.files.size, savedStateOf(snapshot)])}\n`];
  // In path order: the catalog is made again in the order a build makes it. (The default
  // sort, by UTF-16 code units like `<`: 20-40 ms for 100k paths, a comparator 70-170.)
  const paths = [...snapshot.files.keys()].sort();
  for (let i = 0; i < paths.length; i++) {
    if (i % CHUNK_FILES === 0 && i > 0) {
      yield lines.join('');
      lines = [];
    }
    const path = paths[i]!;
    const record = snapshot.files.get(path)!;
    const parsed = record.parsed.entity?.kind === 'target' && !record.parsed.problems.length ? ['t', dictionary.refer(record.parsed.entity.value, lines)] : ['p', record.parsed];
    const lastGood = !record.lastGood ? 0 : record.lastGood === record.parsed.entity ? 1 : record.lastGood.kind === 'target' ? ['t', dictionary.refer(record.lastGood.value, lines)] : ['e', record.lastGood];
    const problems = snapshot.problemsByFile.get(path) ?? null;
    // The last good version's blob is most often the current one: 1.
    const lastGoodOid = record.lastGoodOid === undefined ? null : record.lastGoodOid === record.oid ? 1 : record.lastGoodOid;
    lines.push(`${JSON.stringify([path, record.oid, parsed, lastGood, lastGoodOid, record.text ?? null, problems, snapshot.rejected.has(path) ? 1 : 0])}\n`);
  }
  lines.push(`${JSON.stringify(['end', snapshot.files.size])}\n`);
  yield lines.join('');
}

/** The snapshot an image holds, or why it is not to be served (saved at another commit, by another program); throws on a line that does not read. */
export function restoreImage(lines: Iterable<string>, head: string, code: string): { snapshot: Snapshot } | { reason: string } {
  let header: unknown[] | undefined;
  let i = 0;
  const definitions = new Definitions();
  const files = new Map<string, FileRecord>();
  const problems = new Map<string, readonly Problem[]>();
  const rejected = new Map<string, true>();
  const unreadable = (what: string) => new Error(`the image ${what}`);
  for (const json of lines) {
    i++;
    const line = JSON.parse(json) as unknown[];
    if (!header) {
      header = line;
      const [format, savedBy, savedAt] = header;
      if (format !== FORMAT) return { reason: `it is of another format (${String(format)})` };
      if (savedBy !== code) return { reason: 'another build of the server saved it' };
      if (savedAt !== head) return { reason: `it shows commit ${String(savedAt)}, and the branch is at ${head}` };
      continue;
    }
    if (definitions.read(line)) continue;
    if (line[0] === 'end') {
      if (line[1] !== header[3] || files.size !== header[3]) throw unreadable('misses files');
      const state = header[4] as SavedCatalogState;
      if (typeof state?.last_good !== 'object' || !state.last_good || typeof state.established !== 'object' || !state.established || state.head !== head) throw unreadable('does not read at line 1');
      const snapshot = Snapshot.restore(head, files, problems, rejected);
      restoredState(snapshot, state);
      return { snapshot };
    }
    const [path, oid, parsedPart, lastGoodPart, lastGoodOidPart, text, fileProblems, contributesNothing] = line as [string, string | null, [string, unknown], unknown, string | 1 | null, string | null, Problem[] | null, number];
    const lastGoodOid = lastGoodOidPart === 1 ? oid : lastGoodOidPart;
    const parsed = parseOf(parsedPart, definitions);
    const lastGood = lastGoodPart === 0 ? undefined : lastGoodPart === 1 ? parsed.entity : entityOf(lastGoodPart as [string, unknown], definitions);
    if (typeof path !== 'string' || (lastGoodPart !== 0 && !lastGood)) throw unreadable(`does not read at line ${i}`);
    files.set(path, fileRecord({ oid, parsed, lastGood, lastGoodOid: lastGoodOid ?? undefined, text: text ?? undefined }));
    if (fileProblems) problems.set(path, Object.freeze(fileProblems));
    if (contributesNothing === 1) rejected.set(path, true);
  }
  throw unreadable('was cut short');
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
