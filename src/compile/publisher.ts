import { createHash } from 'node:crypto';
import { formatProblem } from '../catalog/problem.js';
import type { LiveCatalog, Snapshot } from '../catalog/live.js';
import { writeFileDurably, type Fs } from '../git/fs.js';
import type { Logger } from '../log.js';
import { CLOSE, Compiler, EMPTY, OPEN, type SdLayout } from './compiler.js';
import { READ_FILE_ONLY, SdOutput, SPARE_FROM } from './output.js';

export interface CompileStatus {
  /** When the SD files last matched the catalog; undefined before the first success. */
  lastSuccessAt?: Date;
  lastDurationMs?: number;
  lastError?: string;
  compiles: number;
}

export interface SdPublisherOptions {
  fs: Fs;
  sdDir: string;
  logger: Logger;
  /**
   * How long the first change after a quiet moment waits for others to come with it (default
   * 5 ms: the throttle below coalesces a burst; at 100k targets 20 ms was 40 % of the time a
   * registration took to reach the SD file).
   */
  debounceMs?: number;
  /**
   * Least time between the starts of two compiles while changes keep coming (default 250 ms;
   * the first change after a quiet moment is compiled at once, after `debounceMs`). One client
   * registering without a pause at 10k targets had the job's 3.7 MB file written and fsync'd
   * ~9 times a second, 33 MB/s on the disk Prometheus's own storage may share; Prometheus
   * hands new targets to its scrapers at most every 5 s whatever the files do. A compile also
   * waits ten times what the last one took, so compiling takes at most a tenth of the core
   * under a registration burst (a full compile at 10k targets is 50–100 ms: after every commit
   * it took a fifth of the busy core).
   */
  leastIntervalMs?: number;
  /** Most time between the starts of two compiles (default 750 ms), whatever the above: a registration reaches the SD files within a second. 0 turns the throttle off (tests). */
  maxIntervalMs?: number;
  observeCompile?: (seconds: number) => void;
  /** How soon a failed write of the SD files is tried again. */
  retryMs?: number;
  /** One file per job (default), or one per job and primary group. */
  layout?: SdLayout;
  /**
   * What identifies the SD output of a snapshot (its head, and the state that decided its
   * last good versions and clashes): files on disk stamped with the same identity are what a
   * compile would write, byte for byte.
   */
  identity?: (snapshot: Snapshot) => string;
  /** Milliseconds on a monotonic clock (tests move it). */
  now?: () => number;
}

/**
 * Keeps the SD directory in step with the live catalog: it subscribes to published
 * snapshots (only committed, acknowledged state ever reaches Prometheus) and compiles the
 * newest one on a throttled schedule. A failed write keeps the files as they were.
 */
export class SdPublisher {
  readonly status: CompileStatus = { compiles: 0 };
  private readonly output: SdOutput;
  private readonly compiler: Compiler;
  /** The SD files as Prometheus sees them, served again by http_sd: as the last compile wrote them, or as a restart read them back. */
  private written: ReadonlyMap<string, Buffer[]> | undefined;
  /**
   * The SD files a restart took as they are on disk, by name: read only when first served
   * (see lastOutput), and only until the first compile renames or removes one of them.
   */
  private onDisk: string[] | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastStart = 0;
  private running: Promise<void> = Promise.resolve();
  private inCompile = false;
  private changedDuringCompile = false;
  private closed = false;
  private waiters: Array<() => void> = [];
  private readonly now: () => number;
  private reported = new Set<string>();

  constructor(
    private readonly live: LiveCatalog,
    private readonly options: SdPublisherOptions,
  ) {
    this.now = options.now ?? (() => performance.now());
    this.output = new SdOutput(options.fs, options.sdDir, { spareFrom: SPARE_FROM, now: this.now });
    this.compiler = new Compiler(options.layout);
    live.subscribe(() => this.schedule());
  }

  /**
   * Start serving: with SD files on disk stamped for this very snapshot (a restart with
   * nothing changed), take them as they are and compile in the background — a fleet of
   * 100k targets is served without first rendering 200k entries again. Otherwise compile now.
   * The files taken are only listed here: the background compile reads each back to compare
   * it (output.ts), and http_sd reads them only if it is asked before that compile changes
   * one (lastOutput). Read here, their 71 MB (100k targets, group layout) cost a restart ~0.2 s.
   */
  async start(): Promise<void> {
    const snapshot = this.live.snapshot();
    const identity = this.options.identity?.(snapshot);
    const stamp = await this.options.fs.promises.readFile(this.stampFile, 'utf8').catch(() => undefined);
    let names =
      identity !== undefined && stamp?.startsWith(`${identity} `)
        ? await this.listOutput().catch((error: unknown) => {
            this.options.logger.info('sd files on disk are stamped for this snapshot but cannot be taken as they are: compiling them', { reason: error instanceof Error ? error.message : String(error) });
            return undefined;
          })
        : undefined;
    // A file gone since (or not a file any more), or one put there: http_sd would serve a job without it.
    if (names && stamp !== stampOf(identity!, names)) {
      this.options.logger.info('sd files on disk are not the ones stamped for this snapshot: compiling them');
      names = undefined;
    }
    if (!names) return this.compileNow();
    this.onDisk = names;
    this.status.lastSuccessAt = new Date();
    this.options.logger.info('sd files on disk are this snapshot\'s: serving them, compiling in the background', { files: names.length });
    this.schedule();
  }

