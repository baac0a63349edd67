import * as fs from 'node:fs';
import { AamiError } from '../errors.js';
import { writeFileDurably } from '../git/fs.js';
import type { GitRepository } from '../git/repository.js';
import type { Remote } from '../git/remote.js';
import type { Logger } from '../log.js';
import type { RemoteStatus } from '../schema/answers.js';
import type { Publisher } from './writer.js';

/** Counts for /metrics. */
export interface UpstreamMetrics {
  push(outcome: 'pushed' | 'rejected' | 'locked' | 'refused' | 'failed'): void;
  pull(outcome: 'current' | 'pulled' | 'failed' | 'refused'): void;
}

const ACCEPT_FIX = 'the remote was rewritten; to take the remote as it is now (the local commits it dropped stay out), an admin runs: curl -X POST $SERVER/api/v1/sync -H "Authorization: Bearer $ADMIN" -d \'{"accept_remote_history": true}\'';

/**
 * Keeps the local branch in step with a Git remote: pulls by fast-forward (merged pull
 * requests, other servers' commits) and publishes every commit before it is acknowledged.
 *
 * - Push, then move the local branch: a server killed between the two finds the remote
 *   ahead at start and fast-forwards; it never holds a commit the remote lacks, so it never
 *   re-publishes one either.
 * - The remote tip it last followed or pushed is kept in the state directory: a tip that
 *   does not descend from it means someone rewrote the branch (a force push). The server
 *   then neither follows the rewrite nor pushes the dropped commits back; writes are refused
 *   and health says why and which command takes the remote's history — after a restart too.
 * - A refused push is a race (another server pushed first: pull, then replay) only when
 *   the remote moved; a stale lock or a protected branch refuses every push, so it is
 *   reported as what it is instead of being retried until the writer gives up.
 *
 * Runs inside the writer queue, so a pull never interleaves with a commit.
 */
export class Upstream implements Publisher {
  readonly status: RemoteStatus;
  private followed: string | null;
  /** Set while the remote's history no longer contains what this server followed. */
  private rewritten: string | null = null;

  constructor(
    private readonly remote: Remote,
    private readonly repo: GitRepository,
    /** Bring the live catalog to the local branch after it moved. */
    private readonly follow: () => Promise<boolean>,
    private readonly logger: Logger,
    private readonly options: { publish: boolean; now?: () => Date; stateFile?: string; metrics?: UpstreamMetrics } = { publish: true },
  ) {
    this.status = { url: remote.url, branch: remote.branch, last_sync_at: null, remote_head: null, error: null, fix: null, last_pull: null, last_push: null, pushes_rejected: 0 };
    this.followed = readFollowed(options.stateFile);
  }

  private now(): string {
    return (this.options.now ?? (() => new Date()))().toISOString();
  }

  /**
   * Fetch, and fast-forward to the remote tip when it moved. The status's error is worked
   * out afresh on every pull: a rewritten or diverged branch stays reported while it lasts.
   */
  async pull(): Promise<void> {
    const at = this.now();
    // Until the first pull ends, health says the copy may be behind (a start serves without it after a few seconds).
    if (this.status.last_pull === null) this.status.error ??= 'the first pull from the remote has not finished: serving what this copy has; writes wait for it';
    try {
      const tip = await this.remote.fetch();
      this.status.remote_head = tip;
      const head = await this.repo.head();
      let problem: string | null = null;
      let moved = false;
      if (!tip) {
        if (head && this.options.publish) await this.pushHead(head);
      } else if (tip !== head) {
        const outcome = await this.moveTo(tip, head);
        problem = outcome.problem;
        moved = outcome.moved;
      } else {
        await this.setFollowed(tip);
      }
      this.rewritten = problem && /rewritten/.test(problem) ? problem : null;
      this.status.last_sync_at = at;
      this.status.error = problem;
      this.status.fix = this.rewritten ? ACCEPT_FIX : null;
      this.status.last_pull = { at, outcome: problem ? 'refused' : moved ? 'pulled' : 'current', ...(problem ? { reason: problem } : {}) };
      this.options.metrics?.pull(this.status.last_pull.outcome);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      this.status.error = reason;
      this.status.last_pull = { at, outcome: 'failed', reason };
      this.options.metrics?.pull('failed');
      this.logger.warn('git sync failed', { error: reason });
      throw error;
    }
  }

  /** The server stops: pulls end (a fetch under way too); pushes finish. */
  stop(): void {
    this.remote.stopFetching();
  }

  /**
   * After a rewrite, an admin's decision: take the remote's branch as the truth. The local
   * branch moves to the remote tip (commits the remote dropped stay dropped).
   */
  async acceptRemoteHistory(): Promise<void> {
    const tip = await this.remote.fetch();
    if (!tip) throw new AamiError('not_found', `the remote has no branch ${this.remote.branch}`);
    const head = await this.repo.head();
    const swapped = await this.repo.swap(head, tip);
    if (swapped.kind !== 'swapped') throw new AamiError('repo_locked', `cannot move the local branch: it is ${swapped.kind}; try again`);
    await this.setFollowed(tip);
    await this.follow();
    this.logger.warn('accepted the remote history', { from: head ?? undefined, to: tip });
    this.rewritten = null;
    await this.pull();
  }

