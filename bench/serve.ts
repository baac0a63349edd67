import { spawn } from 'node:child_process';
import { join } from 'node:path';

export const BENCH_ADMIN = 'bench-admin-credential-0123456789';

/**
 * `aami serve` in its own process, as in production (AAMI_PROFILE=1 writes a CPU profile to
 * /tmp/cpuprof-server). The bench process only plays the clients.
 */
export async function startServe(repo: string, root: string) {
  const child = spawn(
    process.execPath,
    [...(process.env.AAMI_PROFILE ? ['--cpu-prof', '--cpu-prof-dir=/tmp/cpuprof-server'] : []), '--import', 'tsx', 'src/cli/bin.ts', 'serve', '--host', '127.0.0.1', '--port', '0', '--repo', repo, '--sd-dir', join(root, 'sd'), '--state-dir', join(root, 'state')],
    { env: { ...process.env, AAMI_ADMIN_TOKEN: BENCH_ADMIN }, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const url = await new Promise<string>((resolve, reject) => {
    let log = '';
    const read = (chunk: Buffer) => {
      log += chunk.toString();
      const match = /msg=serving url=(\S+)/.exec(log);
      if (match) {
        child.stderr!.off('data', read);
        child.stderr!.resume(); // the request log keeps coming: drop it
        resolve(match[1]!);
      }
    };
    child.stderr!.on('data', read);
    child.once('exit', () => reject(new Error(`server exited: ${log}`)));
  });
  const call = async (method: string, path: string, body?: unknown, credential = BENCH_ADMIN) => {
    const response = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${credential}` }, body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: response.status, json: (await response.json()) as any };
  };
  return {
    url,
    call,
    close: () => new Promise<void>((resolve) => (child.kill('SIGTERM'), child.once('exit', () => resolve()))),
    /** The server process's CPU time so far, from its own /metrics. */
    cpuSeconds: () => metric(url, 'process_cpu_seconds_total'),
    /** Its resident memory, in MB. */
    rssMb: async () => (await metric(url, 'process_resident_memory_bytes')) / 1e6,
  };
}

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)![1]);
}

export interface Storm {
  rate: number;
  latencies: number[];
  statuses: Map<number, number>;
}

/** `requests` self-registrations from `clients` concurrent clients with one token; latencies sorted. */
export async function registrationStorm(url: string, token: string, options: { clients: number; requests: number; prefix: string; net: number }): Promise<Storm> {
  const latencies: number[] = [];
  const statuses = new Map<number, number>();
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: options.clients }, async () => {
      for (let i = next++; i < options.requests; i = next++) {
        const t0 = performance.now();
        const response = await fetch(`${url}/api/v1/bootstrap/register`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}` },
          body: JSON.stringify({ hostname: `${options.prefix}-${i}`, ip_address: `10.${options.net}.${i >> 8}.${i & 255}`, facts: { gpu_model: 'H100', gpu_count: 8 } }),
        });
        await response.arrayBuffer();
        latencies.push(performance.now() - t0);
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  return { rate: options.requests / seconds, latencies: latencies.sort((a, b) => a - b), statuses };
}
