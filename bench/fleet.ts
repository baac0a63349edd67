// npm run bench:fleet [-- --targets 10000 --clients 48 --requests 1500]
// Registrations/s and latency from 48 clients: one server without a remote (the baseline
// of this run), one server with a remote, two servers that both write to one remote (with
// their pushes refused and writes replayed), and a primary with two followers, clients
// spread over the servers. Then a push to the remote → the SD file of every server, by
// webhook and by polling.
import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startBenchServer, type BenchServer } from './server.js';
import { registrationStorm } from './storm.js';
import { bareRepoWith, ms, percentile, syntheticRepo, targetFile } from './synthetic.js';

const { values } = parseArgs({ options: { targets: { type: 'string', default: '10000' }, clients: { type: 'string', default: '48' }, requests: { type: 'string', default: '1500' } } });
const n = Number(values.targets);
const clients = Number(values.clients);
const requests = Number(values.requests);
const root = mkdtempSync(join(tmpdir(), 'aami-bench-fleet-'));
const WEBHOOK = 'bench-webhook-secret-0123456789';
const CLUSTER = 'bench-cluster-secret-0123456789';
let dirCount = 0;
const dirs = () => {
  const base = join(root, `server-${dirCount++}`);
  return { repo: join(base, 'repo'), sd: join(base, 'sd'), state: join(base, 'state') };
};

async function storm(servers: BenchServer[], label: string, prefix: string): Promise<void> {
  const token = (await servers[0]!.call('POST', '/api/v1/bootstrap-tokens', { name: prefix, default_group_id: 'cluster-0', max_uses: requests, expires_at: '2099-01-01T00:00:00Z' })).json.token as string;
  // Every server knows the token before the storm: a writer that has not pulled it yet
  // answers 401 (a follower forwards it), and its clients would spend the storm on refusals.
  for (const other of servers.slice(1)) await other.call('POST', '/api/v1/sync');
  const { rate, latencies, statuses } = await registrationStorm(servers.map((s) => s.url), token, { clients, requests, prefix, net: 201 });
  console.log(`${label.padEnd(28)} ${rate.toFixed(0).padStart(5)}/s  p50 ${ms(percentile(latencies, 50)).padEnd(10)} p99 ${ms(percentile(latencies, 99)).padEnd(10)} statuses ${JSON.stringify(Object.fromEntries(statuses))}`);
}

/** A counter's samples from a server's /metrics, summed by the value of one label. */
async function counter(server: BenchServer, name: string): Promise<string> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const samples = [...text.matchAll(new RegExp(`^${name}\\{[a-z]+="([^"]+)"\\} (\\S+)$`, 'gm'))].map((m) => `${m[1]} ${m[2]}`);
  return samples.join(', ') || 'none';
}

try {
  console.log(`# fleet — ${n} targets, ${clients} clients, ${requests} registrations each, node ${process.version}, ${new Date().toISOString()}`);
  const seed = join(root, 'seed.git');
  bareRepoWith(seed, syntheticRepo(n));

  const alone = dirs();
  execFileSync('git', ['clone', '--quiet', '--bare', seed, alone.repo]);
  let server = await startBenchServer(alone);
  await storm([server], 'one server, no remote', 'alone');
  await server.stop();

  const remote = join(root, 'remote.git');
  execFileSync('git', ['clone', '--quiet', '--bare', seed, remote]);
  server = await startBenchServer(dirs(), ['--remote', remote, '--sync-interval', '3600']);
  await storm([server], 'one server with a remote', 'remote');
  await server.stop();

  // Several servers that all write (no --primary): correct, but they race for the branch.
  const sharedRemote = join(root, 'shared.git');
  execFileSync('git', ['clone', '--quiet', '--bare', seed, sharedRemote]);
  const writers = [await startBenchServer(dirs(), ['--remote', sharedRemote, '--sync-interval', '1']), await startBenchServer(dirs(), ['--remote', sharedRemote, '--sync-interval', '1'])];
  await storm(writers, '2 writers, one remote', 'writers');
  for (const [k, w] of writers.entries()) console.log(`  writer ${k + 1}: pushes ${await counter(w, 'aami_git_pushes_total')}; replays ${await counter(w, 'aami_writer_replays_total')}`);
  for (const w of writers) await w.stop();

  const fleetRemote = join(root, 'fleet.git');
  execFileSync('git', ['clone', '--quiet', '--bare', seed, fleetRemote]);
  const env = { AAMI_WEBHOOK_SECRET: WEBHOOK, AAMI_CLUSTER_SECRET: CLUSTER };
  const fleetDirs = [dirs(), dirs(), dirs()];
  const primary = await startBenchServer(fleetDirs[0]!, ['--remote', fleetRemote, '--sync-interval', '3600'], env);
  const followers = [
    await startBenchServer(fleetDirs[1]!, ['--remote', fleetRemote, '--primary', primary.url, '--sync-interval', '1'], env),
    await startBenchServer(fleetDirs[2]!, ['--remote', fleetRemote, '--primary', primary.url, '--sync-interval', '1'], env),
  ];
  await storm([primary, ...followers], 'primary + 2 followers', 'fleet');

  // A pull request merged on the remote: how soon does every server's SD file have it?
  const fleet = [primary, ...followers];
  const work = join(root, 'work');
  execFileSync('git', ['clone', '--quiet', fleetRemote, work]);
  const gitEnv = { ...process.env, GIT_AUTHOR_NAME: 'b', GIT_AUTHOR_EMAIL: 'b@b', GIT_COMMITTER_NAME: 'b', GIT_COMMITTER_EMAIL: 'b@b' };
  for (const [how, i] of [['webhook', 1], ['polling (followers every 1 s; the primary by webhook)', 2]] as const) {
    execFileSync('git', ['pull', '--quiet', '--ff-only'], { cwd: work, env: gitEnv });
    const file = targetFile(n + 100_000 + i, 'cluster-1');
    mkdirSync(join(work, file.path, '..'), { recursive: true });
    writeFileSync(join(work, file.path), file.content!);
    execFileSync('git', ['add', '-A'], { cwd: work });
    execFileSync('git', ['commit', '--quiet', '-m', 'pr'], { cwd: work, env: gitEnv });
    execFileSync('git', ['push', '--quiet', 'origin', 'HEAD:main'], { cwd: work });
    const t0 = performance.now();
    const body = JSON.stringify({ ref: 'refs/heads/main' });
    const signature = `sha256=${createHmac('sha256', WEBHOOK).update(body).digest('hex')}`;
    const targets = how === 'webhook' ? fleet : [primary];
    for (const s of targets) void fetch(`${s.url}/api/v1/sync`, { method: 'POST', headers: { 'x-hub-signature-256': signature }, body });
    const address = `"${/ip_address: (\S+)/.exec(file.content!)![1]}:9100"`;
    const times = await Promise.all(
      fleet.map(async (s, k) => {
        const sdFile = join(fleetDirs[k]!.sd, 'node.json');
        while (!readFileSync(sdFile, 'utf8').includes(address)) await new Promise((resolve) => setTimeout(resolve, 5));
        return performance.now() - t0;
      }),
    );
    console.log(`push → SD on every server, by ${how}: ${times.map((t) => ms(t)).join(', ')}`);
  }
  for (const s of fleet) await s.stop();
} finally {
  rmSync(root, { recursive: true, force: true });
}
