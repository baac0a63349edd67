import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../src/cli/main.js';
import { fixture, gitCli, ROOT, STARTER, tempDir } from './helpers.js';

async function run(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, { out: (l) => out.push(l), err: (l) => err.push(l), env: {} });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

function brokenCopy(): string {
  const dir = join(tempDir(), 'repo');
  cpSync(fixture('basic'), dir, { recursive: true });
  writeFileSync(join(dir, 'targets/ml-training/gpu-02.yaml'), 'hostname: gpu-02\nip_address: 999.1.1.1\nprimary_group: ml-training\n');
  writeFileSync(join(dir, 'groups/loop.yaml'), 'id: loop\nname: loop\nnamespace: logical\nparent: loop\n');
  return dir;
}

/** Commits everything in the working tree of `dir`, as a person preparing `aami diff` would. */
function commitAll(dir: string, message: string): void {
  gitCli(dir, 'add', '-A');
  gitCli(dir, 'commit', '-q', '-m', message);
}

describe('aami validate', () => {
  it('exits 0 and summarises a valid repo', async () => {
    expect(await run('validate', STARTER)).toMatchObject({ code: 0, out: 'valid: 13 groups, 0 targets, 0 tokens, 0 credentials, 4 checks' });
  });

  it('exits 1 and lists every problem with file and field', async () => {
    const result = await run('validate', brokenCopy());
    expect(result.code).toBe(1);
    expect(result.err.split('\n')).toEqual([
      'groups/loop.yaml: parent: groups form a cycle through "loop"',
      'targets/ml-training/gpu-02.yaml: ip_address: must be an IPv4 or IPv6 address (without a zone id)',
      '2 problems found in 2 files',
    ]);
  });

  it('exits 2 on a usage error', async () => {
    expect((await run('validate', '--frobnicate')).code).toBe(2);
    expect((await run('validate', 'a', 'b')).code).toBe(2);
    expect(await run('validate', '/nonexistent/dir')).toMatchObject({ code: 2, err: expect.stringContaining('no such directory') });
    expect((await run('bogus')).code).toBe(2);
    expect((await run()).code).toBe(2);
  });

  it('prints help for aami and for each command', async () => {
    expect(await run('--help')).toMatchObject({ code: 0, out: expect.stringContaining('validate') });
    expect(await run('validate', '--help')).toMatchObject({ code: 0, out: expect.stringContaining('Exit status') });
    expect(await run('compile', '-h')).toMatchObject({ code: 0, out: expect.stringContaining('--out') });
  });

  it('exits with the same codes as a process', { timeout: 60_000 }, () => {
    // node with the tsx loader: one process per run, not the tsx wrapper's two.
    const aami = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/bin.ts'), ...args], { cwd: ROOT, encoding: 'utf8' });
    expect(aami('validate', STARTER).status).toBe(0);
    expect(aami('validate', brokenCopy()).status).toBe(1);
    expect(aami('validate', '--nope').status).toBe(2);
    expect(aami('--help').stdout).toContain('Usage: aami');
  });
});

describe('aami compile', () => {
  it('writes one file per job', async () => {
    const out = join(tempDir(), 'sd');
    expect((await run('compile', fixture('basic'), '--out', out)).code).toBe(0);
    expect(readdirSync(out).sort()).toEqual(['dcgm.json', 'ipmi.json', 'node.json']);
  });

  it('refuses an invalid repo and writes nothing unless told to compile the valid part', async () => {
    const out = join(tempDir(), 'sd');
    const dir = brokenCopy();
    expect((await run('compile', dir, '--out', out)).code).toBe(1);
    expect(() => readdirSync(out)).toThrow();
    expect((await run('compile', dir, '--out', out, '--allow-invalid')).code).toBe(0);
    expect(readdirSync(out).sort()).toEqual(['dcgm.json', 'ipmi.json', 'node.json']);
  });

  it('needs --out', async () => {
    expect(await run('compile', fixture('basic'))).toMatchObject({ code: 2, err: expect.stringContaining('--out') });
  });
});

