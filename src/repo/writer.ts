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
  /**
   * A Git remote to publish every commit to before it is acknowledged. When the remote
   * refuses a push because another server pushed first, the batch's commit is undone, the
   * remote's commits are pulled, and the batch's closures run again on top of them (the
   * logical change is replayed, no merge): a token's max_uses holds across servers.
   */
  upstream?: { publish(): Promise<'pushed' | 'rejected'>; pull(): Promise<void> };
  /** A follower: refuse every write. */
  readOnly?: boolean;
}

const MAX_PUSH_ATTEMPTS = 8;

/**
 * The one way config changes: API writes, token-use counters and remote pulls all
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
    if (this.options.readOnly) return Promise.reject(new AamiError('read_only', 'this server follows its Git remote read-only: change the config on the primary or by pull request'));
    return new Promise((resolve, reject) => {
      this.waiting.push({ meta, plan, resolve: resolve as (value: unknown) => void, reject });
      void this.queue.add(() => this.runBatch());
    });
  }

  /** Run fn alone in the queue, between batches (a pull from the remote). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.add(fn) as Promise<T>;
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
    let batch = this.takeBatch();
    for (let attempt = 1; batch.length; attempt++) {
      const outcome = await this.commitBatch(batch);
      if (outcome.kind !== 'rejected') return;
      if (attempt >= MAX_PUSH_ATTEMPTS) {
        const error = new AamiError('remote_conflict', `the Git remote kept moving: gave up after ${attempt} attempts; try again`);
        for (const task of outcome.tasks) task.reject(error);
        return;
      }
      // Someone pushed first: take their commits, then replay these writes on top.
      try {
        await this.options.upstream!.pull();
      } catch (error) {
        for (const task of outcome.tasks) task.reject(error);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 20 * 2 ** Math.min(attempt, 5)));
      batch = outcome.tasks;
    }
  }

  /** Plan, commit and publish one batch; 'rejected' hands back the tasks to replay. */
  private async commitBatch(batch: Task[]): Promise<{ kind: 'done' } | { kind: 'rejected'; tasks: Task[] }> {
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
    if (!done.length) return { kind: 'done' };
    const undo = () => {
      for (const [path, text] of before) state.set(path, text);
    };

    let commit: string | null = null;
    const previous = this.store.head();
    try {
      if (changes.size) {
        const started = performance.now();
        commit = (await this.store.commit({ ...batchMeta(done.map((d) => ({ ...d.task.meta, message: d.message }))), changes: [...changes.values()] })).commit;
        this.options.observeCommit?.((performance.now() - started) / 1000, done.length);
      }
      if (commit && this.options.upstream && (await this.options.upstream.publish()) === 'rejected') {
        await this.store.moveTo(previous!, [...changes.keys()]);
        undo();
        return { kind: 'rejected', tasks: done.map((d) => d.task) };
      }
    } catch (error) {
      if (commit && this.store.head() === commit) await this.store.moveTo(previous!, [...changes.keys()]).catch(() => undefined);
      undo();
      for (const { task } of done) task.reject(error);
      return { kind: 'done' };
    }
    if (commit) this.sync.schedule();
    for (const { task, result } of done) task.resolve({ ...(result as object), commit: changes.size ? commit : null });
    return { kind: 'done' };
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
