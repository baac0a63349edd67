import * as fs from 'node:fs';
import { join } from 'node:path';
import type { Change } from '../src/repo/store.js';

/** A config repo of `targets` GPU nodes spread over `groups` logical groups, as change set. */
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

export function writeFiles(dir: string, files: Change[]): void {
  const made = new Set<string>();
  for (const { path, content } of files) {
    const parent = join(dir, path, '..');
    if (!made.has(parent)) fs.mkdirSync(parent, { recursive: true }), made.add(parent);
    fs.writeFileSync(join(dir, path), content ?? '');
  }
}

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export const ms = (n: number) => `${n.toFixed(n < 10 ? 2 : 1)} ms`;
