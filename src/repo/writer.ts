import PQueue from 'p-queue';
import { formatProblem } from '../catalog/problem.js';
import type { CatalogState, Snapshot } from '../catalog/state.js';
import { parseChanges, problemsOfChange } from '../catalog/trial.js';
import type { SdSync } from '../compile/sd-sync.js';
import { AamiError } from '../errors.js';
import type { Author, Change, GitStore } from './store.js';

export interface WriteMeta {
  message: string;
  author: Author;
  /** Git trailers, e.g. ["Source-Address", "10.0.0.7"]; a key may repeat. */
  trailers?: Array<[string, string]>;
}

/** What an update closure decides: the files to change, and what to answer the caller. */
export interface Plan<T> {
  changes: Change[];
  result: T;
  /** Replaces the message given to update(), when only the plan knows what it did. */
  message?: string;
}

interface Task {
  meta: WriteMeta;
  plan: (snapshot: Snapshot, files: CatalogState) => Plan<unknown>;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

export interface WriterOptions {
  observeCommit?: (seconds: number, changes: number) => void;
  /** Most writes of one author that share a commit. */
  maxBatch?: number;
  /**
   * How long a batch waits for more writes before it starts. Without it, the first write
   * to arrive after a commit goes alone and the rest of the burst waits a whole commit.
   */
  lingerMs?: number;
}

/**
 * The one way config changes: API writes, token-use counters and (later) remote pulls all
 * queue here and run one at a time, because isomorphic-git has no cross-process locks and
 * no compare-and-swap on refs. A closure sees the catalog as of every earlier write and
 * either returns a plan or throws a coded error; nothing is committed for it in the second
 * case, nor when its plan would make a file of the repo invalid.
 *
 * Group commit: writes by the same author that queue up while a commit is on disk go into
 * the next commit together, each closure still seeing the ones before it. A burst of 64
 * nodes enrolling with one token makes a few commits, not 64 fsync'd ones in a row; every
 * change stays in exactly one commit whose author is the one who made it, and whose message
 * lists each change. No write is acknowledged before its commit is durable.
 */
export class Writer {
  private readonly queue = new PQueue({ concurrency: 1 });
  private readonly waiting: Task[] = [];

  constructor(
    private readonly store: GitStore,
    private readonly sync: SdSync,
    private readonly options: WriterOptions = {},
  ) {}

  get pending(): number {
    return this.waiting.length + this.queue.pending;
  }

  update<T>(meta: WriteMeta, plan: (snapshot: Snapshot, files: CatalogState) => Plan<T>): Promise<T & { commit: string | null }> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ meta, plan, resolve: resolve as (value: unknown) => void, reject });
      void this.queue.add(() => this.runBatch());
    });
  }

  /** Wait until every queued write is committed. */
  async drain(): Promise<void> {
    await this.queue.onIdle();
  }

  private takeBatch(): Task[] {
    const first = this.waiting.shift();
    if (!first) return [];
    const batch = [first];
    const max = this.options.maxBatch ?? 100;
    while (batch.length < max && this.waiting[0]?.meta.author.name === first.meta.author.name) batch.push(this.waiting.shift()!);
    return batch;
  }

  private async runBatch(): Promise<void> {
    if (!this.waiting.length) return;
    const linger = this.options.lingerMs ?? 2;
    if (linger > 0 && this.waiting.length < (this.options.maxBatch ?? 100)) await new Promise((resolve) => setTimeout(resolve, linger));
    const batch = this.takeBatch();
    if (!batch.length) return;
    const state = this.sync.state;
    const before = new Map<string, string | null>(); // to undo the batch if its commit fails
    const changes = new Map<string, Change>();
    const done: Array<{ task: Task; result: unknown; message: string }> = [];

    for (const task of batch) {
      try {
        const plan = task.plan(state.snapshot(), state);
        const parsed = parseChanges(plan.changes);
        const problems = problemsOfChange(state, plan.changes, parsed);
        if (problems.length) {
          throw new AamiError('invalid_config', `the change would make the config repo invalid: ${problems.map(formatProblem).join('; ')}`, { problems });
        }
        // Applied at once so the next closure in the batch sees it; undone if the commit fails.
        for (const change of plan.changes) {
          if (!before.has(change.path)) before.set(change.path, state.text(change.path) ?? null);
          state.set(change.path, change.content, parsed.get(change.path));
          changes.set(change.path, change);
        }
        done.push({ task, result: plan.result, message: plan.message ?? task.meta.message });
      } catch (error) {
        task.reject(error);
      }
    }
    if (!done.length) return;

    let commit: string | null = null;
    try {
      if (changes.size) {
        const started = performance.now();
        commit = (await this.store.commit({ ...batchMeta(done.map((d) => ({ ...d.task.meta, message: d.message }))), changes: [...changes.values()] })).commit;
        this.options.observeCommit?.((performance.now() - started) / 1000, done.length);
      }
    } catch (error) {
      for (const [path, text] of before) state.set(path, text);
      for (const { task } of done) task.reject(error);
      return;
    }
    if (commit) this.sync.schedule();
    for (const { task, result } of done) task.resolve({ ...(result as object), commit: changes.size ? commit : null });
  }
}

/** One commit for several writes of one author: the first message as subject, every message in the body. */
function batchMeta(metas: WriteMeta[]): WriteMeta {
  if (metas.length === 1) return metas[0]!;
  const addresses = [...new Set(metas.flatMap((m) => m.trailers ?? []).filter(([key]) => key === 'Source-Address').map(([, value]) => value))];
  return {
    author: metas[0]!.author,
    message: `${metas[0]!.message} and ${metas.length - 1} more\n\n${metas.map((m) => `- ${m.message}`).join('\n')}\n`,
    trailers: addresses.map((address) => ['Source-Address', address]),
  };
}
