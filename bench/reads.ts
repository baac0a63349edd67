// npm run bench:reads [-- --targets 10000 --big 100000 --clients 64 --requests 1000 --rounds 3 --calls 40]   (--big 0: no second size)
// Reads never starve writes (issue 15): the built `aami serve` on a synthetic repo.
//  1. 64 clients registering, alone (the baseline), then the same storm while one client
//     loops on GET /api/v1/targets and one on GET /api/v1/sd/prometheus, as `watch curl`
//     and a polling http_sd client do (no If-None-Match), each in its own process, started
//     and past its first read before the storm; in rounds, the median ratio printed;
//  2. the server's CPU per GET /api/v1/targets at 10k and 100k targets: the first (every
//     target rendered), unchanged (cached bytes), after a heartbeat (one target re-rendered),
//     with If-None-Match (304), a filtered page, and http_sd; from its process_cpu_seconds_total.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ADMIN, startBenchServer, type BenchServer } from './server.js';
import { registrationStorm, type Storm } from './storm.js';
import { bareRepoWith, ms, percentile, syntheticRepo } from './synthetic.js';

const { values } = parseArgs({
  options: {
    targets: { type: 'string', default: '10000' },
    big: { type: 'string', default: '100000' },
    clients: { type: 'string', default: '64' },
    requests: { type: 'string', default: '1000' },
    rounds: { type: 'string', default: '3' },
    calls: { type: 'string', default: '40' },
  },
});
const clients = Number(values.clients);
const requests = Number(values.requests);
const calls = Number(values.calls);
const rounds = Number(values.rounds);
const root = mkdtempSync(join(tmpdir(), 'aami-bench-reads-'));

type Server = BenchServer;

async function serverWith(targets: number, name: string): Promise<Server> {
  const repo = join(root, name, 'repo');
  bareRepoWith(repo, syntheticRepo(targets));
  return startBenchServer({ repo, sd: join(root, name, 'sd'), state: join(root, name, 'state') });
}

const line = (what: string, storm: Storm) =>
  `${what}: ${storm.rate.toFixed(0)} registrations/s; p50 ${ms(percentile(storm.latencies, 50))}, p99 ${ms(percentile(storm.latencies, 99))}; statuses ${JSON.stringify(Object.fromEntries(storm.statuses))}`;

/**
 * A reader process (bench/reader.ts) looping on `path`, once its first read is done (a
 * storm of ~1 s must not carry the readers' own start-up); `stop` ends it: how many reads and bytes.
 */
async function reader(url: string, path: string): Promise<{ stop(): Promise<{ count: number; bytes: number }> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/reader.ts', `${url}${path}`], { env: { ...process.env, AAMI_CREDENTIAL: ADMIN }, stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.startsWith('ready\n')) resolve();
    });
    void exited.then(() => reject(new Error(`the reader of ${path} exited before its first read`)));
  });
  return {
    async stop() {
      child.stdin!.end();
      if ((await exited) !== 0) throw new Error(`the reader of ${path} failed`);
      return JSON.parse(out.slice('ready\n'.length)) as { count: number; bytes: number };
    },
  };
}

/** The server's CPU milliseconds per call of `request`, over `n` calls (`before` runs ahead of each, and is measured alone too). */
async function cpuPerCall(server: Server, n: number, request: () => Promise<unknown>, before?: () => Promise<unknown>): Promise<number> {
  const measure = async (run: () => Promise<unknown>) => {
    const start = server.cpuSeconds();
    for (let i = 0; i < n; i++) await run();
    const end = server.cpuSeconds();
    return ((end - start) * 1000) / n;
  };
  const scrape = await measure(async () => {}); // the measuring alone, with nothing between
  if (!before) return (await measure(request)) - scrape;
  const alone = await measure(before);
  return (await measure(async () => (await before(), await request()))) - alone;
}

async function getAll(server: Server, path: string, headers: Record<string, string> = {}) {
  const response = await fetch(`${server.url}${path}`, { headers: { authorization: `Bearer ${ADMIN}`, ...headers } });
  const body = await response.arrayBuffer();
  return { status: response.status, bytes: body.byteLength, etag: response.headers.get('etag') };
}

