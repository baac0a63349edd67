import PQueue from 'p-queue';
import type { Catalog } from '../catalog/build.js';
import type { Draft, FileUpdate, LiveCatalog } from '../catalog/live.js';
import { parseFile } from '../catalog/parse.js';
import { formatProblem, type Problem } from '../catalog/problem.js';
import { AamiError } from '../errors.js';
import { hashObject } from '../git/objects.js';
import type { Author, Change, GitRepository } from '../git/repository.js';
import type { Logger } from '../log.js';

export interface WriteMeta {
  message: string;
  author: Author;
  /** Git trailers, e.g. ["Source-Address", "10.0.0.7"]; a key may repeat. */
  trailers?: Array<[string, string]>;
}

/** What a plan reads: the catalog as of every earlier write, and the text of files with comments. */
export interface PlanView {
  catalog: Catalog;
}
export interface PlanFiles {
  text(path: string): string | undefined;
  /** Whether the file is in the repository, served or not (a broken one is). */
  present(path: string): boolean;
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
  plan: (view: PlanView, files: PlanFiles) => Plan<unknown>;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/** Where a commit goes before it is acknowledged, when the server follows a Git remote. */
export interface Publisher {
  /** Push the commit as the branch's new tip: 'rejected' when the remote moved on. */
  push(commit: string): Promise<'pushed' | 'rejected'>;
  /** Bring the local branch to the remote's tip (and the catalog with it). */
  pull(): Promise<void>;
}

export interface WriterOptions {
  observeCommit?: (seconds: number, changes: number) => void;
  /** A batch is replayed: the local branch moved under it (`moved`) or the remote refused its push (`rejected`). */
  observeReplay?: (reason: 'moved' | 'rejected') => void;
  /** Most writes of one author that share a commit. */
  maxBatch?: number;
  /**
   * How long a batch waits for more writes before it starts. Without it, the first write
   * to arrive after a commit goes alone and the rest of the burst waits a whole commit.
   */
  lingerMs?: number;
  /** A follower: refuse every write. */
  readOnly?: boolean;
  logger?: Logger;
}

const MAX_ATTEMPTS = 8;

/**
 * The one way config changes. API writes, token-use counters, followed heads and pulls all
 * queue here and run one at a time. A write is a closure that sees the catalog as of every
 * earlier write and returns the files to change, or throws a coded error.
 *
 * plan → check → commit → publish → swap: each write's files are applied to a draft of the
 * next snapshot and checked by exactly the rules of a full build (a write that would make
 * a file invalid is refused alone); the batch becomes one commit, durable on disk; with a
 * remote it is pushed; the branch moves by compare-and-swap; only then does the draft
 * become the live snapshot and are the writes answered. If the swap or the push finds the
 * branch moved (a person pushed into this repository, another server pushed to the remote),
 * the new head is followed and the same writes are planned again on top of it: the logical
 * change is replayed, never merged, never forced.
 *
 * Group commit: writes by the same author that queue up while a commit is on disk go into
 * the next commit together; every change stays in exactly one commit whose author is the one
 * who made it and whose message lists each change.
 */
export class Writer {
  private readonly queue = new PQueue({ concurrency: 1 });
  private readonly waiting: Task[] = [];
  /** The last write failure for a reason of the store (a full disk, a repository gone): health shows it. */
  lastFailure: { at: Date; code: string; message: string } | undefined;

  private readonly idleListeners: Array<(wrote: boolean) => void> = [];
  /** A batch of writes ran since the queue last ran dry. */
  private wrote = false;

  constructor(
    private readonly repo: GitRepository,
    private readonly live: LiveCatalog,
    /** Brings the live catalog to the repository's branch head; resolves whether it moved. */
    private readonly follow: () => Promise<boolean>,
    private readonly options: WriterOptions & { publisher?: Publisher } = {},
  ) {
    this.queue.on('idle', () => {
      const wrote = this.wrote;
      this.wrote = false;
      for (const listener of this.idleListeners) listener(wrote);
    });
  }

