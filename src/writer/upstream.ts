import { AamiError } from '../errors.js';
import type { GitRepository } from '../git/repository.js';
import type { Remote } from '../git/remote.js';
import type { Logger } from '../log.js';
import type { Publisher } from './writer.js';

export interface RemoteStatus {
  url: string;
  branch: string;
  last_sync_at: string | null;
  remote_head: string | null;
  error: string | null;
  last_push: { at: string; outcome: 'pushed' | 'rejected' | 'failed'; reason?: string } | null;
  pushes_rejected: number;
}

/**
 * Keeps the local branch in step with a Git remote: pulls by fast-forward (merged pull
 * requests, other servers' commits) and publishes every commit before it is acknowledged.
 * The order is push, then move the local branch: a server killed between the two finds the
 * remote ahead at start and fast-forwards; it never holds a commit the remote lacks.
 * Runs inside the writer queue, so a pull never interleaves with a commit.
 */
export class Upstream implements Publisher {
  readonly status: RemoteStatus;
  /** The remote tip we last followed or pushed: a tip that does not descend from it means history was rewritten. */
  private followed: string | null = null;

  constructor(
    private readonly remote: Remote,
    private readonly repo: GitRepository,
    /** Bring the live catalog to the local branch after it moved. */
    private readonly follow: () => Promise<boolean>,
    private readonly logger: Logger,
    private readonly options: { publish: boolean; now?: () => Date } = { publish: true },
  ) {
    this.status = { url: remote.url, branch: remote.branch, last_sync_at: null, remote_head: null, error: null, last_push: null, pushes_rejected: 0 };
  }

  /**
   * Fetch, and fast-forward to the remote tip when it moved. The status's error is worked
   * out afresh on every pull: a rewritten or diverged branch stays reported while it lasts.
   */
  async pull(): Promise<void> {
    try {
      const tip = await this.remote.fetch();
      this.status.remote_head = tip;
      const head = await this.repo.head();
      let problem: string | null = null;
      if (!tip) {
        if (head && this.options.publish) await this.pushHead(head);
      } else if (tip !== head) {
        problem = await this.moveTo(tip, head);
      } else {
        this.followed = tip;
      }
      this.status.last_sync_at = (this.options.now ?? (() => new Date()))().toISOString();
      this.status.error = problem;
    } catch (error) {
      this.status.error = error instanceof Error ? error.message : String(error);
      this.logger.warn('git sync failed', { error: this.status.error });
      throw error;
    }
  }

  /** Move to the remote tip if that is a fast-forward; otherwise say why not. */
  private async moveTo(tip: string, head: string | null): Promise<string | null> {
    if (this.followed && this.followed !== tip && !(await this.repo.isAncestor(this.followed, tip))) {
      this.logger.error('remote history rewritten', { followed: this.followed, remote_head: tip });
      return `refusing to follow the remote: its branch was rewritten (${this.followed.slice(0, 12)} is no longer an ancestor of ${tip.slice(0, 12)}); local head kept`;
    }
    if (!head || (await this.repo.isAncestor(head, tip))) {
      const swapped = await this.repo.swap(head, tip);
      if (swapped.kind !== 'swapped') return `cannot move the local branch to the remote's tip: it is ${swapped.kind}`;
      await this.follow();
      this.followed = tip;
      this.logger.info('pulled', { head: tip });
      return null;
    }
    if (await this.repo.isAncestor(tip, head)) {
      if (this.options.publish) await this.pushHead(head);
      return null;
    }
    this.logger.error('diverged from the remote', { head, remote_head: tip });
    return `local branch and remote have diverged (local ${head.slice(0, 12)}, remote ${tip.slice(0, 12)})`;
  }

  private async pushHead(head: string): Promise<void> {
    if ((await this.push(head)) === 'rejected') throw new AamiError('remote_conflict', 'the remote refused the local branch');
  }

  /** Push a commit as the branch's tip. 'rejected' means the remote moved: pull, then replay. */
  async push(commit: string): Promise<'pushed' | 'rejected'> {
    const at = (this.options.now ?? (() => new Date()))().toISOString();
    try {
      const result = await this.remote.push(commit);
      if (result.kind === 'pushed') {
        this.followed = commit;
        this.status.remote_head = commit;
        this.status.last_push = { at, outcome: 'pushed' };
        this.status.error = null;
        return 'pushed';
      }
      this.status.pushes_rejected++;
      this.status.last_push = { at, outcome: 'rejected', reason: result.reason };
      this.logger.warn('push refused by the remote: pulling and replaying', { reason: result.reason });
      return 'rejected';
    } catch (error) {
      this.status.last_push = { at, outcome: 'failed', reason: error instanceof Error ? error.message : String(error) };
      this.status.error = this.status.last_push.reason!;
      throw error;
    }
  }
}
