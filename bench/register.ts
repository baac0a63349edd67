// npm run bench:register [-- --targets 10000 --clients 64 --requests 2000]
// Sustained self-registrations against the built `aami serve` in its own process, then a
// durability check (every 201 is in Git and in the SD file). Baseline in the same run: the
// git CLI making the same commit (target file + token use) for each registration, one by one.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startBenchServer } from './server.js';
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

try {
  console.log(`# registrations — ${existing} targets in the repo, ${clients} concurrent clients, ${requests} registrations, node ${process.version}`);
  const dirs = { repo: join(root, 'repo'), sd: join(root, 'sd'), state: join(root, 'state') };
  bareRepoWith(dirs.repo, syntheticRepo(existing));
  const server = await startBenchServer(dirs);
  const created = (await server.call('POST', '/api/v1/bootstrap-tokens', { name: 'bench', default_group_id: 'cluster-0', max_uses: requests, expires_at: '2099-01-01T00:00:00Z' })).json as { token: string };

  const latencies: number[] = [];
  const statuses = new Map<number, number>();
  const acknowledged: string[] = [];
  let next = 0;
  const cpuBefore = server.cpuSeconds();
  const started = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      for (let i = next++; i < requests; i = next++) {
        const t0 = performance.now();
        const hostname = `bench-${i}`;
        const response = await fetch(`${server.url}/api/v1/bootstrap/register`, {
          method: 'POST',
          headers: { authorization: `Bearer ${created.token}` },
          body: JSON.stringify({ hostname, ip_address: `10.200.${i >> 8}.${i & 255}`, facts: { gpu_model: 'H100', gpu_count: 8 } }),
        });
        await response.arrayBuffer();
        latencies.push(performance.now() - t0);
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
        if (response.status === 201) acknowledged.push(hostname);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const cpu = server.cpuSeconds() - cpuBefore;
  const memory = server.memory();
  latencies.sort((a, b) => a - b);
  // Durable and served: every 201 is in the branch's tree and, once compiled, in the SD file.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const tree = execFileSync('git', ['--git-dir', dirs.repo, 'ls-tree', '-r', '--name-only', 'main', 'targets/cluster-0'], { encoding: 'utf8', maxBuffer: 1 << 28 });
  const sd = readFileSync(join(dirs.sd, 'node.json'), 'utf8');
  const missing = acknowledged.filter((h) => !tree.includes(`/${h}.yaml`) || !sd.includes(`"hostname": "${h}"`));
  const commits = Number(execFileSync('git', ['--git-dir', dirs.repo, 'rev-list', '--count', 'main'], { encoding: 'utf8' })) - 2;
  await server.stop();
  console.log(`aami serve: ${(requests / seconds).toFixed(0)} registrations/s; latency p50 ${ms(percentile(latencies, 50))}, p99 ${ms(percentile(latencies, 99))}, max ${ms(latencies.at(-1)!)}`);
  console.log(`            ${((cpu / requests) * 1000).toFixed(2)} ms of server CPU a registration; RSS ${memory.rssMb.toFixed(0)} MB (peak ${memory.peakMb.toFixed(0)}); statuses ${JSON.stringify(Object.fromEntries(statuses))}; ${commits} commits`);
  console.log(`            durability: ${acknowledged.length - missing.length}/${acknowledged.length} acknowledged registrations in Git and in the SD file`);

  // Baseline: the git CLI making the same commit for each registration, one by one (a temporary index: the repo is bare).
  const env = { ...process.env, GIT_INDEX_FILE: join(root, 'index'), GIT_AUTHOR_NAME: 'b', GIT_AUTHOR_EMAIL: 'b@b', GIT_COMMITTER_NAME: 'b', GIT_COMMITTER_EMAIL: 'b@b' };
  const git = (args: string[], input?: string) => execFileSync('git', ['--git-dir', dirs.repo, ...args], { input, encoding: 'utf8', env }).trim();
  git(['read-tree', 'main']);
  const cliCount = 40;
  const t0 = performance.now();
  for (let i = 0; i < cliCount; i++) {
    const target = targetFile(existing + 10_000 + i, 'cluster-0');
    const blob = git(['hash-object', '-w', '--stdin'], target.content!);
    const token = git(['hash-object', '-w', '--stdin'], `uses: ${i}\n`);
    git(['update-index', '--add', '--cacheinfo', `100644,${blob},${target.path}`, '--cacheinfo', `100644,${token},tokens/bench.yaml`]);
    const tree = git(['write-tree']);
    const commit = git(['commit-tree', tree, '-p', 'main', '-m', `Register ${target.path}`]);
    git(['update-ref', 'refs/heads/main', commit]);
  }
  const cliRate = cliCount / ((performance.now() - t0) / 1000);
  console.log(`git CLI   : ${cliRate.toFixed(0)} commits/s (hash-object ×2, update-index, write-tree, commit-tree, update-ref; ${cliCount} commits)`);
} finally {
  rmSync(root, { recursive: true, force: true });
}
