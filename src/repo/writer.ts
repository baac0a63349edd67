import PQueue from 'p-queue';
import { formatProblem } from '../catalog/problem.js';
import type { CatalogState, Snapshot } from '../catalog/state.js';
import { problemsOfChange } from '../catalog/trial.js';
import type { SdSync } from '../compile/sd-sync.js';
import { AamiError } from '../errors.js';
import type { Change, CommitResult, GitStore } from './store.js';

export interface WriteMeta {
  message: string;
  author: { name: string; email: string };
  trailers?: Record<string, string>;
}

/** What an update closure decides: the files to change, and what to answer the caller. */
export interface Plan<T> {
  changes: Change[];
  result: T;
  /** Replaces the commit's message and author given to update(), when only the plan knows who and what. */
  meta?: WriteMeta;
}

/**
 * The one way config changes: API writes, token-use counters and (later) remote pulls all
 * queue here and run one at a time, because isomorphic-git has no cross-process locks and
 * no compare-and-swap on refs. A closure sees the catalog as of every earlier write and
 * either returns a plan or throws a coded error; nothing is committed in the second case,
 * nor when the plan would make a file of the repo invalid.
 */
export class Writer {
  private readonly queue = new PQueue({ concurrency: 1 });

  constructor(
    private readonly store: GitStore,
    private readonly sync: SdSync,
    private readonly observeCommit: (seconds: number) => void = () => {},
  ) {}

  get pending(): number {
    return this.queue.size + this.queue.pending;
  }

  update<T>(meta: WriteMeta, plan: (snapshot: Snapshot, files: CatalogState) => Plan<T>): Promise<T & { commit: string | null }> {
    return this.queue.add(async () => {
      const { changes, result, meta: planMeta } = plan(this.sync.snapshot(), this.sync.state);
      const problems = problemsOfChange(this.sync.state, changes);
      if (problems.length) {
        throw new AamiError('invalid_config', `the change would make the config repo invalid: ${problems.map(formatProblem).join('; ')}`, {
          problems,
        });
      }
      const started = performance.now();
      const committed: CommitResult = changes.length ? await this.store.commit({ ...(planMeta ?? meta), changes }) : { commit: null, head: this.store.head() ?? '' };
      if (committed.commit) this.observeCommit((performance.now() - started) / 1000);
      if (committed.commit) this.sync.apply(changes);
      return { ...result, commit: committed.commit };
    }) as Promise<T & { commit: string | null }>;
  }

  /** Wait until every queued write is committed. */
  async drain(): Promise<void> {
    await this.queue.onIdle();
  }
}
