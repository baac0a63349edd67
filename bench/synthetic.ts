import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import type { Change } from '../src/git/repository.js';

/** A config repo of `targets` GPU nodes spread over `groups` logical groups, as a change set. */
export function syntheticRepo(targets: number, groups = Math.max(1, Math.ceil(targets / 100))): Change[] {
  const files: Change[] = [
    { path: 'aami.yaml', content: 'exporters:\n  node_exporter: {job: node, port: 9100}\n  dcgm_exporter: {job: dcgm, port: 9400}\n' },
    { path: 'groups/production.yaml', content: 'id: production\nname: production\nnamespace: environment\nlabels: {environment: production}\n' },
  ];
  for (let g = 0; g < groups; g++) {
    files.push({ path: `groups/cluster-${g}.yaml`, content: `id: cluster-${g}\nname: cluster-${g}\nnamespace: logical\nlabels: {cluster: c${g}}\n` });
  }
  for (let i = 0; i < targets; i++) files.push(targetFile(i, `cluster-${i % groups}`));
  return files;
}

export function targetFile(i: number, group: string, rack = i % 40): Change {
  const host = `gpu-${String(i).padStart(6, '0')}`;
  const ip = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
  return {
    path: `targets/${group}/${host}.yaml`,
    content: `hostname: ${host}\nip_address: ${ip}\nprimary_group: ${group}\ngroups: [production]\nexporters:\n  - {type: node_exporter}\n  - {type: dcgm_exporter}\nlabels: {rack: r${rack}, gpu_model: H100, gpu_count: 8}\n`,
  };
}

/**
 * A bare repository holding `files` in one commit, made by `git fast-import`: seconds for 100k
 * files, and packed, as every real repository of that size is (git's auto-gc packs past
 * ~6,700 loose objects).
 */
export function bareRepoWith(dir: string, files: Change[], message = 'Initial config'): void {
  fs.mkdirSync(dir, { recursive: true });
  execFileSync('git', ['init', '--quiet', '--bare', '--initial-branch=main', dir]);
  const chunks: string[] = ['commit refs/heads/main\n', 'committer bench <bench@aami> 1764115200 +0000\n', `data ${Buffer.byteLength(message)}\n${message}\n`];
  for (const { path, content } of files) {
    if (content === null) continue;
    chunks.push(`M 100644 inline ${path}\ndata ${Buffer.byteLength(content)}\n${content}\n`);
  }
  execFileSync('git', ['--git-dir', dir, 'fast-import', '--quiet'], { input: chunks.join(''), maxBuffer: 1 << 30 });
}

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export const ms = (n: number) => `${n.toFixed(n < 10 ? 2 : 1)} ms`;

/**
 * The baseline the benches print beside the server: the git CLI making a registration's
 * commit (a target file and the token's use count) `count` times, one by one, on the bare
 * repository `repo` (through a temporary index in `scratch`). Commits per second.
 */
export function gitCliCommitsPerSecond(repo: string, scratch: string, count: number, firstIndex: number): number {
  const env = { ...process.env, GIT_INDEX_FILE: join(scratch, 'bench-index'), GIT_AUTHOR_NAME: 'b', GIT_AUTHOR_EMAIL: 'b@b', GIT_COMMITTER_NAME: 'b', GIT_COMMITTER_EMAIL: 'b@b' };
  const git = (args: string[], input?: string) => execFileSync('git', ['--git-dir', repo, ...args], { input, encoding: 'utf8', env }).trim();
  git(['read-tree', 'main']);
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const target = targetFile(firstIndex + i, 'cluster-0');
    const blob = git(['hash-object', '-w', '--stdin'], target.content!);
    const token = git(['hash-object', '-w', '--stdin'], `uses: ${i}\n`);
    git(['update-index', '--add', '--cacheinfo', `100644,${blob},${target.path}`, '--cacheinfo', `100644,${token},tokens/bench.yaml`]);
    const tree = git(['write-tree']);
    const commit = git(['commit-tree', tree, '-p', 'main', '-m', `Register ${target.path}`]);
    git(['update-ref', 'refs/heads/main', commit]);
  }
  return count / ((performance.now() - t0) / 1000);
}