async function cpuFigures(targets: number) {
  const started = performance.now();
  const server = await serverWith(targets, `cpu-${targets}`);
  console.log(`\n# CPU of reads at ${targets} targets (server started in ${((performance.now() - started) / 1000).toFixed(1)} s; ${calls} calls each)`);
  try {
    const token = (await server.call('POST', '/api/v1/bootstrap-tokens', { name: 'bench', default_group_id: 'cluster-0', max_uses: 10, expires_at: '2099-01-01T00:00:00Z' })).json.token as string;
    const node = (await server.call('POST', '/api/v1/bootstrap/register', { hostname: 'bench-node', ip_address: '10.250.0.1' }, token)).json.node_credential as string;
    const heartbeat = () => server.call('POST', '/api/v1/nodes/heartbeat', undefined, node);

    // The reads' own peak (VmHWM is the process's, start-up's whole-fleet compile included): sampled every 50 ms.
    const rss0 = server.memory().rssMb;
    let readsPeak = rss0;
    const sampler = setInterval(() => (readsPeak = Math.max(readsPeak, server.memory().rssMb)), 50);
    const cpu0 = server.cpuSeconds();
    const first = await getAll(server, '/api/v1/targets');
    const firstMs = ((server.cpuSeconds()) - cpu0) * 1000;
    const rss1 = server.memory().rssMb;
    const unchanged = await cpuPerCall(server, calls, () => getAll(server, '/api/v1/targets'));
    const afterHeartbeat = await cpuPerCall(server, calls, () => getAll(server, '/api/v1/targets'), heartbeat);
    const { etag } = await getAll(server, '/api/v1/targets');
    const notModified = await cpuPerCall(server, calls, async () => {
      const answer = await getAll(server, '/api/v1/targets', { 'if-none-match': etag ?? '' });
      if (answer.status !== 304) throw new Error(`expected 304, got ${answer.status}`);
    });
    const page = await cpuPerCall(server, calls, () => getAll(server, '/api/v1/targets?label=rack%3Dr7&limit=100'));
    const sdFirst = await getAll(server, '/api/v1/sd/prometheus');
    const sd = await cpuPerCall(server, calls, () => getAll(server, '/api/v1/sd/prometheus'));
    clearInterval(sampler);
    const rssEnd = server.memory().rssMb;
    console.log(`GET /api/v1/targets (${(first.bytes / 1e6).toFixed(1)} MB):`);
    console.log(`  first call, every target rendered : ${ms(firstMs)} CPU; resident memory ${rss0.toFixed(0)} → ${rss1.toFixed(0)} MB`);
    console.log(`  unchanged, cached bytes            : ${ms(unchanged)} CPU per call`);
    console.log(`  after a heartbeat (one re-rendered): ${ms(afterHeartbeat)} CPU per call (the heartbeat's own CPU taken off)`);
    console.log(`  If-None-Match, 304                 : ${ms(notModified)} CPU per call`);
    console.log(`  ?label=rack=r7&limit=100           : ${ms(page)} CPU per call`);
    console.log(`GET /api/v1/sd/prometheus (${(sdFirst.bytes / 1e6).toFixed(1)} MB), unchanged: ${ms(sd)} CPU per call`);
    console.log(`resident memory through these reads: ${rss0.toFixed(0)} MB before, ${rssEnd.toFixed(0)} after them all, ${Math.max(readsPeak, rssEnd).toFixed(0)} the highest sampled`);
  } finally {
    await server.stop();
  }
}

try {
  const existing = Number(values.targets);
  console.log(`# registrations with and without readers — ${existing} targets, ${clients} clients, ${requests} registrations per storm, ${rounds} rounds`);
  const server = await serverWith(existing, 'storm');
  try {
    const token = (await server.call('POST', '/api/v1/bootstrap-tokens', { name: 'bench', default_group_id: 'cluster-0', max_uses: (2 * rounds + 1) * requests, expires_at: '2099-01-01T00:00:00Z' })).json.token as string;
    const measured = async (what: string, prefix: string, net: number, readers: boolean) => {
      const looping = readers ? await Promise.all([reader(server.url, '/api/v1/targets'), reader(server.url, '/api/v1/sd/prometheus')]) : [];
      const cpu = server.cpuSeconds();
      const result = await registrationStorm(server.url, token, { clients, requests, prefix, net });
      const seconds = (server.cpuSeconds()) - cpu;
      const reads = await Promise.all(looping.map((r) => r.stop()));
      console.log(`${line(what, result)}; server CPU ${seconds.toFixed(1)} s`);
      if (reads.length) console.log(`  readers: GET /api/v1/targets ${reads[0]!.count}× (${(reads[0]!.bytes / 1e6).toFixed(0)} MB), GET /api/v1/sd/prometheus ${reads[1]!.count}× (${(reads[1]!.bytes / 1e6).toFixed(0)} MB)`);
      return result.rate;
    };
    // A first storm warms the server up (its first storm is always the slowest); it is not counted.
    await registrationStorm(server.url, token, { clients, requests: Math.min(requests, 500), prefix: 'warm', net: 199 });
    // Then rounds of alone / with readers, side by side, so the machine's drift (other work on it) hits both alike.
    const ratios: number[] = [];
    for (let round = 1; round <= rounds; round++) {
      const alone = await measured(`round ${round}: storm alone            `, `alone${round}`, 200 + 2 * round, false);
      const read = await measured(`round ${round}: storm + 2 looping readers`, `read${round}`, 201 + 2 * round, true);
      ratios.push(read / alone);
    }
    const median = [...ratios].sort((a, b) => a - b)[Math.floor(ratios.length / 2)]!;
    console.log(`with readers: ${ratios.map((r) => `${(100 * r).toFixed(0)} %`).join(', ')} of the storm alone; median ${(100 * median).toFixed(0)} % (goal ≥ 80 %)`);
  } finally {
    await server.stop();
  }
  await cpuFigures(existing);
  if (Number(values.big)) await cpuFigures(Number(values.big));
} finally {
  rmSync(root, { recursive: true, force: true });
}
