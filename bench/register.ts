// npm run bench:register [-- --targets 10000 --clients 64 --requests 2000]
// Sustained self-registrations against a real `aami serve` on loopback, beside the git CLI
// making the same commits (target file + token use) one by one, in the same run.
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { bareRepoWith, ms, percentile, syntheticRepo, targetFile } from './synthetic.js';

const { values } = parseArgs({
  options: {
    targets: { type: 'string', default: '10000' },
    clients: { type: 'string', default: '64' },
    requests: { type: 'string', default: '2000' },
  },
});
const existing = Number(values.targets);
const clients = Number(values.clients);
const requests = Number(values.requests);
const root = mkdtempSync(join(tmpdir(), 'aami-bench-register-'));
const ADMIN = 'bench-admin-credential-0123456789';

try {
  console.log(`# registrations — ${existing} targets already in the repo, ${clients} concurrent clients, ${requests} registrations`);
  const repo = join(root, 'repo');
  bareRepoWith(repo, syntheticRepo(existing));

  // The server runs in its own process, as in production; this one only plays the 64 clients.
  const child = spawn(process.execPath, [...(process.env.AAMI_PROFILE ? ['--cpu-prof', '--cpu-prof-dir=/tmp/cpuprof-server'] : []), '--import', 'tsx', 'src/cli/bin.ts', 'serve', '--host', '127.0.0.1', '--port', '0', '--repo', repo, '--sd-dir', join(root, 'sd'), '--state-dir', join(root, 'state')], {
    env: { ...process.env, AAMI_ADMIN_TOKEN: ADMIN },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const server = {
    url: await new Promise<string>((resolve, reject) => {
      let log = '';
      child.stderr!.on('data', (chunk: Buffer) => {
        log += chunk.toString();
        const match = /msg=serving url=(\S+)/.exec(log);
        if (match) resolve(match[1]!);
      });
      child.once('exit', () => reject(new Error(`server exited: ${log}`)));
    }),
    close: () => new Promise<void>((resolve) => (child.kill('SIGTERM'), child.once('exit', () => resolve()))),
  };
  const created = (await (
    await fetch(`${server.url}/api/v1/bootstrap-tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ name: 'bench', default_group_id: 'cluster-0', max_uses: requests, expires_at: '2099-01-01T00:00:00Z' }),
    })
  ).json()) as { token: string };

  const latencies: number[] = [];
  const statuses = new Map<number, number>();
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      for (let i = next++; i < requests; i = next++) {
        const t0 = performance.now();
        const response = await fetch(`${server.url}/api/v1/bootstrap/register`, {
          method: 'POST',
          headers: { authorization: `Bearer ${created.token}` },
          body: JSON.stringify({ hostname: `bench-${i}`, ip_address: `10.200.${i >> 8}.${i & 255}`, facts: { gpu_model: 'H100', gpu_count: 8 } }),
        });
        await response.arrayBuffer();
        latencies.push(performance.now() - t0);
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  await server.close();
  latencies.sort((a, b) => a - b);
  const committed = Number(execFileSync('git', ['rev-list', '--count', 'HEAD'], { cwd: repo, encoding: 'utf8' })) - 2;
  console.log(`aami serve: ${(requests / seconds).toFixed(0)} registrations/s; latency p50 ${ms(percentile(latencies, 50))}, p99 ${ms(percentile(latencies, 99))}, max ${ms(latencies.at(-1)!)}`);
  console.log(`            statuses ${JSON.stringify(Object.fromEntries(statuses))}; ${committed} commits after the token's`);

  // Baseline: the git CLI making the same commit for each registration, one by one.
  const git = (args: string[], input?: string) => execFileSync('git', args, { cwd: repo, input, encoding: 'utf8' }).trim();
  const cliCount = 40;
  const t0 = performance.now();
  for (let i = 0; i < cliCount; i++) {
    const target = targetFile(existing + 10_000 + i, 'cluster-0');
    const blob = git(['hash-object', '-w', '--stdin'], target.content!);
    const token = git(['hash-object', '-w', '--stdin'], `uses: ${i}\n`);
    git(['update-index', '--add', '--cacheinfo', `100644,${blob},${target.path}`, '--cacheinfo', `100644,${token},tokens/bench.yaml`]);
    const tree = git(['write-tree']);
    const commit = git(['commit-tree', tree, '-p', 'HEAD', '-m', `Register ${target.path}`]);
    git(['update-ref', 'refs/heads/main', commit]);
  }
  const cliRate = cliCount / ((performance.now() - t0) / 1000);
  console.log(`git CLI   : ${cliRate.toFixed(0)} commits/s (hash-object ×2, update-index, write-tree, commit-tree, update-ref; ${cliCount} commits)`);
} finally {
  rmSync(root, { recursive: true, force: true });
}
