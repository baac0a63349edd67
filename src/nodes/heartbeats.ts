import type { Fs } from '../git/fs.js';
import { writeFileDurably } from '../git/fs.js';

const JOURNAL = 100_000;

/**
 * When each node last reported in. A runtime observation, not config: it never becomes a
 * commit. Kept in memory and saved to the state directory now and then, so a restart
 * does not make every node look silent.
 */
/** The furthest time from 1970 a Date holds, in ms. */
const MAX_TIME = 8.64e15;

export class Heartbeats {
  private readonly seen = new Map<string, number>();
  /** Goes up with every change, so a reader can tell that nothing changed since it last looked. */
  private changes = 0;
  /** The host names of the latest changes, oldest first: journal[i] is change number journalStart + i + 1. */
  private journal: string[] = [];
  private journalStart = 0;
  private dirty = false;
  private timer: NodeJS.Timeout | undefined;
  /** The server stops: the last save is its own, and a failed one is not tried again (the directory may be another server's by then). */
  private stopped = false;

  constructor(
    private readonly fs: Fs,
    private readonly file: string,
    private readonly now: () => number = Date.now,
    private readonly saveEveryMs = 10_000,
    /** A save now and then failed (a full disk, a read-only state directory): it is tried again later. */
    private readonly onSaveError: (error: unknown) => void = () => undefined,
  ) {}

  async load(): Promise<void> {
    try {
      const saved = JSON.parse(await this.fs.promises.readFile(this.file, 'utf8')) as Record<string, number>;
      // A time a Date can hold only (±8.64e15 ms): a hand-edited 1e999 would make every view of the host throw.
      for (const [hostname, at] of Object.entries(saved)) if (typeof at === 'number' && Math.abs(at) <= MAX_TIME) this.seen.set(hostname, at);
    } catch {
      // first start, or an unreadable file: start empty
    }
  }

  record(hostname: string): Date {
    const at = this.now();
    this.seen.set(hostname, at);
    this.changed(hostname);
    this.markDirty();
    return new Date(at);
  }

  private markDirty(): void {
    this.dirty = true;
    if (this.stopped) return;
    // A failed save must not end the process (an unhandled rejection would): it is reported and tried again.
    this.timer ??= setTimeout(() => this.save().catch(this.onSaveError), this.saveEveryMs);
    this.timer.unref?.();
  }

  /** A target that is gone takes its heartbeat with it: no series and no staleness for it any more. */
  forget(hostname: string): void {
    if (this.seen.delete(hostname)) {
      this.changed(hostname);
      this.markDirty();
    }
  }

  /** Forget every node that is no longer a target (deleted by pull request, say). */
  retain(isTarget: (hostname: string) => boolean): void {
    for (const hostname of this.seen.keys()) if (!isTarget(hostname)) this.forget(hostname);
  }

  lastSeen(hostname: string): Date | undefined {
    const at = this.seen.get(hostname);
    return at === undefined ? undefined : new Date(at);
  }

  /** The last heartbeat in ms since the epoch, without a Date per call (lists of 100k targets). */
  lastSeenMs(hostname: string): number | undefined {
    return this.seen.get(hostname);
  }

  get version(): number {
    return this.changes;
  }

  /**
   * The hosts whose heartbeat changed after change number `version`, or undefined when the
   * journal no longer reaches back that far (then any may have).
   */
  changedSince(version: number): string[] | undefined {
    if (version < this.journalStart) return undefined;
    return this.journal.slice(version - this.journalStart);
  }

  private changed(hostname: string): void {
    this.changes++;
    this.journal.push(hostname);
    // Bounded: a reader that falls this far behind compares everything instead.
    if (this.journal.length > JOURNAL) {
      this.journal = this.journal.slice(JOURNAL / 2);
      this.journalStart = this.changes - this.journal.length;
    }
  }

  entries(): IterableIterator<[string, number]> {
    return this.seen.entries();
  }

  /** Save what is not saved yet, for the last time. */
  async close(): Promise<void> {
    this.stopped = true;
    await this.save();
  }

  async save(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.dirty) return;
    this.dirty = false;
    try {
      await this.fs.promises.mkdir(this.file.slice(0, this.file.lastIndexOf('/')), { recursive: true });
      await writeFileDurably(this.fs, this.file, JSON.stringify(Object.fromEntries(this.seen)));
    } catch (error) {
      this.markDirty(); // not saved: the next try writes what is known then
      throw error;
    }
  }
}