  /**
   * The SD files as Prometheus sees them, for http_sd: the last compile's, or those a restart
   * took, read on the first call if it comes before the first compile changes any of them
   * (after that the directory may hold files of two snapshots: never served as one answer).
   * Undefined before the first compile, and from then until it has finished when the files
   * taken were not read in time or no longer read as they were stamped. A set read is
   * adopted by the SD writer: the compile does not read it back again.
   */
  get lastOutput(): ReadonlyMap<string, Buffer[]> | undefined {
    if (!this.written && this.onDisk) {
      const names = this.onDisk;
      this.onDisk = undefined;
      try {
        this.written = this.readOutput(names);
        this.output.adopt(this.written);
      } catch (error) {
        // Not what was stamped (a writer next to the server, a file gone): unhealthy until the compile has written them.
        this.status.lastSuccessAt = undefined;
        this.options.logger.warn('sd files on disk are not as stamped: http_sd and health answer once the compile has written them', { reason: error instanceof Error ? error.message : String(error) });
        this.schedule();
      }
    }
    return this.written;
  }

  private get stampFile(): string {
    // A dot name: outside Prometheus's *.json globs and the SD writer's clean-up.
    return `${this.options.sdDir}/.aami-sd-identity`;
  }

  /** The names of the SD files on disk (group shards one directory down). */
  private async listOutput(): Promise<string[]> {
    const { fs, sdDir } = this.options;
    const names: string[] = [];
    for (const entry of await fs.promises.readdir(sdDir, { withFileTypes: true })) {
      const name = String(entry.name);
      if (entry.isFile() && name.endsWith('.json')) names.push(name);
      if (entry.isDirectory()) {
        for (const inner of await fs.promises.readdir(`${sdDir}/${name}`, { withFileTypes: true })) if (inner.isFile() && String(inner.name).endsWith('.json')) names.push(`${name}/${String(inner.name)}`);
      }
    }
    if (!names.length) throw new Error('no SD files');
    return names;
  }

  /**
   * The SD files named, read into one buffer of their total size. Read one by one (2,000
   * shards of ~35 KB at 100k targets in the group layout), they came from the allocator's
   * heap between the slabs the background compile fills, and once that compile replaced them
   * they left ~75 MB of holes the process never gave back (RSS 370 MB settled, against 294
   * after a restart that compiled). One allocation is returned whole when the last part goes.
   * Synchronous: through promises, the round trips (open, read, stat, close for each of
   * 2,000 files) cost ~0.3 s, and what is read must be one set of files.
   */
  private readOutput(names: string[]): Map<string, Buffer[]> {
    const { fs, sdDir } = this.options;
    const sizes = names.map((name) => fs.lstatSync(`${sdDir}/${name}`).size); // a link's own size: it is not followed (READ_FILE_ONLY)
    const all = Buffer.allocUnsafeSlow(sizes.reduce((sum, size) => sum + size, 0));
    const files = new Map<string, Buffer[]>();
    for (let i = 0, at = 0; i < names.length; at += sizes[i]!, i++) {
      const bytes = all.subarray(at, at + sizes[i]!);
      const fd = fs.openSync(`${sdDir}/${names[i]}`, READ_FILE_ONLY);
      try {
        // A file that changed size since it was listed is not the one stamped; nor is anything but a file.
        const stat = fs.fstatSync(fd);
        if (!stat.isFile() || fs.readSync(fd, bytes, 0, bytes.length, 0) !== bytes.length || fs.fstatSync(fd).size !== bytes.length) throw new Error(`${names[i]} changed while it was read`);
      } finally {
        fs.closeSync(fd);
      }
      files.set(names[i]!, fileParts(bytes));
    }
    return files;
  }

