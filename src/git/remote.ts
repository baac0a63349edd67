import { spawn } from 'node:child_process';
import { AamiError } from '../errors.js';

/**
 * A remote URL split into what may be shown and what may not. A password or token written
 * into the URL (https://user:secret@host/repo.git) is taken out: git gets it as an HTTP
 * header through its environment (GIT_CONFIG_*), never on a command line (`ps`), in
 * .git/config or in a log line.
 */
export interface RemoteAddress {
  /** The URL without credentials: safe to log, to show in health and to keep in .git/config. */
  url: string;
  /** "Authorization: Basic ..." for HTTP(S) remotes that had credentials in their URL. */
  authHeader?: string;
}

export function parseRemoteUrl(raw: string, password?: string): RemoteAddress {
  let parsed: URL | undefined;
  try {
    parsed = /^https?:\/\//i.test(raw) ? new URL(raw) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!parsed) return { url: raw }; // a path, ssh://, git@host:path, git://: credentials come from keys or helpers
  const user = decodeURIComponent(parsed.username);
  const secret = password ?? decodeURIComponent(parsed.password);
  parsed.username = '';
  parsed.password = '';
  const url = parsed.toString();
  if (!user && !secret) return { url };
  return { url, authHeader: `Authorization: Basic ${Buffer.from(`${user || 'git'}:${secret}`).toString('base64')}` };
}

export interface GitResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Fetch and push for one branch, through the system git (its SSH keys and credential
 * helpers). Only ever plain pushes: never a force in either direction. Output is kept
 * short and free of the remote's credentials.
 */
export class Remote {
  constructor(
    readonly gitdir: string,
    readonly address: RemoteAddress,
    readonly branch: string,
    private readonly timeoutMs = 60_000,
  ) {}

  get url(): string {
    return this.address.url;
  }

  /** The tracking ref a fetch updates. */
  get trackingRef(): string {
    return `refs/remotes/origin/${this.branch}`;
  }

  /** The fetches under way (their process groups), and whether the server stops: then no fetch is started or waited for. */
  private readonly fetching = new Set<number>();
  private stopping = false;

  /**
   * The server stops: a fetch under way is ended (a remote that accepts connections and never
   * answers held a stop ~40 s, past systemd's 30 s, so it was killed before it saved its
   * state), and a pull queued behind it fails at once. A push is left to finish: it may carry
   * an acknowledged write.
   */
  stopFetching(): void {
    this.stopping = true;
    for (const group of this.fetching) {
      try {
        process.kill(-group, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }

  /** Fetch the branch; its tip on the remote, or null when the remote does not have it. */
  async fetch(): Promise<string | null> {
    if (this.stopping) throw new AamiError('remote_unavailable', 'the server is stopping: no more pulls');
    const result = await this.git(['fetch', '--quiet', '--no-tags', this.url, `+refs/heads/${this.branch}:${this.trackingRef}`], true, this.fetching);
    if (this.stopping) throw new AamiError('remote_unavailable', 'the server is stopping: the pull was ended');
    if (result.code !== 0) {
      if (/couldn't find remote ref/i.test(result.stderr)) return null;
      throw unavailable(result.stderr);
    }
    const tip = await this.git(['rev-parse', '--verify', '--quiet', this.trackingRef]);
    return tip.code === 0 ? tip.stdout.trim() : null;
  }

  /** The branch's tip on the remote without fetching it (null: no such branch). */
  async lsRemote(): Promise<string | null> {
    const result = await this.git(['ls-remote', '--heads', this.url, `refs/heads/${this.branch}`]);
    if (result.code !== 0) throw unavailable(result.stderr);
    return result.stdout.split('\t')[0]?.trim() || null;
  }

  /** Clone the branch into this remote's gitdir as a bare repository (its push guards: GitRepository.guardPushes, at every start). */
  async cloneInto(dir: string): Promise<void> {
    const clone = await this.git(['clone', '--quiet', '--bare', '--single-branch', '--branch', this.branch, this.url, dir], false);
    if (clone.code !== 0) throw unavailable(clone.stderr);
  }

  /**
   * Push a commit (already durable here) as the branch's new tip. 'rejected' when the remote
   * moved on (another server pushed first) or refused it; the caller fetches and replays.
   */
  async push(commit: string): Promise<{ kind: 'pushed' } | { kind: 'rejected'; reason: string; output: string }> {
    const result = await this.git(['push', '--quiet', '--porcelain', this.url, `${commit}:refs/heads/${this.branch}`]);
    if (result.code === 0) return { kind: 'pushed' };
    const text = `${result.stdout}\n${result.stderr}`;
    // "cannot lock ref": another push won the race for the ref while ours was on its way.
    if (/\[rejected\]|non-fast-forward|fetch first|stale info|cannot lock ref|failed to update ref|\[remote rejected\]/i.test(text)) {
      return { kind: 'rejected', reason: firstLine(text), output: redact(text).slice(0, 4000) };
    }
    throw unavailable(text);
  }

  /** `running`: where the child's process group is kept while it runs. */
  private git(args: string[], inRepo = true, running?: Set<number>): Promise<GitResult> {
    const env: NodeJS.ProcessEnv = { ...process.env, GIT_TERMINAL_PROMPT: '0' };
    if (this.address.authHeader) {
      Object.assign(env, { GIT_CONFIG_COUNT: '1', GIT_CONFIG_KEY_0: 'http.extraHeader', GIT_CONFIG_VALUE_0: this.address.authHeader });
    }
    // A remote that stops answering must not hold the writer: give up on a stalled transfer.
    env.GIT_SSH_COMMAND ??= 'ssh -o BatchMode=yes -o ConnectTimeout=15 -o ServerAliveInterval=10 -o ServerAliveCountMax=3';
    const stall = ['-c', 'http.lowSpeedLimit=1000', '-c', 'http.lowSpeedTime=30'];
    return new Promise((resolve) => {
      // Its own process group: on a timeout the helpers git started (git-remote-http, ssh) go too.
      const child = spawn('git', [...stall, ...(inRepo ? [`--git-dir=${this.gitdir}`] : []), ...args], { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
      if (child.pid) running?.add(child.pid);
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout = (stdout + chunk.toString()).slice(-(16 << 20))));
      child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-(1 << 20))));
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          // already gone
        }
      }, this.timeoutMs);
      const done = (code: number, extra = '') => {
        clearTimeout(timer);
        if (child.pid) running?.delete(child.pid);
        resolve({ code, stdout, stderr: redact(timedOut ? `timed out after ${this.timeoutMs / 1000} s: the remote did not answer (a push may or may not have landed; the next pull tells)\n${stderr}` : stderr + extra) });
      };
      child.once('error', (error) => done(1, error.message));
      child.once('close', (code) => done(code ?? 1));
    });
  }
}

/** Any URL credentials git may echo back in an error. */
export function redact(text: string): string {
  return text.replace(/(\w+:\/\/)[^/@\s]+@/g, '$1***@');
}

function firstLine(text: string): string {
  return (
    text
      .split('\n')
      .map((line) => line.trim())
      .find((line) => line && !line.startsWith('To ') && line !== 'Done') ?? 'refused'
  );
}

function unavailable(text: string): AamiError {
  return new AamiError('remote_unavailable', `the Git remote is not reachable: ${firstLine(redact(text))}`);
}
