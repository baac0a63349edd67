// npm run bench:startup [-- --sizes 10000,100000 --sd-layout file|group]
// Cold start of the serving process to a healthy answer, on a packed repository of N
// targets: the first start (nothing in the state directory) and a restart (the parse cache
// and catalog state kept), with the server's resident memory once it serves, and once it has
// settled (its background compile done and the server quiet for 3 s). Baseline in
// the same run: the git CLI checking the same commit out into a directory (what any server
// that reads every file from a working tree pays before it parses anything).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startBenchServer } from './server.js';
import { bareRepoWith, ms, syntheticRepo } from './synthetic.js';

const { values } = parseArgs({ options: { sizes: { type: 'string', default: '10000,100000' }, 'sd-layout': { type: 'string', default: 'file' } } });
const layout = ['--sd-layout', values['sd-layout']];
const root = mkdtempSync(join(tmpdir(), 'aami-bench-startup-'));
try {
  console.log(`# start-up — --sd-layout ${values['sd-layout']}, node ${process.version}, ${new Date().toISOString()}`);
  console.log('targets   first start  RSS      restart     RSS      settled  peak RSS   git checkout (baseline)');
  for (const n of values.sizes.split(',').map(Number)) {
    const dirs = { repo: join(root, `repo-${n}`), sd: join(root, `sd-${n}`), state: join(root, `state-${n}`) };
    bareRepoWith(dirs.repo, syntheticRepo(n));
    const checkout = join(root, `checkout-${n}`);
    const t0 = performance.now();
    execFileSync('git', ['clone', '--quiet', dirs.repo, checkout]);
    const checkoutMs = performance.now() - t0;
    rmSync(checkout, { recursive: true, force: true });

    const first = await startBenchServer(dirs, layout);
    const firstMemory = first.memory();
    await first.stop();
    const again = await startBenchServer(dirs, layout);
    await new Promise((resolve) => setTimeout(resolve, 1000)); // let it settle, as it serves
    const againMemory = again.memory();
    // Settled: the compile it started in the background has finished (health names its duration), then 3 s of quiet.
    for (let i = 0; ; i++) {
      const health = (await again.call('GET', '/api/v1/health')).json as { compiler?: { last_duration_ms?: number | null } };
      if (health.compiler?.last_duration_ms != null) break;
      if (i === 600) throw new Error('the restart\'s background compile did not finish in 60 s');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const settledMemory = again.memory();
    await again.stop();
    const peak = Math.max(firstMemory.peakMb, againMemory.peakMb);
    console.log(
      `${String(n).padEnd(10)}${ms(first.startMs).padEnd(13)}${`${firstMemory.rssMb.toFixed(0)} MB`.padEnd(9)}${ms(again.startMs).padEnd(12)}${`${againMemory.rssMb.toFixed(0)} MB`.padEnd(9)}${`${settledMemory.rssMb.toFixed(0)} MB`.padEnd(9)}${`${peak.toFixed(0)} MB`.padEnd(11)}${ms(checkoutMs)}`,
    );
    rmSync(dirs.repo, { recursive: true, force: true });
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