  /** Resolves after the next compile has finished (tests await this instead of sleeping). */
  nextCompile(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  schedule(): void {
    // A compile already due takes this change too (it compiles the snapshot live when it
    // runs): moving it back on every change would let a steady stream of writes, each
    // within the debounce of the last, hold the SD files back for as long as it lasts.
    if (this.timer || this.closed) return;
    // Nor is one queued behind a compile under way: the changes made meanwhile get one compile
    // when it ends. Each had its own timer, none held back by the throttle (it counts from a
    // compile's start): during a whole-fleet compile at 100k targets (seconds, in slices,
    // registrations going on), one compile queued every 20 ms, run back to back after it.
    if (this.inCompile) {
      this.changedDuringCompile = true;
      return;
    }
    const debounce = this.options.debounceMs ?? 5;
    const interval = Math.min(this.options.maxIntervalMs ?? 750, Math.max(this.options.leastIntervalMs ?? 250, 10 * (this.status.lastDurationMs ?? 0)));
    const throttle = this.lastStart + interval - this.now();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.compileNow();
    }, Math.max(debounce, throttle));
  }

  async compileNow(): Promise<void> {
    this.running = this.running.then(() => this.runCompile(this.live.snapshot()));
    await this.running;
  }

  async close(): Promise<void> {
    // A compile under way ends first: what changed meanwhile is then due (a timer), and compiled now.
    await this.running;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
      await this.compileNow();
    }
    await this.running;
    // Nothing is compiled any more, a failed last write's retry included: the files keep what they have.
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.output.close();
  }

  /** Whether a compile runs now (its slices let requests in between). */
  get compiling(): boolean {
    return this.inCompile;
  }

  /**
   * Whether a compile runs or is due: a change waits for its timer. Not a failed write's
   * retry, which can be due for as long as the SD directory cannot be written.
   */
  get due(): boolean {
    return this.inCompile || (this.timer !== undefined && this.status.lastError === undefined);
  }

  private async runCompile(snapshot: Snapshot): Promise<void> {
    this.inCompile = true;
    const started = this.now();
    this.lastStart = started;
    this.reportProblems(snapshot);
    try {
      for (const _ of this.compiler.prepare(snapshot.catalog)) await new Promise(setImmediate);
      const files = this.compiler.compile(snapshot.catalog);
      // From its first rename the directory may hold two snapshots' files: the ones a restart took are not to be read any more.
      const result = await this.output.write(files, () => (this.onDisk = undefined));
      const identity = this.options.identity?.(snapshot);
      if (identity !== undefined) await writeFileDurably(this.options.fs, this.stampFile, stampOf(identity, files.keys()), false);
      this.written = files;
      this.onDisk = undefined;
      this.status.lastSuccessAt = new Date();
      this.status.lastError = undefined;
      if (result.written.length || result.removed.length) {
        this.options.logger.info('sd files updated', { written: result.written.join(',') || undefined, removed: result.removed.join(',') || undefined });
      }
    } catch (error) {
      this.status.lastError = error instanceof Error ? error.message : String(error);
      this.options.logger.error('writing sd files failed; they keep their last content, and the write is tried again', { error: this.status.lastError });
      // A full disk or a read-only moment clears by itself: try again without waiting for the next change.
      if (!this.timer && !this.closed) {
        this.timer = setTimeout(() => {
          this.timer = undefined;
          void this.compileNow();
        }, this.options.retryMs ?? 2000);
        this.timer.unref();
      }
    } finally {
      this.inCompile = false;
      this.status.lastDurationMs = this.now() - started;
      this.options.observeCompile?.(this.status.lastDurationMs / 1000);
      this.status.compiles++;
      for (const resolve of this.waiters.splice(0)) resolve();
      if (this.changedDuringCompile) {
        this.changedDuringCompile = false;
        this.schedule();
      }
    }
  }

  /** Log each problem once, when it appears, not on every compile (and at most 20 a time). */
  private reportProblems(snapshot: Snapshot): void {
    const now = new Set<string>();
    let logged = 0;
    for (const problems of snapshot.problemsByFile.values()) {
      for (const problem of problems.slice(0, 5)) {
        const line = formatProblem(problem);
        now.add(line);
        if (!this.reported.has(line) && logged++ < 20) this.options.logger.warn('invalid config file, keeping its last good version (a credential or token: none, it lets nobody in)', { problem: line });
      }
    }
    this.reported = now;
  }
}

/** What the stamp says: the snapshot's identity, and a digest of the SD files' names. */
function stampOf(identity: string, names: Iterable<string>): string {
  return `${identity} ${createHash('sha256').update([...names].sort().join('\n')).digest('hex')}`;
}

/**
 * A file on disk in the parts a compile gives (http_sd joins files by them):
 * [OPEN, entries, CLOSE] or [EMPTY]. Anything else is not a file this server wrote.
 */
function fileParts(bytes: Buffer): Buffer[] {
  if (bytes.equals(EMPTY)) return [EMPTY];
  const inner = bytes.length > OPEN.length + CLOSE.length ? bytes.subarray(OPEN.length, bytes.length - CLOSE.length) : undefined;
  if (!inner || !bytes.subarray(0, OPEN.length).equals(OPEN) || !bytes.subarray(bytes.length - CLOSE.length).equals(CLOSE)) throw new Error('an SD file not in the compiler\'s format');
  return [OPEN, inner, CLOSE];
}
