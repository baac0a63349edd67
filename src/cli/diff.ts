import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { formatProblem } from '../catalog/problem.js';
import { compile } from '../compile/compiler.js';
import { EXIT, parseFlags, UsageError, type Command } from './command.js';
import { loadDirectory } from './validate.js';

type Entries = Map<string, Map<string, Record<string, string>>>; // job → address → labels

/** Who may do what with a secret: the line a reviewer reads, and the hash the secret must match. */
type Access = Map<string, { what: string; secret: string }>;

type AccessKind = 'credentials' | 'tokens' | 'nodes';
const ACCESS_HEADINGS: Record<AccessKind, string> = {
  credentials: 'API credentials (who may call the server; review these closely):',
  tokens: 'Bootstrap tokens (who may enrol hosts, into which group; review these closely):',
  nodes: 'Node credentials (each lets a host change its own target; review these closely):',
};

async function sdEntries(dir: string): Promise<{ entries: Entries; problems: string[]; access: Record<AccessKind, Access> }> {
  const { catalog, problems } = loadDirectory(dir);
  const entries: Entries = new Map();
  for (const [file, bytes] of compile(catalog)) {
    const job = file.replace(/\.json$/, '');
    const list = JSON.parse(bytes.toString()) as Array<{ targets: string[]; labels: Record<string, string> }>;
    entries.set(job, new Map(list.map((entry) => [entry.targets[0]!, entry.labels])));
  }
  const credentials: Access = new Map();
  for (const c of catalog.apiCredentials.values()) {
    if (!c.revoked) credentials.set(c.id, { what: `${c.name} (${c.role}${c.expires_at ? `, until ${c.expires_at}` : ''})`, secret: c.secret_hash });
  }
  const tokens: Access = new Map();
  for (const t of catalog.tokens.values()) {
    if (t.revoked) continue;
    // Quoted: a name or a label value may hold spaces and brackets, and must not pass for another field.
    const labels = Object.entries(t.labels).map(([key, value]) => `${key}=${JSON.stringify(value)}`);
    const what = `${JSON.stringify(t.name)} (group ${t.default_group}, ${t.uses} of ${t.max_uses} used, until ${t.expires_at}${t.ephemeral ? ', ephemeral' : ''}${labels.length ? `, labels ${labels.join(' ')}` : ''})`;
    tokens.set(t.id, { what, secret: t.secret_hash });
  }
  const nodes: Access = new Map();
  for (const target of catalog.targets.values()) {
    if (target.node_credential_hash) nodes.set(target.hostname, { what: target.hostname, secret: target.node_credential_hash });
  }
  return { entries, problems: problems.map(formatProblem), access: { credentials, tokens, nodes } };
}

/**
 * Who may get in, before and after: a pull request that grants a role (adds a credential,
 * raises one's role), mints or refills a token, or swaps a secret's hash for one its author
 * chose is called out, so a reviewer sees who gets in. Hashes are shown cut short: they are
 * in the repository already, and say only that the secret is another.
 */
function accessLines(before: Access, after: Access): string[] {
  const short = (hash: string) => `${hash.slice(0, 15)}…`;
  const lines: string[] = [];
  for (const [id, now] of after) {
    const was = before.get(id);
    const secret = was && was.secret !== now.secret ? `its secret changed (${short(was.secret)} → ${short(now.secret)})` : '';
    if (!was) lines.push(`  + ${id}: ${now.what}`);
    else if (was.what !== now.what) lines.push(`  ~ ${id}: ${was.what} → ${now.what}${secret ? `; ${secret}` : ''}`);
    else if (secret) lines.push(`  ~ ${id}: ${now.what}: ${secret}`);
  }
  for (const [id, was] of before) if (!after.has(id)) lines.push(`  - ${id}: ${was.what}`);
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
  summary: 'show what a change does to Prometheus (targets added, removed, relabelled per job) and who it lets in',
  help: `Usage: aami diff [DIR] [--base REV]

Compiles the config repo checkout in DIR (default: the current directory) and the same
repo at REV (default: HEAD), and prints, per Prometheus job, the targets the change adds
(+), removes (-) and relabels (~, with each label change); then who gets in: the API
credentials, bootstrap tokens and node credentials it adds, removes or changes (a role,
a token's group, uses or labels, a secret's hash). In pull-request CI:

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
      for (const kind of Object.keys(ACCESS_HEADINGS) as AccessKind[]) {
        const lines = accessLines(before.access[kind], after.access[kind]);
        if (!lines.length) continue;
        io.out(ACCESS_HEADINGS[kind]);
        for (const line of lines) io.out(line);
      }
      return after.problems.length ? EXIT.invalid : EXIT.ok;
    } finally {
      rmSync(baseDir, { recursive: true, force: true });
    }
  },
};
