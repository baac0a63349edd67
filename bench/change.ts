// npm run bench:change [-- --targets 10000]
// A person's push into the server's repository → the SD file updated: 1 file and 1,000
// files, measured from the end of `git push` to the SD file holding the change. Baseline in
// the same run: the push itself.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startBenchServer } from './server.js';
import { bareRepoWith, ms, percentile, syntheticRepo, targetFile } from './synthetic.js';

const { values } = parseArgs({ options: { targets: { type: 'string', default: '10000' }, rounds: { type: 'string', default: '5' } } });
const n = Number(values.targets);
const rounds = Number(values.rounds);
const root = mkdtempSync(join(tmpdir(), 'aami-bench-change-'));
const git = (cwd: string, ...args: string[]) => execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, GIT_AUTHOR_NAME: 'b', GIT_AUTHOR_EMAIL: 'b@b', GIT_COMMITTER_NAME: 'b', GIT_COMMITTER_EMAIL: 'b@b' } });
try {
  console.log(`# push → SD — ${n} targets, node ${process.version}, ${new Date().toISOString()}`);
  const dirs = { repo: join(root, 'repo'), sd: join(root, 'sd'), state: join(root, 'state') };
  bareRepoWith(dirs.repo, syntheticRepo(n));
  const server = await startBenchServer(dirs);
  const work = join(root, 'work');
  git(root, 'clone', '--quiet', dirs.repo, work);
  const sdHas = (address: string) => readFileSync(join(dirs.sd, 'node.json'), 'utf8').includes(`"${address}"`);
  let next = n + 1000;
  for (const files of [1, 1000]) {
    const latencies: number[] = [];
    const pushes: number[] = [];
    let cpu = 0;
    for (let round = 0; round < rounds; round++) {
      let last = '';
      for (let i = 0; i < files; i++) {
        const file = targetFile(next++, `cluster-${i % Math.ceil(n / 100)}`);
        mkdirSync(join(work, file.path, '..'), { recursive: true });
        writeFileSync(join(work, file.path), file.content!);
        last = /ip_address: (\S+)/.exec(file.content!)![1]!;
      }
      git(work, 'add', '-A');
      git(work, 'commit', '--quiet', '-m', `${files} files`);
      const cpuBefore = server.cpuSeconds();
      const t0 = performance.now();
      git(work, 'push', '--quiet', 'origin', 'HEAD:main');
      const pushed = performance.now();
      while (!sdHas(`${last}:9100`)) await new Promise((resolve) => setTimeout(resolve, 2));
      latencies.push(performance.now() - pushed);
      pushes.push(pushed - t0);
      cpu += server.cpuSeconds() - cpuBefore;
    }
    latencies.sort((a, b) => a - b);
    pushes.sort((a, b) => a - b);
    console.log(`${String(files).padStart(5)} file(s): push → SD p50 ${ms(percentile(latencies, 50))}, max ${ms(latencies.at(-1)!)}; server CPU ${ms((cpu / rounds) * 1000)} a push; git push itself p50 ${ms(percentile(pushes, 50))}`);
  }
  await server.stop();
} finally {
  rmSync(root, { recursive: true, force: true });
}
