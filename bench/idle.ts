// npm run bench:idle [-- --targets 10000,100000 --registrations 10 --layouts file,group --per-group 100 --pause-ms 10500 --host-prefix idle-]
// One client at a time (issue 15): each self-registration on an idle server, its latency,
// the server's CPU for it (answer, commit, compile, SD write) and over the whole cycle until
// the next one (what an idle server does after a change: the restart image saved once
// quiet, the memory released), and the time from its 201 to
// the SD file holding it, with one SD file per job (--sd-layout file) and one per group
// (--sd-layout group). Baseline in the same run: the git CLI making the same commits.
// Idle: the SD write before was --pause-ms ago, longer than a replaced SD file is left
// untouched (RETIRED_MS) by default; a shorter pause measures registrations that follow
// one another. The time to the SD file is to the rename that put the new file in its place
// (seen by a stat of its inode every millisecond); the file is then read whole to check it
// holds the registration, untimed (a read of the 37 MB file at 100k targets takes ~80 ms).
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startBenchServer } from './server.js';
import { RETIRED_MS } from '../src/compile/output.js';
import { bareRepoWith, gitCliCommitsPerSecond, ms, percentile, syntheticRepo } from './synthetic.js';

const { values } = parseArgs({ options: { targets: { type: 'string', default: '10000,100000' }, registrations: { type: 'string', default: '10' }, 'pause-ms': { type: 'string', default: String(RETIRED_MS + 500) }, layouts: { type: 'string', default: 'file,group' }, 'per-group': { type: 'string', default: '100' }, 'host-prefix': { type: 'string', default: 'idle-' } } });
// Where in the job's file (hosts in name order; the repo's are gpu-000000…) each one lands: `idle-` after them all, `a-` before, `gpu-050000-` amid them.
// With --sd-layout file a spare is written from the first chunk that changed on: the figures depend on it.
const hostPrefix = values['host-prefix'];
// Targets a group directory holds: a registration writes its directory's tree again (~45 bytes an entry).
const perGroup = Number(values['per-group']);
if (!Number.isInteger(perGroup) || perGroup < 1) throw new Error('--per-group: a whole number, at least 1');
const sizes = values.targets.split(',').map(Number);
const count = Number(values.registrations);
const pauseMs = Number(values['pause-ms']);
const root = mkdtempSync(join(tmpdir(), 'aami-bench-idle-'));
const pause = (msec: number) => new Promise((resolve) => setTimeout(resolve, msec));
const median = (list: number[]) => percentile([...list].sort((a, b) => a - b), 50);

/**
 * Polls `file` until a new file takes its name (an inode other than `before`; SD files are renamed into
 * place), then reads it whole to check it holds `needle`: ms from `since` to the rename seen.
 */
async function seen(file: string, before: number | undefined, needle: string, since: number): Promise<number> {
  for (let i = 0; i < 20_000; i++) {
    const now = statSync(file, { throwIfNoEntry: false })?.ino;
    if (now !== undefined && now !== before) {
      const at = performance.now() - since;
      if (!readFileSync(file, 'utf8').includes(needle)) throw new Error(`${file} was written without ${needle}`);
      return at;
    }
    await pause(1);
  }
  throw new Error(`${needle} never reached ${file}`);
}

try {
  console.log(`# one registration at a time on an idle server — ${count} registrations each, ${pauseMs} ms apart, ${perGroup} targets a group directory, host names ${hostPrefix}…, node ${process.version}`);
  for (const size of sizes) {
    const repo = join(root, `repo-${size}`);
    bareRepoWith(repo, syntheticRepo(size, Math.ceil(size / perGroup)));
    for (const layout of values.layouts.split(',')) {
      const base = join(root, `${size}-${layout}`);
      const server = await startBenchServer({ repo, sd: join(base, 'sd'), state: join(base, 'state') }, ['--sd-layout', layout]);
      try {
        const token = (await server.call('POST', '/api/v1/bootstrap-tokens', { name: `idle-${layout}`, default_group_id: 'cluster-0', max_uses: count + 3, expires_at: '2099-01-01T00:00:00Z' })).json.token as string;
        const sdFile = join(base, 'sd', layout === 'file' ? 'node.json' : 'node/cluster-0.json');
        const latencies: number[] = [];
        const toSd: number[] = [];
        const cpu: number[] = [];
        // Of it, the main thread's (JavaScript, the event loop); the rest is V8's helpers (GC) and libuv's file I/O.
        const mainCpu: number[] = [];
        // The CPU from one registration to the next: its own, and what the idle server does after it (the restart image, saved once quiet).
        const cycles: number[] = [];
        let cycleStart: number | undefined;
        for (let i = -3; i <= count; i++) {
          const address = `10.${layout === 'file' ? 201 : 202}.${(size / 1000) & 255}.${i + 3}`;
          await pause(pauseMs); // idle: what the previous one started (compile, SD write) is over
          if (cycleStart !== undefined) cycles.push((server.cpuSeconds() - cycleStart) * 1000);
          if (i === count) break; // the last cycle measured
          const inode = statSync(sdFile, { throwIfNoEntry: false })?.ino;
          const cpu0 = server.cpuSeconds();
          const main0 = server.cpuSplit().main;
          const t0 = performance.now();
          const response = await fetch(`${server.url}/api/v1/bootstrap/register`, {
            method: 'POST',
            headers: { authorization: `Bearer ${token}` },
            body: JSON.stringify({ hostname: `${hostPrefix}${layout}-${i + 3}`, ip_address: address, facts: { gpu_model: 'H100', gpu_count: 8 } }),
          });
          await response.arrayBuffer();
          if (response.status !== 201) throw new Error(`registration answered ${response.status}`);
          const answered = performance.now();
          const after = await seen(sdFile, inode, `"${address}:9100"`, answered);
          await pause(100); // the CPU of the tail (the SD stamp, the parse cache) counted too
          if (i < 0) continue; // the first three warm the server up
          cycleStart = cpu0;
          latencies.push(answered - t0);
          toSd.push(after);
          cpu.push((server.cpuSeconds() - cpu0) * 1000);
          mainCpu.push((server.cpuSplit().main - main0) * 1000);
        }
        // The baseline: a cycle without a registration (timers, the heartbeat reaper).
        const idle0 = server.cpuSeconds();
        await pause(pauseMs);
        const idleCycle = (server.cpuSeconds() - idle0) * 1000;
        const memory = server.memory();
        console.log(`${size} targets, --sd-layout ${layout}: latency p50 ${ms(median(latencies))}, max ${ms(Math.max(...latencies))}; 201 → SD file p50 ${ms(median(toSd))}, max ${ms(Math.max(...toSd))}; server CPU per registration p50 ${ms(median(cpu))} (main thread ${ms(median(mainCpu))}), over each whole cycle of ${(pauseMs / 1000).toFixed(1)} s mean ${ms(cycles.reduce((a, b) => a + b, 0) / cycles.length)} (${cycles.map((c) => c.toFixed(0)).join(', ')}; a cycle without a registration ${ms(idleCycle)}); RSS ${memory.rssMb.toFixed(0)} MB`);
      } finally {
        await server.stop();
      }
    }
    const cli = gitCliCommitsPerSecond(repo, root, 40, size + 10_000);
    console.log(`${size} targets, git CLI: ${cli.toFixed(0)} commits/s one by one (${ms(1000 / cli)} a commit)`);
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
