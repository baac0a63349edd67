// npm run bench:register [-- --targets 10000 --clients 64 --requests 2000]
// Sustained self-registrations against a real `aami serve` on loopback, beside the git CLI
// making the same commits (target file + token use) one by one, in the same run.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { registrationStorm, startServe } from './serve.js';
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
  console.log(`# registrations — ${existing} targets already in the repo, ${clients} concurrent clients, ${requests} registrations`);
  const repo = join(root, 'repo');
  bareRepoWith(repo, syntheticRepo(existing));

  const server = await startServe(repo, root);
  const created = (await server.call('POST', '/api/v1/bootstrap-tokens', { name: 'bench', default_group_id: 'cluster-0', max_uses: requests, expires_at: '2099-01-01T00:00:00Z' })).json as { token: string };
  const storm = await registrationStorm(server.url, created.token, { clients, requests, prefix: 'bench', net: 200 });
  await server.close();
  const committed = Number(execFileSync('git', ['rev-list', '--count', 'HEAD'], { cwd: repo, encoding: 'utf8' })) - 2;
  console.log(`aami serve: ${storm.rate.toFixed(0)} registrations/s; latency p50 ${ms(percentile(storm.latencies, 50))}, p99 ${ms(percentile(storm.latencies, 99))}, max ${ms(storm.latencies.at(-1)!)}`);
  console.log(`            statuses ${JSON.stringify(Object.fromEntries(storm.statuses))}; ${committed} commits after the token's`);

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