  /** Writes waiting and work queued (pulls, follows), and what runs now. */
  get pending(): number {
    return Math.max(this.waiting.length, this.queue.size) + this.queue.pending;
  }

  update<T>(meta: WriteMeta, plan: (view: PlanView, files: PlanFiles) => Plan<T>): Promise<T & { commit: string | null }> {
    if (this.options.readOnly) return Promise.reject(new AamiError('read_only', 'this server follows its Git remote read-only: change the config on the primary or by pull request'));
    return new Promise((resolve, reject) => {
      this.waiting.push({ meta, plan: plan as Task['plan'], resolve: resolve as (value: unknown) => void, reject });
      void this.queue.add(() => this.runBatch());
    });
  }

  /** A fault cleared (the repository is readable, the remote answers): failures it caused are over. */
  faultCleared(codes: string[]): void {
    if (this.lastFailure && codes.includes(this.lastFailure.code)) this.lastFailure = undefined;
  }

  /** Run fn alone in the queue, between batches (following a head, a pull). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.add(fn) as Promise<T>;
  }

  /**
   * Calls `listener` each time the queue runs dry (no write waits and nothing runs: pending is
   * 0), with whether a batch of writes ran since it last did (not only a follow of the head,
   * which the ref watcher queues every second).
   */
  onIdle(listener: (wrote: boolean) => void): void {
    this.idleListeners.push(listener);
  }

  /** Wait until every queued write is answered. */
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
    this.wrote = true;
    const linger = this.options.lingerMs ?? 2;
    if (linger > 0 && this.waiting.length < (this.options.maxBatch ?? 100)) await new Promise((resolve) => setTimeout(resolve, linger));
    let batch = this.takeBatch();
    for (let attempt = 1; batch.length; attempt++) {
      let outcome: Outcome;
      try {
        // Someone may have pushed into the repository since the last batch: plan on their commit.
        await this.follow();
        outcome = await this.commitBatch(batch);
      } catch (error) {
        const failure = storeFailure(error);
        this.lastFailure = { at: new Date(), code: failure.code, message: failure.message };
        this.options.logger?.error('write failed', { code: failure.code, error: failure.message });
        for (const task of batch) task.reject(failure);
        return;
      }
      if (outcome.kind === 'done') return;
      if (attempt >= MAX_ATTEMPTS) {
        const error = new AamiError('remote_conflict', `the branch kept moving under this write: gave up after ${attempt} attempts; try again`);
        for (const task of outcome.tasks) task.reject(error);
        return;
      }
      this.options.logger?.warn('branch moved under a write: replaying it on the new head', { reason: outcome.kind, attempt, writes: outcome.tasks.length });
      this.options.observeReplay?.(outcome.kind);
      try {
        if (outcome.kind === 'rejected') await this.options.publisher!.pull();
      } catch (error) {
        for (const task of outcome.tasks) task.reject(error);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 20 * 2 ** Math.min(attempt, 5)));
      batch = outcome.tasks;
    }
  }

  /** Plan, commit, push and swap one batch; 'moved' or 'rejected' hands back the tasks to replay. */
  private async commitBatch(batch: Task[]): Promise<Outcome> {
    const base = this.live.snapshot();
    const draft = this.live.draft();
    const changes = new Map<string, Change>();
    const done: Array<{ task: Task; result: unknown; message: string }> = [];
    for (const task of batch) {
      try {
        const plan = task.plan(draft, draft);
        checkWrite(draft, plan.changes);
        for (const change of plan.changes) changes.set(change.path, change);
        done.push({ task, result: plan.result, message: plan.message ?? task.meta.message });
      } catch (error) {
        task.reject(error);
      }
    }
    if (!done.length) return { kind: 'done' };
    const answer = (commit: string | null) => {
      this.lastFailure = undefined;
      for (const { task, result } of done) task.resolve({ ...(result as object), commit });
    };
    const started = performance.now();
    const commit = changes.size ? await this.repo.writeCommit(base.head, { ...batchMeta(done.map((d) => ({ ...d.task.meta, message: d.message }))), changes: [...changes.values()] }) : null;
    if (!commit) {
      answer(null);
      return { kind: 'done' };
    }
    const tasks = done.map((d) => d.task);
    const publisher = this.options.publisher;
    if (!publisher) {
      const swapped = await this.repo.swap(base.head, commit);
      if (swapped.kind === 'moved') return { kind: 'moved', tasks };
      if (swapped.kind === 'locked') {
        throw new AamiError('repo_locked', `the branch is locked by another Git process since ${swapped.since.toISOString()} (${this.repo.gitdir}/${this.repo.ref}.lock); a lock older than two minutes is removed by itself`);
      }
    } else {
      if ((await publisher.push(commit)) === 'rejected') return { kind: 'rejected', tasks };
      // Pushed: the commit is on the remote, the source of truth, whatever happens to the
      // local branch now. If it cannot move (a lock held by `git gc`, a full disk), the writes
      // are still answered as done, and the next pull fast-forwards to them.
      if (!(await this.swapAfterPush(base.head, commit))) {
        this.options.logger?.warn('pushed, but the local branch could not move yet: pulling it from the remote next', { commit });
        void this.exclusive(() => publisher.pull()).catch(() => undefined);
        answer(commit);
        return { kind: 'done' };
      }
    }
    this.options.observeCommit?.((performance.now() - started) / 1000, done.length);
    this.live.publish(draft.freeze(commit));
    answer(commit);
    return { kind: 'done' };
  }

  /** Move the local branch to a pushed commit, waiting a little for a lock (as git's core.filesRefLockTimeout does). */
  private async swapAfterPush(parent: string | null, commit: string): Promise<boolean> {
    for (let attempt = 0; attempt < 50; attempt++) {
      const swapped = await this.repo.swap(parent, commit).catch(() => undefined);
      if (swapped?.kind === 'swapped') return true;
      if (swapped?.kind === 'moved') return false;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return false;
  }
}