  /** Move to the remote tip if that is a fast-forward; otherwise say why not. */
  private async moveTo(tip: string, head: string | null): Promise<{ problem: string | null; moved: boolean }> {
    if (this.followed && this.followed !== tip && !(await this.repo.isAncestor(this.followed, tip))) {
      this.logger.error('remote history rewritten', { followed: this.followed, remote_head: tip });
      return { moved: false, problem: `refusing to follow the remote: its branch was rewritten (${this.followed.slice(0, 12)} is no longer an ancestor of ${tip.slice(0, 12)}); local head kept, writes refused` };
    }
    if (!head || (await this.repo.isAncestor(head, tip))) {
      const swapped = await this.repo.swap(head, tip);
      if (swapped.kind !== 'swapped') return { moved: false, problem: `cannot move the local branch to the remote's tip: it is ${swapped.kind}` };
      await this.setFollowed(tip);
      await this.follow();
      this.logger.info('pulled', { head: tip });
      return { moved: true, problem: null };
    }
    if (await this.repo.isAncestor(tip, head)) {
      // The local branch is ahead. A server that pushes before it moves its branch is ahead
      // only with a fresh, never-pushed repository; anything else means the remote went back.
      if (this.followed && this.followed !== tip) {
        return { moved: false, problem: `refusing to push: the remote's branch went back from ${this.followed.slice(0, 12)} to ${tip.slice(0, 12)} (rewritten); local head kept, writes refused` };
      }
      if (this.options.publish) await this.pushHead(head);
      return { moved: false, problem: null };
    }
    this.logger.error('diverged from the remote', { head, remote_head: tip });
    return { moved: false, problem: `local branch and remote have diverged (local ${head.slice(0, 12)}, remote ${tip.slice(0, 12)}): the remote was rewritten; local head kept, writes refused` };
  }

  private async pushHead(head: string): Promise<void> {
    if ((await this.push(head)) === 'rejected') throw new AamiError('remote_conflict', 'the remote refused the local branch');
  }

  /** Push a commit as the branch's tip. 'rejected' means the remote moved: pull, then replay. */
  async push(commit: string): Promise<'pushed' | 'rejected'> {
    if (this.rewritten) throw new AamiError('remote_diverged', `${this.rewritten}. ${ACCEPT_FIX}`);
    const at = this.now();
    try {
      const result = await this.remote.push(commit);
      if (result.kind === 'pushed') {
        await this.setFollowed(commit);
        this.status.remote_head = commit;
        this.status.last_push = { at, outcome: 'pushed' };
        this.status.error = null;
        this.options.metrics?.push('pushed');
        return 'pushed';
      }
      // A refused push is a race only if the remote moved; otherwise every push will be refused the same way.
      const tip = await this.remote.fetch().catch(() => undefined);
      const parent = await this.repo.head();
      if (tip !== undefined && tip === parent) {
        const locked = /cannot lock ref|Unable to create .*\.lock/i.test(result.output);
        const said = result.output.split('\n').find((line) => /^remote: /.test(line))?.replace(/^remote:\s*(error:\s*)?/, '').trim() || result.reason;
        const message = locked
          ? `the remote's branch is locked (${said}): a lock file left on the Git server by a push that died; remove refs/heads/${this.remote.branch}.lock there`
          : `the remote refuses pushes to ${this.remote.branch} (${said}): a protected branch or a hook; let this server push, or make it a follower`;
        this.status.last_push = { at, outcome: 'failed', reason: message };
        this.status.error = message;
        this.options.metrics?.push(locked ? 'locked' : 'refused');
        this.logger.error('push refused by the remote', { reason: result.reason });
        throw new AamiError(locked ? 'remote_locked' : 'remote_refused', message);
      }
      this.status.pushes_rejected++;
      this.status.last_push = { at, outcome: 'rejected', reason: result.reason };
      this.options.metrics?.push('rejected');
      this.logger.warn('push refused: the remote moved on; pulling and replaying', { reason: result.reason });
      return 'rejected';
    } catch (error) {
      if (error instanceof AamiError && error.code !== 'remote_unavailable') throw error;
      const reason = error instanceof Error ? error.message : String(error);
      this.status.last_push = { at, outcome: 'failed', reason };
      this.status.error = reason;
      this.options.metrics?.push('failed');
      throw error;
    }
  }

  private async setFollowed(tip: string): Promise<void> {
    if (this.followed === tip) return;
    this.followed = tip;
    if (this.options.stateFile) await writeFileDurably(fs, this.options.stateFile, `${JSON.stringify({ followed: tip })}\n`);
  }
}

function readFollowed(file: string | undefined): string | null {
  if (!file) return null;
  try {
    const { followed } = JSON.parse(fs.readFileSync(file, 'utf8')) as { followed?: unknown };
    return typeof followed === 'string' && /^[0-9a-f]{40}$/.test(followed) ? followed : null;
  } catch {
    return null;
  }
}
