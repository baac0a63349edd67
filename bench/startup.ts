// npm run bench:startup [-- --sizes 10000,100000 --sd-layout file|group --restarts 1]
// Cold start of the serving process to a healthy answer, on a packed repository of N
// targets: the first start (nothing in the state directory), a restart after a clean stop
// (from the restart image it saved), one after a kill -9 at once (no image: from Git, the
// parse cache and the catalog state) and one after a kill -9 once quiet (from the image it
// saved while serving), with the server's resident memory once it serves, and once it has
// settled (its background compile done and the server quiet for 3 s). Baseline in
// the same run: the git CLI checking the same commit out into a directory (what any server
// that reads every file from a working tree pays before it parses anything). With
// --restarts N, each restart is measured N times on the same state (median, then the range):
// one restart varies by ±0.5 s on a busy machine.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startBenchServer } from './server.js';
import { bareRepoWith, ms, syntheticRepo } from './synthetic.js';

const { values } = parseArgs({ options: { sizes: { type: 'string', default: '10000,100000' }, 'sd-layout': { type: 'string', default: 'file' }, restarts: { type: 'string', default: '1' } } });
const restarts = Number(values.restarts);
if (!Number.isInteger(restarts) || restarts < 1) throw new Error('--restarts: a whole number, at least 1');
const layout = ['--sd-layout', values['sd-layout']];
const root = mkdtempSync(join(tmpdir(), 'aami-bench-startup-'));
try {
  console.log(`# start-up — --sd-layout ${values['sd-layout']}, node ${process.version}, ${new Date().toISOString()}`);
  // The restart column holds a median and a range when there are several.
  const restartWidth = restarts === 1 ? 20 : 32; // past the longest heading, 'kill -9 once quiet'
  console.log(`targets   first start  RSS      ${'restart'.padEnd(restartWidth)}RSS      settled  peak RSS   ${'kill -9 at once'.padEnd(restartWidth)}${'kill -9 once quiet'.padEnd(restartWidth)}git checkout (baseline)`);
  for (const n of values.sizes.split(',').map(Number)) {
    const dirs = { repo: join(root, `repo-${n}`), sd: join(root, `sd-${n}`), state: join(root, `state-${n}`) };
    bareRepoWith(dirs.repo, syntheticRepo(n));
    const checkout = join(root, `checkout-${n}`);
    const t0 = performance.now();
    execFileSync('git', ['clone', '--quiet', dirs.repo, checkout]);
    const checkoutMs = performance.now() - t0;
    rmSync(checkout, { recursive: true, force: true });
    // The checkout's 100k files are written back to the disk for tens of seconds after it:
    // flushed here, so the server's start-ups do not wait behind them.
    execFileSync('sync');

    const first = await startBenchServer(dirs, layout);
    const firstMemory = first.memory();
    await first.stop();
    // Until the background compile it started has finished (health names its duration).
    const compiled = async (server: Awaited<ReturnType<typeof startBenchServer>>) => {
      for (let i = 0; ; i++) {
        const health = (await server.call('GET', '/api/v1/health')).json as { compiler?: { last_duration_ms?: number | null } };
        if (health.compiler?.last_duration_ms != null) return;
        if (i === 600) throw new Error('the restart\'s background compile did not finish in 60 s');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    };
    const again = await startBenchServer(dirs, layout);
    await new Promise((resolve) => setTimeout(resolve, 1000)); // let it settle, as it serves
    const againMemory = again.memory();
    // Settled: its background compile done, then 3 s of quiet.
    await compiled(again);
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const settledMemory = again.memory();
    await again.stop();
    // Each started after a clean stop (from its restart image); each killed with SIGKILL as
    // soon as its compile is done, so that the next start has no image and builds the catalog
    // from Git, its state and the parse cache; that one killed once it has saved its image
    // while serving (after 5 s of quiet), so the next start takes that image.
    const restartMs = [again.startMs];
    const killedMs: number[] = [];
    const quietMs: number[] = [];
    const kill = (server: Awaited<ReturnType<typeof startBenchServer>>) => new Promise((resolve) => (server.child.once('exit', resolve), server.child.kill('SIGKILL')));
    for (let i = 0; i < restarts; i++) {
      const next = await startBenchServer(dirs, layout);
      if (i > 0) restartMs.push(next.startMs);
      await compiled(next);
      await kill(next);
      const killed = await startBenchServer(dirs, layout);
      if (killed.log().includes('started from the snapshot')) throw new Error('the server killed at once had saved an image: this start is not the long way');
      killedMs.push(killed.startMs);
      await compiled(killed);
      for (let wait = 0; !killed.log().includes('msg="saved the snapshot for a quick start'); wait++) {
        if (wait === 600) throw new Error('no image saved while serving within 60 s');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      await kill(killed);
      const quiet = await startBenchServer(dirs, layout);
      if (!quiet.log().includes('started from the snapshot')) throw new Error('the start after a kill once quiet did not take the image it saved');
      quietMs.push(quiet.startMs);
      await compiled(quiet);
      await quiet.stop();
    }
    const figure = (times: number[]) => {
      times.sort((a, b) => a - b);
      return restarts === 1 ? ms(times[0]!) : `${ms(times[times.length >> 1]!)} (${(times[0]! / 1000).toFixed(2)}–${(times.at(-1)! / 1000).toFixed(2)} s, ${restarts})`;
    };
    const restart = figure(restartMs);
    const afterKill = figure(killedMs);
    const afterQuietKill = figure(quietMs);
    const peak = Math.max(firstMemory.peakMb, againMemory.peakMb);
    console.log(
      `${String(n).padEnd(10)}${ms(first.startMs).padEnd(13)}${`${firstMemory.rssMb.toFixed(0)} MB`.padEnd(9)}${restart.padEnd(restartWidth)}${`${againMemory.rssMb.toFixed(0)} MB`.padEnd(9)}${`${settledMemory.rssMb.toFixed(0)} MB`.padEnd(9)}${`${peak.toFixed(0)} MB`.padEnd(11)}${afterKill.padEnd(restartWidth)}${afterQuietKill.padEnd(restartWidth)}${ms(checkoutMs)}`,
    );
    rmSync(dirs.repo, { recursive: true, force: true });
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