describe('aami diff', () => {
  it('prints the targets a change adds, removes and relabels, per job', async () => {
    const dir = join(tempDir(), 'repo');
    cpSync(fixture('basic'), dir, { recursive: true });
    gitCli(dir, 'init', '-q', '--initial-branch=main');
    commitAll(dir, 'base');
    writeFileSync(join(dir, 'targets/api-servers/api-02.yaml'), 'hostname: api-02\nip_address: 10.0.2.6\nprimary_group: api-servers\n');
    rmSync(join(dir, 'targets/ml-training/gpu-02.yaml'));
    writeFileSync(join(dir, 'groups/api-servers.yaml'), 'id: api-servers\nname: api-servers\nnamespace: logical\nlabels: {role: api, tier: edge}\n');
    const result = await run('diff', dir);
    expect(result.code).toBe(0);
    expect(result.out.split('\n')).toEqual([
      'job ipmi:',
      '  ~ api-01 10.0.2.5:9290: tier standard → edge',
      'job node:',
      '  ~ api-01 10.0.2.5:9100: tier standard → edge',
      '  + api-02 10.0.2.6:9100',
      '  - gpu-02 [fd00::22]:9100',
    ]);
    commitAll(dir, 'change');
    expect((await run('diff', dir)).out).toBe("no change to Prometheus's targets against HEAD");
    expect((await run('diff', dir, '--base', 'no-such-rev')).code).toBe(2);
  });
});

