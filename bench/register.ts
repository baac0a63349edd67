// npm run bench:register [-- --targets 10000 --clients 64 --requests 2000 --sd-layout file|group --rounds 1]
// Sustained self-registrations against the built `aami serve` in its own process, then a
// durability check (every 201 is in Git and in the SD file). Baseline in the same run: the
// git CLI making the same commit (target file + token use) for each registration, one by one.
// With --rounds N, N storms one after another on the same server: the first is a fresh
// server's (V8 still compiling the hot code on its helper threads: ~1 s of their CPU at 10k
// targets, perf), the later ones a warmed server's.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { machineCpu, startBenchServer, type BenchServer } from './server.js';
import { registrationStorm } from './storm.js';
import { bareRepoWith, gitCliCommitsPerSecond, ms, percentile, syntheticRepo } from './synthetic.js';

const { values } = parseArgs({
  options: {
    targets: { type: 'string', default: '10000' },
    clients: { type: 'string', default: '64' },
    requests: { type: 'string', default: '2000' },
    'sd-layout': { type: 'string', default: 'file' },
    rounds: { type: 'string', default: '1' },
  },
});
const existing = Number(values.targets);
const clients = Number(values.clients);
const requests = Number(values.requests);
const rounds = Number(values.rounds);
// Each round's addresses are 10.<200 + round>.x.y.
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 55) throw new Error('--rounds: a whole number from 1 to 55');
const root = mkdtempSync(join(tmpdir(), 'aami-bench-register-'));
let server: BenchServer | undefined;

try {
  console.log(`# registrations — ${existing} targets in the repo, ${clients} concurrent clients, ${requests} registrations${rounds > 1 ? ` a round, ${rounds} rounds` : ''}, --sd-layout ${values["sd-layout"]}, node ${process.version}`);
  const dirs = { repo: join(root, 'repo'), sd: join(root, 'sd'), state: join(root, 'state') };
  bareRepoWith(dirs.repo, syntheticRepo(existing));
  const layout = values['sd-layout'];
  server = await startBenchServer(dirs, ['--sd-layout', layout]);
  const made = await server.call('POST', '/api/v1/bootstrap-tokens', { name: 'bench', default_group_id: 'cluster-0', max_uses: requests * rounds, expires_at: '2099-01-01T00:00:00Z' });
  if (made.status !== 201) throw new Error(`the bench's token was refused (${made.status}): ${JSON.stringify(made.json)}`);
  const created = made.json as { token: string };

  const acknowledged: string[] = [];
  const lines: string[] = [];
  for (let round = 0; round < rounds; round++) {
    const splitBefore = server.cpuSplit();
    const childrenBefore = server.finishedChildrenCpuSeconds();
    const clientBefore = process.cpuUsage();
    const machineBefore = machineCpu();
    // The round's own peak (VmHWM is the process's, start-up's whole-fleet compile included): sampled every 50 ms.
    let roundPeak = 0;
    const sampler = setInterval(() => (roundPeak = Math.max(roundPeak, server!.memory().rssMb)), 50);
    const storm = await registrationStorm(server.url, created.token, { clients, requests, prefix: round ? `bench-r${round}` : 'bench', net: 200 + round }).finally(() => clearInterval(sampler));
    const machineAfter = machineCpu();
    const client = process.cpuUsage(clientBefore);
    const splitAfter = server.cpuSplit();
    const children = server.finishedChildrenCpuSeconds() - childrenBefore;
    const main = splitAfter.main - splitBefore.main;
    const others = splitAfter.others - splitBefore.others;
    const cpu = main + others;
    // The clients run on this machine too: what they and the server leave of its cores is the headroom.
    const machineBusy = (machineAfter.busy - machineBefore.busy) / (machineAfter.total - machineBefore.total);
    const memory = server.memory();
    acknowledged.push(...storm.acknowledged);
    const { rate, latencies, statuses } = storm;
    const perRegistration = (seconds: number) => ((seconds / requests) * 1000).toFixed(2);
    const name = rounds === 1 ? 'aami serve' : `round ${round + 1}${round ? '' : ' (fresh)'}`;
    lines.push(`${name}: ${rate.toFixed(0)} registrations/s; latency p50 ${ms(percentile(latencies, 50))}, p99 ${ms(percentile(latencies, 99))}, max ${ms(latencies.at(-1)!)}`);
    lines.push(`            ${perRegistration(cpu)} ms of server CPU a registration (main thread ${perRegistration(main)}, other threads ${perRegistration(others)}), its finished git children (repacks) ${perRegistration(children)} ms; the bench process (its clients) ${perRegistration((client.user + client.system) / 1e6)} ms; the machine's ${machineAfter.cpus} CPUs ${(machineBusy * 100).toFixed(0)}% busy`);
    lines.push(`            RSS ${memory.rssMb.toFixed(0)} MB at its end, ${Math.max(roundPeak, memory.rssMb).toFixed(0)} the highest sampled during it (the process's peak so far ${memory.peakMb.toFixed(0)}); statuses ${JSON.stringify(Object.fromEntries(statuses))}`);
  }
  // Durable and served: every 201 is in the branch's tree and, once compiled (up to 30 s), in the SD file.
  const tree = execFileSync('git', ['--git-dir', dirs.repo, 'ls-tree', '-r', '--name-only', 'main', 'targets/cluster-0'], { encoding: 'utf8', maxBuffer: 1 << 28 });
  const unserved = () => {
    // Every registration goes to group cluster-0: its shard, or the job's one file.
    const sd = readFileSync(join(dirs.sd, layout === 'group' ? 'node/cluster-0.json' : 'node.json'), 'utf8');
    return acknowledged.filter((h) => !sd.includes(`"hostname":"${h}"`));
  };
  for (let i = 0; i < 300 && unserved().length; i++) await new Promise((resolve) => setTimeout(resolve, 100));
  const missing = [...new Set([...acknowledged.filter((h) => !tree.includes(`/${h}.yaml`)), ...unserved()])];
  // Settled: the storm's last compile is in the SD file (above), then 3 s of quiet.
  await new Promise((resolve) => setTimeout(resolve, 3000));
  const settled = server.memory();
  const commits = Number(execFileSync('git', ['--git-dir', dirs.repo, 'rev-list', '--count', 'main'], { encoding: 'utf8' })) - 2;
  await server.stop();
  for (const line of lines) console.log(line);
  console.log(`            settled RSS ${settled.rssMb.toFixed(0)} MB; the process's peak over its whole life ${settled.peakMb.toFixed(0)} (its start-up, the storms and the memory release after them); ${commits} commits`);
  console.log(`            durability: ${acknowledged.length - missing.length}/${acknowledged.length} acknowledged registrations in Git and in the SD file`);

  // Baseline: the git CLI making the same commit for each registration, one by one.
  const cliCount = 40;
  const cliRate = gitCliCommitsPerSecond(dirs.repo, root, cliCount, existing + 10_000);
  console.log(`git CLI   : ${cliRate.toFixed(0)} commits/s (hash-object ×2, update-index, write-tree, commit-tree, update-ref; ${cliCount} commits)`);
} finally {
  await server?.stop(); // stopped already, unless the bench failed half-way
  rmSync(root, { recursive: true, force: true });
}