type Outcome = { kind: 'done' } | { kind: 'moved' | 'rejected'; tasks: Task[] };

/**
 * Apply a write's files to the draft, checked by the rules of a full build; a write that
 * would make any file invalid is taken back and refused with the problems it brings.
 */
function checkWrite(draft: Draft, changes: Change[]): void {
  const updates: FileUpdate[] = changes.map(({ path, content }) => {
    if (content === null) return { path, oid: null };
    const oid = hashObject('blob', Buffer.from(content)).oid;
    return { path, oid, parsed: parseFile(path, content), ...(content.includes('#') ? { text: content } : {}) };
  });
  const applied = draft.apply(updates);
  if (!applied.problems.length) return;
  applied.undo();
  const said = (problems: Problem[], more?: string) => {
    const shown = problems.slice(0, 10);
    const parts = [...shown.map(formatProblem), ...(problems.length > 10 ? [`… (${problems.length} problems)`] : []), ...(more ? [more] : [])];
    return { message: `the change would make the config repo invalid: ${parts.join('; ')}`, details: { problems: shown } };
  };
  const whole = said(applied.problems);
  // Problems on files the change does not touch name them (another host's file): a node or a token is told they are there, not what.
  const touched = new Set(changes.map((c) => c.path));
  const own = applied.problems.filter((p) => touched.has(p.file));
  const others = applied.problems.length - own.length;
  const toAnyone = others ? said(own, `${others} problem${others === 1 ? '' : 's'} on other files it does not change (the request's line in the server log names them)`) : undefined;
  throw new AamiError('invalid_config', whole.message, whole.details, toAnyone);
}

/** A failure of the store itself (disk full, read-only, repository gone) as a coded 503; coded errors pass through. */
function storeFailure(error: unknown): AamiError {
  if (error instanceof AamiError) return error;
  const code = (error as NodeJS.ErrnoException).code;
  const message = error instanceof Error ? error.message : String(error);
  if (code === 'ENOENT' || /not a git repository|cannot read|No such file/i.test(message)) {
    return new AamiError('repo_unavailable', `the config repository cannot be read or written: ${message}`);
  }
  return new AamiError('storage_unavailable', `the config repository could not be written (${code ?? 'error'}): ${message}; nothing was committed`);
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