describe('repository content is untrusted', () => {
  it('refuses a submodule at a config path as the server does: in a checkout it is an empty directory, or one holding a .git', async () => {
    const dir = join(tempDir(), 'repo');
    cpSync(STARTER, dir, { recursive: true });
    mkdirSync(join(dir, 'credentials/old.yaml'), { recursive: true });
    mkdirSync(join(dir, 'targets/api-servers/gpu-01.yaml'), { recursive: true });
    writeFileSync(join(dir, 'targets/api-servers/gpu-01.yaml/.git'), 'gitdir: ../../../.git/modules/x\n');
    const result = await run('validate', dir);
    expect(result.code).toBe(1);
    expect(result.err).toContain('credentials/old.yaml: is a submodule (or an empty directory): refused');
    expect(result.err).toContain('targets/api-servers/gpu-01.yaml: is a submodule (or an empty directory): refused');
  });

  it('refuses a symlinked check script and a file over 1 MiB, and bounds what it prints', async () => {
    const dir = join(tempDir(), 'repo');
    cpSync(STARTER, dir, { recursive: true });
    mkdirSync(join(dir, 'checks/evil'));
    writeFileSync(join(dir, 'checks/evil/check.yaml'), 'description: reads the server\'s environment\n');
    symlinkSync('/proc/self/environ', join(dir, 'checks/evil/check.sh'));
    writeFileSync(join(dir, 'groups/huge.yaml'), `id: huge\nname: huge\nnamespace: logical\ndescription: ${'x'.repeat(1_100_000)}\n`);
    const result = await run('validate', dir);
    expect(result.code).toBe(1);
    expect(result.err).toContain('checks/evil/check.sh: is a symbolic link: refused');
    expect(result.err).toContain('groups/huge.yaml: the file is larger than 1 MiB: refused unread');
    expect(result.err).toContain('checks/evil/check.yaml: script: checks/evil/check.sh does not exist');

    writeFileSync(join(dir, 'targets.yaml'), '');
    mkdirSync(join(dir, 'targets/ml-training'), { recursive: true });
    for (let i = 0; i < 300; i++) writeFileSync(join(dir, `targets/ml-training/bad-${i}.yaml`), 'hostname: [\n');
    const many = await run('validate', dir, '--max-problems', '10');
    expect(many.err.split('\n')).toHaveLength(12);
    expect(many.err).toMatch(/… and \d+ more \(--max-problems N shows more\)\n\d+ problems found in \d+ files$/);
  });

  it('refuses exporter types and keys that name Object.prototype\'s members, with a clear problem', async () => {
    const dir = join(tempDir(), 'repo');
    cpSync(STARTER, dir, { recursive: true });
    mkdirSync(join(dir, 'targets/ml-training'), { recursive: true });
    const target = (extra: string) => writeFileSync(join(dir, 'targets/ml-training/y.yaml'), `hostname: y\nip_address: 10.0.0.8\nprimary_group: ml-training\n${extra}`);
    target('exporters: [{type: constructor}, {type: node_exporter}]\n');
    expect(await run('validate', dir)).toMatchObject({
      code: 1,
      err: 'targets/ml-training/y.yaml: exporters[0].type: unknown exporter type "constructor" (aami.yaml defines node_exporter, dcgm_exporter)\n1 problem found',
    });
    target('exporters: [{type: __proto__}]\n');
    expect(await run('validate', dir)).toMatchObject({ code: 1, err: 'targets/ml-training/y.yaml: exporters[0].type: must be lowercase letters, digits and "_", starting with a letter\n1 problem found' });
    // As a key, "__proto__" would be dropped without a word by the schema: it is refused first.
    target('labels: {__proto__: {rack: r1}, rack: r2}\n');
    writeFileSync(join(dir, 'aami.yaml'), 'exporters:\n  node_exporter: {job: node, port: 9100}\n  __proto__: {job: evil, port: 9999}\n');
    expect(await run('validate', dir)).toMatchObject({
      code: 1,
      err: ['aami.yaml: exporters.__proto__: is not allowed as a key', 'targets/ml-training/y.yaml: labels.__proto__: is not allowed as a key', '2 problems found in 2 files'].join('\n'),
    });
  });

  it('lists at most --max-problems of a file with 130,000 problems, with the whole count', async () => {
    const dir = join(tempDir(), 'repo');
    cpSync(STARTER, dir, { recursive: true });
    mkdirSync(join(dir, 'targets/ml-training'), { recursive: true });
    writeFileSync(join(dir, 'targets/ml-training/many.yaml'), `hostname: many\nip_address: 10.0.0.1\nprimary_group: ml-training\ngroups: [${Array(130_000).fill('BAD').join(', ')}]\n`);
    const result = await run('validate', dir);
    expect(result.code).toBe(1);
    const lines = result.err.split('\n');
    expect(lines).toHaveLength(202); // the default 200, the rest counted, the total
    expect(lines[0]).toBe('targets/ml-training/many.yaml: groups[0]: must be 1-63 lowercase letters, digits or "-", not starting or ending with "-"');
    expect(lines.slice(-2)).toEqual(['… and 129800 more (--max-problems N shows more)', '130000 problems found']);
  });

  it('calls out in aami diff every credential a change grants, removes or changes', async () => {
    const dir = join(tempDir(), 'repo');
    cpSync(STARTER, dir, { recursive: true });
    const credential = (id: string, name: string, role: string) => `id: ${id}\nname: ${name}\nrole: ${role}\nsecret_hash: sha256:${'a'.repeat(64)}\n`;
    mkdirSync(join(dir, 'credentials'));
    writeFileSync(join(dir, 'credentials/aaaaaaaa.yaml'), credential('aaaaaaaa', 'alice', 'reader'));
    writeFileSync(join(dir, 'credentials/bbbbbbbb.yaml'), credential('bbbbbbbb', 'bob', 'editor'));
    gitCli(dir, 'init', '-q', '--initial-branch=main');
    commitAll(dir, 'base');
    writeFileSync(join(dir, 'credentials/aaaaaaaa.yaml'), credential('aaaaaaaa', 'alice', 'admin'));
    rmSync(join(dir, 'credentials/bbbbbbbb.yaml'));
    writeFileSync(join(dir, 'credentials/cccccccc.yaml'), credential('cccccccc', 'mallory', 'admin'));
    const result = await run('diff', dir);
    expect(result.code).toBe(0);
    expect(result.out.split('\n')).toEqual([
      "no change to Prometheus's targets against HEAD",
      'API credentials (who may call the server; review these closely):',
      '  ~ aaaaaaaa: alice (reader) → alice (admin)',
      '  + cccccccc: mallory (admin)',
      '  - bbbbbbbb: bob (editor)',
    ]);
  });

  it('calls out in aami diff a secret hash swapped, a token minted, refilled or revoked, and a node credential set or swapped', async () => {
    const dir = join(tempDir(), 'repo');
    cpSync(STARTER, dir, { recursive: true });
    const hash = (c: string) => `sha256:${c.repeat(64)}`;
    const credential = (secret: string) => `id: aaaaaaaa\nname: alice\nrole: admin\nsecret_hash: ${hash(secret)}\n`;
    const token = (id: string, uses: number, extra = '') => `id: ${id}\nname: rack ${id}\nsecret_hash: ${hash('c')}\ndefault_group: api-servers\nmax_uses: 10\nuses: ${uses}\nexpires_at: 2099-01-01T00:00:00Z\n${extra}`;
    const target = (host: string, ip: string, secret?: string) => `hostname: ${host}\nip_address: ${ip}\nprimary_group: api-servers\n${secret ? `node_credential_hash: ${hash(secret)}\n` : ''}`;
    mkdirSync(join(dir, 'credentials'));
    mkdirSync(join(dir, 'tokens'));
    mkdirSync(join(dir, 'targets/api-servers'), { recursive: true });
    writeFileSync(join(dir, 'credentials/aaaaaaaa.yaml'), credential('a'));
    writeFileSync(join(dir, 'tokens/tttttttt.yaml'), token('tttttttt', 10));
    writeFileSync(join(dir, 'tokens/rrrrrrrr.yaml'), token('rrrrrrrr', 1));
    writeFileSync(join(dir, 'targets/api-servers/node-1.yaml'), target('node-1', '10.0.0.1', 'd'));
    writeFileSync(join(dir, 'targets/api-servers/node-2.yaml'), target('node-2', '10.0.0.2'));
    gitCli(dir, 'init', '-q', '--initial-branch=main');
    commitAll(dir, 'base');
    // Nothing a reviewer would see in the SD files: only who gets in changes.
    writeFileSync(join(dir, 'credentials/aaaaaaaa.yaml'), credential('b'));
    writeFileSync(join(dir, 'tokens/tttttttt.yaml'), token('tttttttt', 0));
    writeFileSync(join(dir, 'tokens/rrrrrrrr.yaml'), token('rrrrrrrr', 1, 'revoked: true\n'));
    writeFileSync(join(dir, 'tokens/nnnnnnnn.yaml'), token('nnnnnnnn', 0, 'labels: {rack: "r 9 (x)"}\n'));
    writeFileSync(join(dir, 'targets/api-servers/node-1.yaml'), target('node-1', '10.0.0.1', 'e'));
    writeFileSync(join(dir, 'targets/api-servers/node-2.yaml'), target('node-2', '10.0.0.2', 'f'));
    const result = await run('diff', dir);
    expect(result.err).toBe('');
    expect(result.code).toBe(0);
    expect(result.out.split('\n')).toEqual([
      "no change to Prometheus's targets against HEAD",
      'API credentials (who may call the server; review these closely):',
      '  ~ aaaaaaaa: alice (admin): its secret changed (sha256:aaaaaaaa… → sha256:bbbbbbbb…)',
      'Bootstrap tokens (who may enrol hosts, into which group; review these closely):',
      '  + nnnnnnnn: "rack nnnnnnnn" (group api-servers, 0 of 10 used, until 2099-01-01T00:00:00Z, labels rack="r 9 (x)")',
      '  ~ tttttttt: "rack tttttttt" (group api-servers, 10 of 10 used, until 2099-01-01T00:00:00Z) → "rack tttttttt" (group api-servers, 0 of 10 used, until 2099-01-01T00:00:00Z)',
      '  - rrrrrrrr: "rack rrrrrrrr" (group api-servers, 1 of 10 used, until 2099-01-01T00:00:00Z)',
      'Node credentials (each lets a host change its own target; review these closely):',
      '  ~ node-1: node-1: its secret changed (sha256:dddddddd… → sha256:eeeeeeee…)',
      '  + node-2: node-2',
    ]);
  });
});
