import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { formatProblem } from '../catalog/problem.js';
import { compile } from '../compile/compiler.js';
import { EXIT, parseFlags, UsageError, type Command } from './command.js';
import { loadDirectory } from './validate.js';

type Entries = Map<string, Map<string, Record<string, string>>>; // job → address → labels

async function sdEntries(dir: string): Promise<{ entries: Entries; problems: string[]; credentials: Map<string, string> }> {
  const { catalog, problems } = loadDirectory(dir);
  const entries: Entries = new Map();
  for (const [file, bytes] of compile(catalog)) {
    const job = file.replace(/\.json$/, '');
    const list = JSON.parse(bytes.toString()) as Array<{ targets: string[]; labels: Record<string, string> }>;
    entries.set(job, new Map(list.map((entry) => [entry.targets[0]!, entry.labels])));
  }
  const credentials = new Map([...catalog.apiCredentials.values()].filter((c) => !c.revoked).map((c) => [c.id, `${c.name} (${c.role}${c.expires_at ? `, until ${c.expires_at}` : ''})`]));
  return { entries, problems: problems.map(formatProblem), credentials };
}

/**
 * Who may call the API, before and after: a pull request that grants a role (adds a
 * credential, raises one's role) is called out, so a reviewer sees who gets in.
 */
function credentialLines(before: Map<string, string>, after: Map<string, string>): string[] {
  const lines: string[] = [];
  for (const [id, what] of after) {
    const was = before.get(id);
    if (was === undefined) lines.push(`  + ${id}: ${what}`);
    else if (was !== what) lines.push(`  ~ ${id}: ${was} → ${what}`);
  }
  for (const [id, what] of before) if (!after.has(id)) lines.push(`  - ${id}: ${what}`);
  return lines;
}

function labelChanges(before: Record<string, string>, after: Record<string, string>): string[] {
  const changes: string[] = [];
  for (const key of [...new Set([...Object.keys(before), ...Object.keys(after)])].sort()) {
    if (before[key] === after[key]) continue;
    if (before[key] === undefined) changes.push(`+${key}=${after[key]}`);
    else if (after[key] === undefined) changes.push(`-${key}=${before[key]}`);
    else changes.push(`${key} ${before[key]} → ${after[key]}`);
  }
  return changes;
}

export const diff: Command = {
  name: 'diff',
  summary: 'show what a change does to Prometheus (targets added, removed, relabelled per job)',
  help: `Usage: aami diff [DIR] [--base REV]

Compiles the config repo checkout in DIR (default: the current directory) and the same
repo at REV (default: HEAD), and prints, per Prometheus job, the targets the change adds
(+), removes (-) and relabels (~, with each label change). In pull-request CI:

  aami validate . && aami diff . --base origin/main

Exit status: 0 (the change is valid), 1 (the checkout has invalid files, listed), 2 usage error.

Options:
  -b, --base REV   the revision to compare with (default HEAD)
  -h, --help       show this help`,
  async run(argv, io) {
    const { values, positionals } = parseFlags(argv, { base: { type: 'string', short: 'b' } });
    if (values.help) return io.out(this.help), EXIT.ok;
    if (positionals.length > 1) throw new UsageError('diff takes at most one directory');
    const dir = resolve(positionals[0] ?? '.');
    const base = values.base ?? 'HEAD';
    const baseDir = mkdtempSync(join(tmpdir(), 'aami-diff-'));
    try {
      try {
        const tar = execFileSync('git', ['archive', '--format=tar', base], { cwd: dir, maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'pipe'] });
        execFileSync('tar', ['-x', '-C', baseDir], { input: tar });
      } catch (error) {
        throw new UsageError(`cannot read revision "${base}" of ${dir}: ${String((error as { stderr?: Buffer }).stderr ?? error).trim()}`);
      }
      const before = await sdEntries(baseDir);
      const after = await sdEntries(dir);
      for (const problem of after.problems) io.err(problem);
      let changed = 0;
      for (const job of [...new Set([...before.entries.keys(), ...after.entries.keys()])].sort()) {
        const old = before.entries.get(job) ?? new Map();
        const now = after.entries.get(job) ?? new Map();
        const lines: string[] = [];
        for (const [address, labels] of now) {
          const previous = old.get(address);
          if (!previous) lines.push(`  + ${labels.hostname} ${address}`);
          else if (labelChanges(previous, labels).length) lines.push(`  ~ ${labels.hostname} ${address}: ${labelChanges(previous, labels).join(', ')}`);
        }
        for (const [address, labels] of old) if (!now.has(address)) lines.push(`  - ${labels.hostname} ${address}`);
        if (!lines.length) continue;
        changed += lines.length;
        io.out(`job ${job}:`);
        for (const line of lines.sort((a, b) => a.slice(4).localeCompare(b.slice(4)))) io.out(line);
      }
      if (!changed) io.out(`no change to Prometheus's targets against ${base}`);
      const access = credentialLines(before.credentials, after.credentials);
      if (access.length) {
        io.out('API credentials (who may call the server; review these closely):');
        for (const line of access) io.out(line);
      }
      return after.problems.length ? EXIT.invalid : EXIT.ok;
    } finally {
      rmSync(baseDir, { recursive: true, force: true });
    }
  },
};
