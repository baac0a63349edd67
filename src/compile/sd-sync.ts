import { readConfigFiles } from '../catalog/load.js';
import { formatProblem, type Problem } from '../catalog/problem.js';
import { CatalogState, type Snapshot } from '../catalog/state.js';
import type { Logger } from '../log.js';
import type { Fs } from '../repo/fs.js';
import { Compiler } from './compiler.js';
import { SdOutput } from './output.js';

export interface CompileStatus {
  /** When the SD files last matched the catalog; undefined before the first success. */
  lastSuccessAt?: Date;
  lastDurationMs?: number;
  lastError?: string;
  compiles: number;
}

export interface SdSyncOptions {
  fs: Fs;
  repoDir: string;
  sdDir: string;
  logger: Logger;
  /** Coalesces a burst of changes into one compile. */
  debounceMs?: number;
  /**
   * Least time between two compiles started by writes (default 750 ms): under a
   * registration burst a compile at 10k targets (~50 ms) would otherwise run after every
   * commit. At 500 ms compiling took a fifth of the server's one busy core; 750 ms still
   * gets a registration into the SD files within a second.
   */
  minIntervalMs?: number;
  observeCompile?: (seconds: number) => void;
}

/**
 * Keeps the SD directory in step with the catalog: files change (from the writer or the
 * watcher), the catalog is rebuilt from what is already parsed, and a compile is scheduled.
 */
export class SdSync {
  readonly state = new CatalogState();
  readonly status: CompileStatus = { compiles: 0 };
  private readonly output: SdOutput;
  readonly compiler = new Compiler();
  /** The SD files as last written: what Prometheus sees, served again by http_sd. */
  lastOutput: Map<string, Buffer[]> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastStart = 0;
  private running: Promise<void> = Promise.resolve();
  private waiters: Array<() => void> = [];
  private reported = new Set<string>();

  constructor(private readonly options: SdSyncOptions) {
    this.output = new SdOutput(options.fs, options.sdDir);
  }

  /**
   * Read the whole working tree and compile once. `history` gives older versions of a file;
   * a file that is broken at start is served at the newest of them that passes its own checks, as it
   * would have been had the server been running when it broke.
   */
  async loadAll(history?: (path: string) => Promise<string[]>): Promise<void> {
    const files = readConfigFiles(this.options.fs, this.options.repoDir);
    for (const [path, text] of files) this.state.set(path, text);
    for (const path of [...this.state.paths()]) if (!files.has(path)) this.state.set(path, null);
    if (history) {
      const broken = new Set(this.state.snapshot().problems.map((p) => p.file));
      for (const path of broken) {
        for (const text of await history(path)) if (text !== this.state.text(path) && this.state.recallLastGood(path, text)) break;
      }
    }
    await this.compileNow();
  }

  /**
   * Re-read these paths from the working tree (a watcher event); missing files count as
   * deleted, and "dir/" stands for every known file below dir.
   */
  async reload(paths: Iterable<string>): Promise<void> {
    const known = [...this.state.paths()];
    const expanded = new Set([...paths].flatMap((path) => (path.endsWith('/') ? known.filter((k) => k.startsWith(path)) : [path])));
    let changed = false;
    for (const path of expanded) {
      const text = await this.options.fs.promises.readFile(`${this.options.repoDir}/${path}`, 'utf8').catch(() => null);
      changed = this.state.set(path, text) || changed;
    }
    // The watcher already waited for the burst to end: compile now.
    if (changed) await this.compileNow();
  }

  /**
   * Apply file contents just committed (or pulled); visible to snapshot() at once. Writes
   * come in bursts and compile on the throttled schedule; a pull (`now`) compiles at once.
   */
  apply(changes: Array<{ path: string; content: string | null }>, now = false): void {
    let changed = false;
    for (const { path, content } of changes) changed = this.state.set(path, content) || changed;
    if (!changed) return;
    if (!now) return this.schedule();
    clearTimeout(this.timer);
    this.timer = undefined;
    void this.compileNow();
  }

  snapshot(): Snapshot {
    return this.state.snapshot();
  }

  /** Resolves after the next compile has finished (tests await this instead of sleeping). */
  nextCompile(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  schedule(): void {
    clearTimeout(this.timer);
    const debounce = this.options.debounceMs ?? 20;
    const throttle = this.lastStart + (this.options.minIntervalMs ?? 750) - performance.now();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.compileNow();
    }, Math.max(debounce, throttle));
  }

  async compileNow(): Promise<void> {
    this.running = this.running.then(() => this.runCompile());
    await this.running;
  }

  async close(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
      await this.compileNow();
    }
    await this.running;
  }

  private async runCompile(): Promise<void> {
    const started = performance.now();
    this.lastStart = started;
    const { catalog, problems } = this.state.snapshot();
    this.reportProblems(problems);
    try {
      const files = this.compiler.compile(catalog);
      const result = await this.output.write(files);
      this.lastOutput = files;
      this.status.lastSuccessAt = new Date();
      this.status.lastError = undefined;
      if (result.written.length || result.removed.length) {
        this.options.logger.info('sd files updated', { written: result.written.join(',') || undefined, removed: result.removed.join(',') || undefined });
      }
    } catch (error) {
      this.status.lastError = error instanceof Error ? error.message : String(error);
      this.options.logger.error('writing sd files failed', { error: this.status.lastError });
    } finally {
      this.status.lastDurationMs = performance.now() - started;
      this.options.observeCompile?.(this.status.lastDurationMs / 1000);
      this.status.compiles++;
      for (const resolve of this.waiters.splice(0)) resolve();
    }
  }

  /** Log each problem once, when it appears, not on every compile. */
  private reportProblems(problems: Problem[]): void {
    const now = new Set(problems.map(formatProblem));
    for (const line of now) if (!this.reported.has(line)) this.options.logger.warn('invalid config file, keeping its last good version', { problem: line });
    this.reported = now;
  }
}
