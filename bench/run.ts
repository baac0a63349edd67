// npm run bench [-- --sizes 1000,10000,100000 --commits 200]
// Prints the figures the foundation issue asks for, each beside a baseline from the same run.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SdSync } from '../src/compile/sd-sync.js';
import { watchRepo } from '../src/compile/watcher.js';
import { silentLogger } from '../src/log.js';
import { GitStore } from '../src/repo/store.js';
import { ms, percentile, syntheticRepo, targetFile, writeFiles } from './synthetic.js';

const { values } = parseArgs({
  options: { sizes: { type: 'string', default: '1000,10000,100000' }, commits: { type: 'string', default: '200' } },
});
const sizes = values.sizes.split(',').map(Number);
const commits = Number(values.commits);
const root = mkdtempSync(join(tmpdir(), 'aami-bench-'));
const author = { name: 'bench', email: 'bench@aami' };

function header(title: string) {
  console.log(`\n## ${title}`);
}

async function benchLoad() {
  header('Cold load + validate + compile (fresh process each)');
  console.log('targets   read      parse     validate  compile   write     total     peak RSS');
  for (const n of sizes) {
    const dir = join(root, `load-${n}`);
    writeFiles(dir, syntheticRepo(n));
    const child = spawnSync(process.execPath, ['--import', 'tsx', 'bench/load-child.ts', dir, join(root, `load-${n}-sd`)], { encoding: 'utf8' });
    if (child.status !== 0) throw new Error(child.stderr);
    const r = JSON.parse(child.stdout) as Record<string, number>;
    const cells = [r.readMs, r.parseMs, r.validateMs, r.compileMs, r.writeMs, r.totalMs].map((v) => ms(v!).padEnd(10));
    console.log(`${String(r.targets).padEnd(10)}${cells.join('')}${r.maxRssMb!.toFixed(0)} MB`);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function benchChange(n: number) {
  header(`One changed target file → SD file rewritten, ${n} targets (watcher, end to end)`);
  const dir = join(root, `watch-${n}`);
  const sdDir = join(root, `watch-${n}-sd`);
  writeFiles(dir, syntheticRepo(n));
  const sync = new SdSync({ fs, repoDir: dir, sdDir, logger: silentLogger });
  await sync.loadAll();
  const watcher = watchRepo(dir, (paths) => sync.reload(paths));
  await watcher.ready;
  const samples: number[] = [];
  for (let i = 0; i < 30; i++) {
    const file = targetFile(i, `cluster-${i % Math.ceil(n / 100)}`, 1000 + i);
    const compiled = sync.nextCompile();
    const started = performance.now();
    fs.writeFileSync(join(dir, file.path), file.content!);
    await compiled;
    samples.push(performance.now() - started);
  }
  await watcher.close();
  await sync.close();
  samples.sort((a, b) => a - b);
  console.log(`p50 ${ms(percentile(samples, 50))}, p90 ${ms(percentile(samples, 90))}, max ${ms(samples.at(-1)!)}; last compile alone ${ms(sync.status.lastDurationMs!)}`);
}

async function benchCommits(n: number, groups: number, label: string) {
  header(`One commit at ${n} targets, ${label}`);
  const dir = join(root, `commit-${n}-${groups}`);
  const store = await GitStore.init({ fs, dir, files: syntheticRepo(n, groups), author });
  const ours: number[] = [];
  for (let i = 0; i < commits; i++) {
    const file = targetFile(n + i, `cluster-${i % groups}`);
    const started = performance.now();
    await store.commit({ message: `Register ${file.path}`, author, changes: [file] });
    ours.push(performance.now() - started);
  }
  await store.close();

  // Baseline: the git CLI making the same kind of commit with plumbing, in the same repo.
  const git = (args: string[], input?: string) => execFileSync('git', args, { cwd: dir, input, encoding: 'utf8' }).trim();
  const cli: number[] = [];
  const cliCommits = Math.min(commits, 50);
  for (let i = 0; i < cliCommits; i++) {
    const file = targetFile(n + commits + i, `cluster-${i % groups}`);
    const started = performance.now();
    const blob = git(['hash-object', '-w', '--stdin'], file.content!);
    git(['update-index', '--add', '--cacheinfo', `100644,${blob},${file.path}`]);
    const tree = git(['write-tree']);
    const commit = git(['commit-tree', tree, '-p', 'HEAD', '-m', `Register ${file.path}`]);
    git(['update-ref', 'refs/heads/main', commit]);
    cli.push(performance.now() - started);
  }
  ours.sort((a, b) => a - b);
  cli.sort((a, b) => a - b);
  const p50 = percentile(ours, 50);
  console.log(`aami store: p50 ${ms(p50)}, p90 ${ms(percentile(ours, 90))}, p99 ${ms(percentile(ours, 99))} (${commits} commits, fsync'd)`);
  console.log(`git CLI   : p50 ${ms(percentile(cli, 50))}, p90 ${ms(percentile(cli, 90))} (${cliCommits} commits: hash-object, update-index, write-tree, commit-tree, update-ref)`);
  console.log(`speed-up at p50: ${(percentile(cli, 50) / p50).toFixed(1)}x`);
  execFileSync('git', ['fsck', '--no-progress'], { cwd: dir });
}

try {
  console.log(`# aami bench — node ${process.version}, ${new Date().toISOString()}`);
  await benchLoad();
  const mid = sizes.includes(10000) ? 10000 : sizes[0]!;
  await benchChange(mid);
  await benchCommits(mid, Math.ceil(mid / 100), 'targets/<group>/ with ~100 targets per group');
  await benchCommits(mid, 1, 'worst case: every target in one group (flat directory)');
} finally {
  rmSync(root, { recursive: true, force: true });
}
