import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { simpleGit, type SimpleGit } from 'simple-git';
import { filesOf } from '../catalog/load.js';
import { AamiError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Change, GitStore } from './store.js';

export interface RemoteStatus {
  url: string;
  branch: string;
  last_sync_at: string | null;
  remote_head: string | null;
  error: string | null;
}

/**
 * The remote Git server, through the system git (its SSH keys and credential helpers).
 * Only ever fast-forwards and plain pushes: never a force in either direction.
 */
export class Remote {
  private readonly git: SimpleGit;

  constructor(
    readonly dir: string,
    readonly url: string,
    readonly branch: string,
  ) {
    this.git = simpleGit(dir);
  }

  /** Clone the remote into dir, or, when it has no such branch yet, seed dir from the starter and push it. */
  static async prepare(options: { dir: string; url: string; branch: string; starterDir: string; logger: Logger; init: (files: Change[]) => Promise<void> }): Promise<Remote> {
    const { dir, url, branch, logger } = options;
    if (!fs.existsSync(join(dir, '.git'))) {
      const heads = await simpleGit().listRemote(['--heads', url, branch]);
      if (heads.trim()) {
        logger.info('cloning the config repo', { url, branch });
        await simpleGit().clone(url, dir, ['--branch', branch, '--single-branch']);
      } else {
        logger.info('the remote has no branch yet: creating it from the starter', { url, branch });
        await options.init(filesOf(options.starterDir));
        await simpleGit(dir).addRemote('origin', url);
      }
    }
    const remote = new Remote(dir, url, branch);
    const current = await remote.git.getRemotes(true);
    const origin = current.find((r) => r.name === 'origin');
    if (!origin) await remote.git.addRemote('origin', url);
    else if (origin.refs.push !== url) await remote.git.remote(['set-url', 'origin', url]);
    return remote;
  }

  /** Fetch the branch; its tip on the remote, or null when the remote does not have it. */
  async fetch(): Promise<string | null> {
    try {
      await this.git.raw(['fetch', '--quiet', 'origin', `+refs/heads/${this.branch}:refs/remotes/origin/${this.branch}`]);
    } catch (error) {
      if (/couldn't find remote ref/i.test(String(error))) return null;
      throw unavailable(error);
    }
    return (await this.git.revparse([`refs/remotes/origin/${this.branch}`])).trim();
  }

  /** Push HEAD to the branch. 'rejected' when the remote moved on (never forced). */
  async push(): Promise<'pushed' | 'rejected'> {
    try {
      await this.git.raw(['push', '--quiet', 'origin', `HEAD:refs/heads/${this.branch}`]);
      return 'pushed';
    } catch (error) {
      // "cannot lock ref": another push won the race for the ref while ours was on its way.
      if (/\[rejected\]|non-fast-forward|fetch first|stale info|cannot lock ref|failed to update ref/i.test(String(error))) return 'rejected';
      throw unavailable(error);
    }
  }

  /** By exit status, which simple-git does not report when a command fails without output. */
  isAncestor(ancestor: string, descendant: string): Promise<boolean> {
    return new Promise((resolve) => {
      execFile('git', ['merge-base', '--is-ancestor', ancestor, descendant], { cwd: this.dir }, (error) => resolve(!error));
    });
  }

  async changedPaths(from: string, to: string): Promise<string[]> {
    const out = await this.git.raw(['diff', '--name-only', '--no-renames', from, to]);
    return out.split('\n').filter(Boolean);
  }
}

function unavailable(error: unknown): AamiError {
  const message = String(error instanceof Error ? error.message : error).split('\n').find((line) => line.trim()) ?? 'unknown error';
  return new AamiError('remote_unavailable', `the Git remote is not reachable: ${message.trim()}`);
}

/**
 * Keeps the local branch in step with the remote: pulls by fast-forward (merged pull
 * requests, other servers' commits) and publishes local commits. Runs inside the writer
 * queue, so a pull never interleaves with a commit.
 */
export class Upstream {
  readonly status: RemoteStatus;
  /** The remote tip we last followed or pushed: a tip that does not descend from it means history was rewritten. */
  private followed: string | null = null;

  constructor(
    private readonly remote: Remote,
    private readonly store: GitStore,
    /** Hands the files a pull changed to the catalog (and a compile). */
    private readonly applied: (changes: Change[]) => void,
    private readonly logger: Logger,
    private readonly options: { publish: boolean; now?: () => Date } = { publish: true },
  ) {
    this.status = { url: redact(remote.url), branch: remote.branch, last_sync_at: null, remote_head: null, error: null };
  }

  /**
   * Fetch, and fast-forward to the remote tip when it moved. Publishes local commits the
   * remote lacks. The status's error is worked out afresh on every pull: a rewritten or
   * diverged branch stays reported for as long as it lasts.
   */
  async pull(): Promise<void> {
    try {
      const tip = await this.remote.fetch();
      this.status.remote_head = tip;
      const head = this.store.head();
      let problem: string | null = null;
      if (!tip) {
        if (head && this.options.publish) await this.publish();
      } else if (tip !== head) {
        problem = await this.follow(tip, head);
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
  private async follow(tip: string, head: string | null): Promise<string | null> {
    if (this.followed && this.followed !== tip && !(await this.remote.isAncestor(this.followed, tip))) {
      this.logger.error('remote history rewritten', { followed: this.followed, remote_head: tip });
      return `refusing to follow the remote: its branch was rewritten (${this.followed.slice(0, 12)} is no longer an ancestor of ${tip.slice(0, 12)}); local head kept`;
    }
    if (!head || (await this.remote.isAncestor(head, tip))) {
      const paths = head ? await this.remote.changedPaths(head, tip) : [];
      const changes = await this.store.moveTo(tip, paths);
      this.applied(changes);
      this.followed = tip;
      this.logger.info('pulled', { head: tip, files: paths.length });
      return null;
    }
    if (await this.remote.isAncestor(tip, head)) {
      if (this.options.publish) await this.publish();
      return null;
    }
    this.logger.error('diverged from the remote', { head, remote_head: tip });
    return `local branch and remote have diverged (local ${head.slice(0, 12)}, remote ${tip.slice(0, 12)})`;
  }

  /** Push HEAD. 'rejected' means the remote moved: pull, then try again. */
  async publish(): Promise<'pushed' | 'rejected'> {
    const result = await this.remote.push();
    if (result === 'pushed') {
      this.followed = this.store.head();
      this.status.remote_head = this.followed;
    }
    return result;
  }
}

/** A remote URL without the password a user may have put in it. */
function redact(url: string): string {
  return url.replace(/\/\/([^/@:]+):[^/@]+@/, '//$1:***@');
}
