// The serving process, as production runs it: the built server (`npm run build` first) in its
// own process, driven over HTTP. Used by every bench that measures the server itself.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const ADMIN = 'bench-admin-credential-0123456789';
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
  /** Seconds of CPU of its children that ended (git repack, git push): /proc counts them once they are reaped, in ticks of 10 ms. */
  childrenCpuSeconds(): number;
  stop(): Promise<void>;
}

export async function startBenchServer(dirs: { repo: string; sd: string; state: string }, extra: string[] = [], env: Record<string, string> = {}): Promise<BenchServer> {
  const bin = join(ROOT, 'dist/cli/bin.js');
  if (!existsSync(bin)) throw new Error('run `npm run build` first: the bench measures the built server');
  const started = performance.now();
  const child = spawn(process.execPath, [...(process.env.AAMI_NODE_FLAGS ? process.env.AAMI_NODE_FLAGS.split(' ') : []), ...(process.env.AAMI_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.AAMI_PROFILE}`] : []), bin, 'serve', '--host', '127.0.0.1', '--port', '0', '--repo', dirs.repo, '--sd-dir', dirs.sd, '--state-dir', dirs.state, ...extra], {
    env: { ...process.env, AAMI_ADMIN_TOKEN: ADMIN, ...env },
    stdio: ['ignore', process.env.AAMI_BENCH_STDOUT ? 'inherit' : 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr!.on('data', (chunk: Buffer) => (log += chunk.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr!.on('data', () => {
      const match = /msg=serving url=(\S+)/.exec(log);
      if (match) resolve(match[1]!);
    });
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
        const fields = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
        return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks of 1/100 s
      }
    },
    cpuSplit: () => threadCpu(child.pid!),
    childrenCpuSeconds() {
      const fields = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
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
    const seconds = Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8').split(' ')[0]) / 1e9;
    if (task === String(pid)) main += seconds;
    else others += seconds;
  }
  return { main, others };
}

/** The machine's CPU time so far, from /proc/stat: busy (everything but idle and iowait) and total, in ticks. */
export function machineCpu(): { busy: number; total: number } {
  // user nice system idle iowait irq softirq steal; guest and guest_nice are counted in user and nice already.
  const ticks = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = ticks.reduce((sum, value) => sum + value, 0);
  return { busy: total - ticks[3]! - (ticks[4] ?? 0), total };
}
