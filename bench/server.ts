// The serving process, as production runs it: the built server (`npm run build` first) in its
// own process, driven over HTTP. Used by every bench that measures the server itself.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const ADMIN = 'bench-admin-credential-0123456789';

/** The environment deploy/ runs the server with (the systemd unit's Environment=, the image's ENV): the bench's server runs with it too. One set in the bench's own environment wins (an A/B run). */
export const SERVER_ENV = { MALLOC_ARENA_MAX: '2' } as const;
const ROOT = new URL('..', import.meta.url).pathname;

export interface BenchServer {
  url: string;
  child: ChildProcess;
  /** Milliseconds from spawn to the first healthy answer. */
  startMs: number;
  log: () => string;
  call(method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; json: any }>;
  /** Resident memory now and at its peak, in MB (from /proc). */
  memory(): { rssMb: number; peakMb: number };
  /** Seconds of CPU the server has used (user + system, from /proc). */
  cpuSeconds(): number;
  /** The same, split: its main thread (JavaScript, the event loop) and its other threads (V8's GC and compiler helpers, libuv's file I/O). */
  cpuSplit(): { main: number; others: number };
  /**
   * Seconds of CPU of its children that ended (git repack, git push): /proc counts a child once
   * it is reaped, in ticks of 10 ms. The long-lived `git cat-file --batch` is not among them.
   */
  finishedChildrenCpuSeconds(): number;
  stop(): Promise<void>;
}

export async function startBenchServer(dirs: { repo: string; sd: string; state: string }, extra: string[] = [], env: Record<string, string> = {}): Promise<BenchServer> {
  const bin = join(ROOT, 'dist/cli/bin.js');
  if (!existsSync(bin)) throw new Error('run `npm run build` first: the bench measures the built server');
  const started = performance.now();
  const child = spawn(process.execPath, [...(process.env.AAMI_NODE_FLAGS ? process.env.AAMI_NODE_FLAGS.split(' ') : []), ...(process.env.AAMI_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.AAMI_PROFILE}`] : []), bin, 'serve', '--host', '127.0.0.1', '--port', '0', '--repo', dirs.repo, '--sd-dir', dirs.sd, '--state-dir', dirs.state, ...extra], {
    env: { ...SERVER_ENV, ...process.env, AAMI_ADMIN_TOKEN: ADMIN, ...env },
    stdio: ['ignore', process.env.AAMI_BENCH_STDOUT ? 'inherit' : 'ignore', 'pipe'],
  });
  let log = '';
  // AAMI_BENCH_LOG=1: the server's log lines shown as they come, besides.
  child.stderr!.on('data', (chunk: Buffer) => ((log += chunk.toString()), process.env.AAMI_BENCH_LOG && process.stderr.write(chunk)));
  const url = await new Promise<string>((resolve, reject) => {
    // Removed once it matched: looked for in the whole log at every chunk, it cost the bench's own process CPU that it reports as its clients'.
    const serving = () => {
      const match = /msg=serving url=(\S+)/.exec(log);
      if (!match) return;
      child.stderr!.off('data', serving);
      resolve(match[1]!);
    };
    child.stderr!.on('data', serving);
    child.once('exit', (code) => reject(new Error(`server exited (${code}): ${log}`)));
  });
  for (;;) {
    const response = await fetch(`${url}/api/v1/health`).catch(() => undefined);
    if (response?.ok) break;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const startMs = performance.now() - started;
  const status = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  return {
    url,
    child,
    startMs,
    log: () => log,
    async call(method, path, body, token = ADMIN) {
      const response = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}` }, body: body === undefined ? undefined : JSON.stringify(body) });
      const text = await response.text();
      return { status: response.status, json: text ? JSON.parse(text) : undefined };
    },
    memory: () => ({ rssMb: status('VmRSS'), peakMb: status('VmHWM') }),
    cpuSeconds() {
      try {
        const { main, others } = threadCpu(child.pid!);
        return main + others;
      } catch {
        const fields = statFields(child.pid!);
        return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks of 1/100 s
      }
    },
    cpuSplit: () => threadCpu(child.pid!),
    finishedChildrenCpuSeconds() {
      const fields = statFields(child.pid!);
      return (Number(fields[13]) + Number(fields[14])) / 100; // cutime + cstime
    },
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/**
 * Each thread's time on a CPU (schedstat, in nanoseconds), as seconds: the main thread's and
 * the others' summed. /proc/<pid>/stat counts in ticks of 10 ms, too coarse for one
 * registration. A thread that ended since (a worker) is not counted; git children neither.
 */
function threadCpu(pid: number): { main: number; others: number } {
  let main = 0;
  let others = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue; // the thread ended since the listing
      throw error;
    }
    const seconds = Number(text.split(' ')[0]) / 1e9;
    if (task === String(pid)) main += seconds;
    else others += seconds;
  }
  return { main, others };
}

/** The fields of /proc/<pid>/stat after the command's name (which may hold a space or a parenthesis): index 0 is the state. */
function statFields(pid: number): string[] {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

/**
 * The machine's CPU time so far, from /proc/stat, in ticks: busy (user, nice, system, irq,
 * softirq) and all of it, and its number of CPUs. Steal (the hypervisor running others) is
 * left out of both, and guest time is counted in user and nice already.
 */
export function machineCpu(): { busy: number; total: number; cpus: number } {
  const lines = readFileSync('/proc/stat', 'utf8').split('\n');
  const [user, nice, system, idle, iowait, irq, softirq] = lines[0]!.trim().split(/\s+/).slice(1, 8).map(Number) as number[];
  const busy = user! + nice! + system! + irq! + softirq!;
  return { busy, total: busy + idle! + iowait!, cpus: lines.filter((line) => /^cpu\d/.test(line)).length };
}
