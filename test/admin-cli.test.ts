import { execFile, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../src/cli/main.js';
import { printable } from '../src/cli/admin/output.js';
import { createLogger } from '../src/log.js';
import { startServer } from '../src/server.js';
import { holdingPeer } from './admin-standin.js';
import { onCleanup, ROOT, tempDir } from './helpers.js';
import { ADMIN, configServer, freePort, requireBinary, serverConfig } from './node-helpers.js';

/**
 * The admin commands run as a real `aami` process (node with tsx, from src/) against a real
 * `aami serve` started in the test. Only two peers are not the real server: one that holds a
 * request open while the test reads `ps` (admin-standin.ts), and a front that redirects.
 */
const BIN = join(ROOT, 'src/cli/bin.ts');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A clean environment: no AAMI_* from whoever runs the tests, and a HOME of its own. */
function cleanEnv(extra: Record<string, string> = {}) {
  const home = tempDir('aami-home-');
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, ...extra };
}

/** A child process of the test, killed if it is still running when the test ends. */
function spawnChild(command: string, args: string[], env: Record<string, string>) {
  const child = spawn(command, args, { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
  onCleanup(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return child;
}

function start(args: string[], env: Record<string, string>, input = '') {
  const child = spawnChild(process.execPath, ['--import', 'tsx', BIN, ...args], env);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.stdin.end(input);
  const done = new Promise<Run>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  return { child, done };
}

const aami = (env: Record<string, string>, ...args: string[]) => start(args, env).done;

/** What the server answers, byte for byte, for comparing with --json. */
async function rawGet(url: string): Promise<string> {
  return (await fetch(url, { headers: { authorization: `Bearer ${ADMIN}` } })).text();
}

const line = (text: string, prefix: string) => text.split('\n').find((l) => l.startsWith(prefix));

async function realServer() {
  const server = await configServer();
  return { server, env: cleanEnv({ AAMI_SERVER: server.url, AAMI_CREDENTIAL: ADMIN }) };
}

/** A real server whose log the test reads: what reached it, and as whom (by=nobody: no credential). */
async function loggedServer() {
  const lines: string[] = [];
  const server = await startServer(serverConfig({ logger: createLogger((l) => lines.push(l)) }));
  onCleanup(() => server.close());
  return { url: server.url, log: () => lines.join('\n') };
}

/** How many requests a real server answered on a route, from its own /metrics. */
async function served(url: string, route: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return [...text.matchAll(/^aami_http_requests_total\{method="\w+",route="([^"]+)",status="\d+"\} (\d+)$/gm)].filter((m) => m[1] === route).reduce((sum, m) => sum + Number(m[2]), 0);
}

describe('aami groups against aami serve', () => {
  it('creates, lists, shows and deletes a group, as tables and as the exact JSON', async () => {
    const { server, env } = await realServer();
    const created = await aami(env, 'groups', 'create', 'gpu-fleet', '--namespace', 'logical', '--description', 'GPU fleet', '--label', 'owner=ml-infra');
    expect(created).toMatchObject({ code: 0, stderr: '' });
    expect(line(created.stdout, 'ID:')).toBe('ID:          gpu-fleet');
    expect(created.stdout).toContain('\n  owner=ml-infra');
    expect((await server.admin('GET', '/api/v1/groups/gpu-fleet')).json).toMatchObject({ namespace: 'logical', description: 'GPU fleet', labels: { owner: 'ml-infra' } });

    const listed = await aami(env, 'groups', 'list', '--namespace', 'logical');
    expect(listed.code).toBe(0);
    expect(listed.stdout.split('\n')[0]).toMatch(/^ID +NAMESPACE +PARENT +LABELS +NAME$/);
    expect(listed.stdout).toMatch(/\ngpu-fleet +logical +- +owner=ml-infra +gpu-fleet\n/);
    expect(listed.stdout).not.toContain('production');

    const shown = await aami(env, 'groups', 'show', 'gpu-fleet', '--json');
    expect(shown).toMatchObject({ code: 0, stdout: `${await rawGet(`${server.url}/api/v1/groups/gpu-fleet`)}\n` });

    const deleted = await aami(env, 'groups', 'delete', 'gpu-fleet');
    expect(deleted).toMatchObject({ code: 0, stdout: 'deleted group gpu-fleet\n' });
    expect((await server.admin('GET', '/api/v1/groups/gpu-fleet')).status).toBe(404);
  });

  it('exits 1 with the error code, message and fields of a refused request, and changes nothing', async () => {
    const { server, env } = await realServer();
    const duplicate = await aami(env, 'groups', 'create', 'production', '--namespace', 'environment');
    expect(duplicate).toMatchObject({ code: 1, stdout: '' });
    expect(duplicate.stderr).toBe('error: conflict: group "production" already exists (HTTP 409)\n  group_id: production\n');

    await server.admin('POST', '/api/v1/bootstrap-tokens', { name: 'holds', default_group_id: 'ml-training', max_uses: 1, expires_at: '2099-01-01T00:00:00Z' });
    const inUse = await aami(env, 'groups', 'delete', 'ml-training');
    expect(inUse.code).toBe(1);
    expect(inUse.stderr.split('\n')[0]).toMatch(/^error: group_in_use: .* \(HTTP 409\)$/);
    expect(inUse.stderr).toMatch(/\n {2}tokens: [a-z0-9]+\n/);
    expect((await server.admin('GET', '/api/v1/groups/ml-training')).status).toBe(200);
  });
});

describe('aami tokens against aami serve', () => {
  it('prints a new token once, which enrols a node; lists, shows and revokes it', async () => {
    const { server, env } = await realServer();
    const created = await aami(env, 'tokens', 'create', 'ml-batch', '--group', 'ml-training', '--max-uses', '2', '--expires', '30d', '--label', 'cluster=a');
    expect(created).toMatchObject({ code: 0, stderr: '' });
    const secrets = created.stdout.match(/aami_bootstrap_\S+/g) ?? [];
    expect(secrets).toHaveLength(1);
    expect(created.stdout).toContain('Token (shown only this once');
    const id = line(created.stdout, 'ID:')!.split(/\s+/)[1]!;
    const expires = Date.parse(line(created.stdout, 'Expires:')!.split(/\s+/)[1]!);
    expect(Math.abs(expires - (Date.now() + 30 * 86_400_000))).toBeLessThan(3_600_000);

    const register = await fetch(`${server.url}/api/v1/bootstrap/register`, {
      method: 'POST',
      headers: { authorization: `Bearer ${secrets[0]}` },
      body: JSON.stringify({ hostname: 'gpu-node-01', ip_address: '10.0.1.21' }),
    });
    expect(register.status).toBe(201);

    const listed = await aami(env, 'tokens', 'list');
    expect(listed.stdout).toMatch(new RegExp(`\\n${id} +ml-batch +ml-training +1/2 +\\S+Z +active\\n`));
    const shown = await aami(env, 'tokens', 'show', id, '--json');
    expect(shown.stdout).toBe(`${await rawGet(`${server.url}/api/v1/bootstrap-tokens/${id}`)}\n`);
    expect(JSON.parse(shown.stdout)).toMatchObject({ uses: 1, remaining: 1, labels: { cluster: 'a' } });
    expect(shown.stdout + listed.stdout).not.toContain(secrets[0]);

    const revoked = await aami(env, 'tokens', 'revoke', id);
    expect(revoked).toMatchObject({ code: 0, stderr: '' });
    expect(line(revoked.stdout, 'State:')).toMatch(/^State: +revoked$/);
    expect(line(revoked.stdout, 'Registered now:')).toMatch(/^Registered now: +1$/);
    const again = await fetch(`${server.url}/api/v1/bootstrap/register`, {
      method: 'POST',
      headers: { authorization: `Bearer ${secrets[0]}` },
      body: JSON.stringify({ hostname: 'gpu-node-02', ip_address: '10.0.1.22' }),
    });
    expect(((await again.json()) as { error: { code: string } }).error.code).toBe('token_revoked');
  });

  it('puts the secret in the JSON with --json, and refuses bad values field by field', async () => {
    const { env } = await realServer();
    const json = await aami(env, 'tokens', 'create', 'scripted', '--group', 'ml-training', '--max-uses', '1', '--expires', '2099-01-01T00:00:00Z', '--json');
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ name: 'scripted', token: expect.stringMatching(/^aami_bootstrap_/), max_uses: 1 });

    const refused = await aami(env, 'tokens', 'create', 'bad', '--group', 'ml-training', '--max-uses', '0', '--expires', '2099-01-01T00:00:00Z');
    expect(refused).toMatchObject({ code: 1, stdout: '' });
    expect(refused.stderr.split('\n')).toEqual(['error: validation_failed: the request body is invalid: max_uses must be at least 1 (HTTP 400)', '  max_uses: must be at least 1', '']);
  });
});

describe('aami targets against aami serve', () => {
  it('registers, lists, shows and deletes a target', async () => {
    const { server, env } = await realServer();
    const created = await aami(env, 'targets', 'create', 'gpu-01', '--ip', '10.0.1.21', '--group', 'ml-training', '--exporter', 'node_exporter', '--exporter', 'dcgm_exporter:9400', '--label', 'rack=r1');
    expect(created).toMatchObject({ code: 0, stderr: '' });
    expect(line(created.stdout, 'Exporters:')).toBe('Exporters:           node_exporter:9100,dcgm_exporter:9400');
    expect((await server.admin('GET', '/api/v1/targets/gpu-01')).json).toMatchObject({ ip_address: '10.0.1.21', labels: { rack: 'r1' } });

    const listed = await aami(env, 'targets', 'list', '--group', 'ml-training');
    expect(listed.stdout).toBe(
      'HOSTNAME  IP         GROUP        EXPORTERS                              LAST SEEN\ngpu-01    10.0.1.21  ml-training  node_exporter:9100,dcgm_exporter:9400  -\n',
    );
    expect((await aami(env, 'targets', 'list', '--hostname', 'other')).stdout).toBe('HOSTNAME  IP  GROUP  EXPORTERS  LAST SEEN\n');

    const shown = await aami(env, 'targets', 'show', 'gpu-01');
    expect(shown.stdout).toContain('Effective labels:\n  role=ml-training\n  rack=r1\n  hostname=gpu-01\n');
    const missing = await aami(env, 'targets', 'show', 'no-such-host');
    expect(missing).toMatchObject({ code: 1, stderr: 'error: target_not_found: target "no-such-host" does not exist (HTTP 404)\n  target_id: no-such-host\n' });

    expect(await aami(env, 'targets', 'delete', 'gpu-01')).toMatchObject({ code: 0, stdout: 'deleted target gpu-01\n' });
    expect((await server.admin('GET', '/api/v1/targets/gpu-01')).status).toBe(404);
  });

  it('shows hostile text escaped, never as terminal control codes; the server refuses control characters in labels', async () => {
    const { server, env } = await realServer();
    // Control characters are refused by the server (400); bidi overrides and a description's newline are stored.
    const escape = await aami(env, 'targets', 'create', 'gpu-01', '--ip', '10.0.1.21', '--group', 'ml-training', '--label', 'note=\u001b[2J\u001b]0;owned\u0007');
    expect(escape).toMatchObject({ code: 1, stdout: '' });
    expect(escape.stderr).toContain('  labels.note: must not contain control characters');
    expect(escape.stderr).not.toMatch(/[\u0000-\u0009\u000b-\u001f]/);
    await server.admin('POST', '/api/v1/groups', { name: 'odd', namespace: 'logical', description: 'line one\nline two\t\u202eevil', labels: { note: '\u202eevil\u2066' } });
    await server.admin('POST', '/api/v1/targets', { hostname: 'gpu-01', ip_address: '10.0.1.21', primary_group_id: 'odd', labels: { note: 'x\u202e' } });
    const shown = await aami(env, 'targets', 'show', 'gpu-01');
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain('  note=x\\u202e\n');
    const group = await aami(env, 'groups', 'show', 'odd');
    expect(group.stdout).toContain('line one\\u000aline two\\u0009\\u202eevil');
    const listed = await aami(env, 'groups', 'list', '--namespace', 'logical');
    for (const out of [shown.stdout, group.stdout, listed.stdout]) expect(out).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/);
    // What the server can no longer send, a hostile answer would: the same escaping covers it.
    expect(printable('\u001b[2J\u001b]0;owned\u0007\u009b')).toBe('\\u001b[2J\\u001b]0;owned\\u0007\\u009b');
  });

  it('lists 500 targets: the JSON exactly as served, the table one line each', async () => {
    const { server, env } = await realServer();
    const made = await Promise.all(
      Array.from({ length: 500 }, (_, i) =>
        server.admin('POST', '/api/v1/targets', {
          hostname: `gpu-${String(i).padStart(3, '0')}`,
          ip_address: `10.1.${Math.floor(i / 250)}.${(i % 250) + 1}`,
          primary_group_id: 'ml-training',
          exporters: [{ type: 'node_exporter' }, { type: 'dcgm_exporter' }],
          labels: { rack: `r${i % 12}`, gpu_model: 'NVIDIA H100 80GB HBM3', gpu_count: '8' },
        }),
      ),
    );
    expect(made.every((r) => r.status === 201)).toBe(true);
    const served = await rawGet(`${server.url}/api/v1/targets`);
    expect(served.length).toBeGreaterThan(250_000);
    const [json, table] = await Promise.all([aami(env, 'targets', 'list', '--json'), aami(env, 'targets', 'list')]);
    expect(json.stdout).toBe(`${served}\n`);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(501);
    expect(lines[500]).toMatch(/^gpu-499 +10\.1\.1\.250 +ml-training +node_exporter:9100,dcgm_exporter:9400 +-$/);

    // By label, and at most N: the server pages, the CLI says when more match.
    const r3 = await aami(env, 'targets', 'list', '--label', 'rack=r3', '--label', 'gpu_model', '--limit', '10');
    expect(r3.code).toBe(0);
    expect(r3.stdout.trimEnd().split('\n').slice(1).map((l) => l.split(/ +/)[0])).toEqual(['gpu-003', 'gpu-015', 'gpu-027', 'gpu-039', 'gpu-051', 'gpu-063', 'gpu-075', 'gpu-087', 'gpu-099', 'gpu-111']);
    expect(r3.stderr).toBe('more match than these: raise --limit, or narrow with --label, --group or --hostname\n');
    const all = await aami(env, 'targets', 'list', '--label', 'rack=r3', '--limit', '100');
    expect(all).toMatchObject({ code: 0, stderr: '' });
    expect(all.stdout.trimEnd().split('\n')).toHaveLength(1 + 42);
    const page = await aami(env, 'targets', 'list', '--label', 'rack!=r3', '--limit', '5', '--json');
    expect(page.stdout).toBe(`${await rawGet(`${server.url}/api/v1/targets?label=rack!%3Dr3&limit=5`)}\n`);
    expect(await aami(env, 'targets', 'list', '--limit', 'ten')).toMatchObject({ code: 2, stderr: expect.stringContaining('--limit must be a whole number') });
    expect(await aami(env, 'targets', 'list', '--label', '9x=1')).toMatchObject({ code: 1, stderr: expect.stringContaining('  label[0]: "9x=1" is not a label selector') });
  }, 60_000);
});

describe('aami credentials, targets label and ephemeral tokens against aami serve', () => {
  it('creates, lists and revokes credentials; a new secret is printed once and works', async () => {
    const { server, env } = await realServer();
    const created = await aami(env, 'credentials', 'create', 'ci-bot', '--role', 'editor', '--expires', '2099-01-01T00:00:00Z');
    expect(created).toMatchObject({ code: 0, stderr: '' });
    const secrets = created.stdout.match(/aami_cred_\S+/g) ?? [];
    expect(secrets).toHaveLength(1);
    expect(created.stdout).toContain('Credential (shown only this once');
    const id = line(created.stdout, 'ID:')!.split(/\s+/)[1]!;
    expect((await server.admin('GET', `/api/v1/credentials/${id}`)).json).toMatchObject({ name: 'ci-bot', role: 'editor', expires_at: '2099-01-01T00:00:00Z', revoked: false });
    // the printed secret is a working editor credential
    expect((await aami({ ...env, AAMI_CREDENTIAL: secrets[0]! }, 'groups', 'create', 'made-by-bot', '--namespace', 'logical')).code).toBe(0);

    const json = await aami(env, 'credentials', 'create', 'reader-bot', '--role', 'reader', '--json');
    expect(JSON.parse(json.stdout)).toMatchObject({ name: 'reader-bot', role: 'reader', credential: expect.stringMatching(/^aami_cred_/), expires_at: null });

    const listed = await aami(env, 'credentials', 'list');
    expect(listed.stdout).toMatch(/^ID +NAME +ROLE +EXPIRES +REVOKED +CREATED\n/);
    expect(listed.stdout).toMatch(new RegExp(`\\n${id} +ci-bot +editor +2099-01-01T00:00:00Z +no +\\S+\\n`));
    expect(listed.stdout).not.toContain('aami_cred_');

    expect(await aami(env, 'credentials', 'revoke', id)).toMatchObject({ code: 0, stdout: expect.stringMatching(/\nRevoked: +true\n/) });
    const revoked = await aami({ ...env, AAMI_CREDENTIAL: secrets[0]! }, 'groups', 'list');
    expect(revoked).toMatchObject({ code: 1, stderr: expect.stringMatching(/^error: unauthorized: credential \w+ \(ci-bot\) has been revoked \(HTTP 401\)\n$/) });

    const refused = await aami(env, 'credentials', 'create', 'x', '--role', 'root');
    expect(refused).toMatchObject({ code: 1, stdout: '' });
    expect(refused.stderr).toMatch(/^error: validation_failed: .* \(HTTP 400\)\n {2}role: .*admin.*editor.*reader.*\n$/);
  });

  it('shows one credential by id, never its secret, and only to an admin', { timeout: 60_000 }, async () => {
    const { server, env } = await realServer();
    const made = await server.admin('POST', '/api/v1/credentials', { name: 'ci-bot', role: 'editor', expires_at: '2099-01-01T00:00:00Z' });
    expect(made.status).toBe(201);
    const { id, credential } = made.json;
    const served = (await server.admin('GET', `/api/v1/credentials/${id}`)).json;
    expect(served.created_by).toEqual(expect.any(String));
    expect(await aami(env, 'credentials', 'show', id)).toEqual({
      code: 0,
      stderr: '',
      stdout: [
        `ID:         ${id}`,
        'Name:       ci-bot',
        'Role:       editor',
        'Expires:    2099-01-01T00:00:00Z',
        'Expired:    false',
        'Revoked:    false',
        `Created:    ${served.created_at}`,
        `Created by: ${served.created_by}`,
        '',
      ].join('\n'),
    });
    expect((await aami(env, 'credentials', 'show', id, '--json')).stdout).toBe(`${await rawGet(`${server.url}/api/v1/credentials/${id}`)}\n`);
    // Not even a credential's own secret reads credentials: only an admin may.
    expect(await aami({ ...env, AAMI_CREDENTIAL: credential }, 'credentials', 'show', id)).toMatchObject({ code: 1, stdout: '', stderr: expect.stringMatching(/^error: forbidden: .* \(HTTP 403\)\n$/) });

    expect((await server.admin('POST', `/api/v1/credentials/${id}/revoke`)).status).toBe(200);
    expect(await aami(env, 'credentials', 'show', id)).toMatchObject({ code: 0, stdout: expect.stringMatching(/\nRevoked: +true\n/) });
    expect(await aami(env, 'credentials', 'show', 'no-such-id')).toEqual({ code: 1, stdout: '', stderr: 'error: not_found: credential "no-such-id" does not exist (HTTP 404)\n  credential_id: no-such-id\n' });
    // An id is one path segment: ".." is refused before any request, a slash is sent encoded.
    expect(await aami(env, 'credentials', 'show', '..')).toMatchObject({ code: 2, stdout: '' });
    expect(await aami(env, 'credentials', 'show', '../groups')).toMatchObject({ code: 1, stdout: '', stderr: expect.stringMatching(/^error: not_found: credential "\.\.\/groups" does not exist \(HTTP 404\)\n/) });
  });

  it('labels a target with a JSON merge patch: KEY=VALUE sets, KEY- removes, other labels stay', async () => {
    const { server, env } = await realServer();
    await server.admin('POST', '/api/v1/targets', { hostname: 'gpu-node-01', ip_address: '10.0.1.21', primary_group_id: 'ml-training', labels: { rack: 'r1', old: 'x', keep: 'k' } });
    const labelled = await aami(env, 'targets', 'label', 'gpu-node-01', 'rack=r2', 'old-', 'url=a=b');
    expect(labelled).toMatchObject({ code: 0, stderr: '' });
    expect((await server.admin('GET', '/api/v1/targets/gpu-node-01')).json.labels).toEqual({ rack: 'r2', keep: 'k', url: 'a=b' });
    expect(labelled.stdout).toContain('Labels:\n  rack=r2\n  keep=k\n  url=a=b\n');

    const refused = await aami(env, 'targets', 'label', 'gpu-node-01', 'job=evil');
    expect(refused).toMatchObject({ code: 1, stderr: expect.stringContaining('labels.job') });
    const before = (await server.admin('GET', '/api/v1/targets/gpu-node-01/history')).json.length;
    expect(await aami(env, 'targets', 'label', 'gpu-node-01', 'rack')).toMatchObject({ code: 2, stderr: expect.stringContaining('"rack" is not KEY=VALUE or KEY-') });
    expect(await aami(env, 'targets', 'label', 'gpu-node-01')).toMatchObject({ code: 2 });
    expect((await server.admin('GET', '/api/v1/targets/gpu-node-01/history')).json.length).toBe(before);
  });

  it('creates an ephemeral token with its TTL only when asked', async () => {
    const { server, env } = await realServer();
    const created = await aami(env, 'tokens', 'create', 'spot', '--group', 'ml-training', '--max-uses', '50', '--expires', '2099-01-01T00:00:00Z', '--ephemeral', '--ttl-after-last-seen', '10m');
    expect(created.code).toBe(0);
    expect(line(created.stdout, 'Ephemeral:')).toMatch(/^Ephemeral: +true$/);
    expect(line(created.stdout, 'TTL after last seen:')).toMatch(/^TTL after last seen: +10m$/);
    const id = line(created.stdout, 'ID:')!.split(/\s+/)[1]!;
    expect((await server.admin('GET', `/api/v1/bootstrap-tokens/${id}`)).json).toMatchObject({ ephemeral: true, ttl_after_last_seen: '10m' });

    const plain = await aami(env, 'tokens', 'create', 'plain', '--group', 'ml-training', '--max-uses', '1', '--expires', '1d', '--json');
    expect(JSON.parse(plain.stdout)).toMatchObject({ ephemeral: false, ttl_after_last_seen: null });
    // the server's rule, said by the server: a TTL needs --ephemeral
    const ttlAlone = await aami(env, 'tokens', 'create', 'odd', '--group', 'ml-training', '--max-uses', '1', '--expires', '1d', '--ttl-after-last-seen', '10m');
    expect(ttlAlone).toMatchObject({ code: 1, stderr: expect.stringContaining('  ttl_after_last_seen: applies to ephemeral tokens only') });
  });
});

describe('connection and credential', () => {
  it('never has the credential in its argv: ps shows none while a request is in flight', async () => {
    const ps = requireBinary('ps', 'procps');
    const credential = 'ps-visible-credential-4f1d9a';
    const peer = await holdingPeer();
    const held = peer.nextRequest();
    const run = start(['credentials', 'list'], cleanEnv({ AAMI_SERVER: peer.url, AAMI_CREDENTIAL: credential }));
    const request = await held;
    expect(request.headers.authorization).toBe(`Bearer ${credential}`);
    const table = await new Promise<string>((resolve, reject) =>
      execFile(ps, ['-e', '-ww', '-o', 'pid=,args='], { maxBuffer: 16 * 1024 * 1024 }, (error, stdout) => (error ? reject(error) : resolve(stdout))),
    );
    const cmdline = readFileSync(`/proc/${run.child.pid}/cmdline`, 'utf8');
    expect(table).toContain(`${run.child.pid} `);
    expect(cmdline).toContain('credentials');
    expect(table).not.toContain(credential);
    expect(cmdline).not.toContain(credential);
    request.release();
    expect((await run.done).code).toBe(0);
    // and no flag would take it
    expect(await main(['credentials', 'list', '--credential', credential], { out: () => {}, err: () => {}, env: {} })).toBe(2);
  });

  it('exits 3 when the server cannot be reached, 2 when none is given, 1 when the credential is wrong', async () => {
    const port = await freePort();
    const unreachable = await aami(cleanEnv({ AAMI_SERVER: `http://127.0.0.1:${port}`, AAMI_CREDENTIAL: ADMIN }), 'targets', 'list');
    expect(unreachable).toMatchObject({ code: 3, stdout: '', stderr: `error: cannot reach the server at http://127.0.0.1:${port}/: connect ECONNREFUSED 127.0.0.1:${port}\n` });

    const none = await aami(cleanEnv(), 'targets', 'list');
    expect(none).toMatchObject({ code: 2, stderr: expect.stringContaining('no server: give --server URL') });

    const { server } = await realServer();
    const wrong = 'wrong-credential-b7c41e0d';
    const refused = await aami(cleanEnv({ AAMI_CREDENTIAL: wrong }), 'tokens', 'list', '--server', server.url);
    expect(refused).toMatchObject({ code: 1, stdout: '', stderr: 'error: unauthorized: the credential is not valid (HTTP 401)\n' });
  });

  it('follows no redirect, so the credential goes nowhere else, and says when an answer is not the API', async () => {
    const elsewhere = await loggedServer();
    const front = createServer((req, res) => {
      if (req.url?.startsWith('/api/v1/groups')) res.writeHead(301, { location: `${elsewhere.url}${req.url}` }).end();
      else res.writeHead(502, { 'content-type': 'text/html' }).end('<html>Bad Gateway</html>');
    });
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise<void>((resolve) => front.close(() => resolve())));
    const env = cleanEnv({ AAMI_SERVER: `http://127.0.0.1:${(front.address() as { port: number }).port}`, AAMI_CREDENTIAL: ADMIN });

    const redirected = await aami(env, 'groups', 'list');
    expect(redirected).toMatchObject({ code: 1, stdout: '', stderr: `error: redirected: the server redirects to ${elsewhere.url}/api/v1/groups; use that address as --server (HTTP 301)\n` });
    expect(await served(elsewhere.url, '/api/v1/groups')).toBe(0);
    expect(await served(elsewhere.url, '/metrics')).toBe(1); // the count itself is read from there

    const proxy = await aami(env, 'targets', 'list');
    expect(proxy).toMatchObject({ code: 1, stderr: 'error: http_502: the server answered HTTP 502 without an aami error: is this the aami API? (HTTP 502)\n' });
  });

  it('saves server and credential with aami login, at mode 0600, only once the server accepts it', async () => {
    const { server } = await realServer();
    const env = cleanEnv();
    const path = join(env.HOME, '.config/aami/config.json');

    const wrong = await start(['login', '--server', server.url], env, 'not-the-admin-credential\n').done;
    expect(wrong).toMatchObject({ code: 1, stderr: expect.stringContaining('error: unauthorized:') });
    expect(existsSync(path)).toBe(false);

    const login = await start(['login', '--server', server.url], env, `${ADMIN}\n`).done;
    expect(login).toMatchObject({ code: 0, stdout: `saved ${server.url}/ and its credential to ${path} (mode 0600)\n` });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(env.HOME, '.config/aami')).mode & 0o777).toBe(0o700);
    expect(JSON.parse(readFileSync(path, 'utf8'))).toEqual({ server: `${server.url}/`, credential: ADMIN });
    expect(login.stdout + login.stderr).not.toContain(ADMIN);

    expect(await aami(env, 'groups', 'show', 'ml-training')).toMatchObject({ code: 0, stdout: expect.stringContaining('ID:          ml-training') });
  });

  it('reads the credential at a terminal prompt without echoing it', async () => {
    const script = requireBinary('script', 'bsdutils');
    const { server } = await realServer();
    const env = cleanEnv({ TERM: 'dumb' });
    // script(1) gives the CLI a real pseudo-terminal; the credential is typed only once the prompt is up
    const command = [process.execPath, '--import', 'tsx', BIN, 'login', '--server', server.url].map((word) => `'${word}'`).join(' ');
    const child = spawnChild(script, ['-qefc', command, '/dev/null'], env);
    let screen = '';
    const code = await new Promise<number | null>((resolve) => {
      const read = (chunk: Buffer) => {
        const before = screen;
        screen += chunk.toString('utf8');
        if (!before.includes('Credential for') && screen.includes('Credential for')) child.stdin.write(`${ADMIN}\r`);
      };
      child.stdout.on('data', read);
      child.stderr.on('data', read);
      child.on('close', resolve);
    });
    expect(code).toBe(0);
    expect(screen).toContain(`Credential for ${server.url}/: `);
    expect(screen).toContain('saved ');
    expect(screen).not.toContain(ADMIN);
    expect(JSON.parse(readFileSync(join(env.HOME, '.config/aami/config.json'), 'utf8'))).toEqual({ server: `${server.url}/`, credential: ADMIN });
  });

  it('refuses a config file that group or others can read, and reads $AAMI_CONFIG at 0600', async () => {
    const { server } = await realServer();
    const env = cleanEnv();
    const path = join(tempDir(), 'aami.json');
    writeFileSync(path, JSON.stringify({ server: server.url, credential: ADMIN }), { mode: 0o600 });
    expect((await aami({ ...env, AAMI_CONFIG: path }, 'groups', 'show', 'ml-training')).code).toBe(0);

    chmodSync(path, 0o644);
    const open = await aami({ ...env, AAMI_CONFIG: path }, 'groups', 'show', 'ml-training');
    expect(open).toMatchObject({ code: 2, stdout: '' });
    expect(open.stderr).toContain(`${path} is open to group or others (mode 0644); it holds a credential, so run: chmod 600 ${path}`);
    expect(open.stderr).not.toContain(ADMIN);
    chmodSync(path, 0o640);
    expect((await aami({ ...env, AAMI_CONFIG: path }, 'groups', 'list')).code).toBe(2);
    // with server and credential both in the environment, the file is not needed, so not read
    expect((await aami({ ...env, AAMI_CONFIG: path, AAMI_SERVER: server.url, AAMI_CREDENTIAL: ADMIN }, 'groups', 'show', 'ml-training')).code).toBe(0);
  });

  it('sends a saved credential only to the server it was saved for', async () => {
    const { server } = await realServer();
    // Another real server that would take the same credential: only its log can say nothing was sent.
    const other = await loggedServer();
    const env = cleanEnv();
    mkdirSync(join(env.HOME, '.config/aami'), { recursive: true });
    writeFileSync(join(env.HOME, '.config/aami/config.json'), JSON.stringify({ server: server.url, credential: ADMIN }), { mode: 0o600 });
    const elsewhere = await aami(env, 'credentials', 'list', '--server', other.url);
    expect(elsewhere).toMatchObject({ code: 1, stderr: expect.stringContaining('error: unauthorized:') });
    expect(other.log()).toMatch(/msg="authentication failed" method=GET route=\/api\/v1\/credentials status=401 code=unauthorized by=nobody/);
    expect(other.log()).not.toContain(ADMIN);
  });
});

describe('aami --version and --help', () => {
  async function run(...argv: string[]) {
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(argv, { out: (l) => out.push(l), err: (l) => err.push(l), env: { HOME: '/nonexistent' } });
    return { code, out: out.join('\n'), err: err.join('\n') };
  }

  it('prints the package version, as a process', async () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(await aami(cleanEnv(), '--version')).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' });
  });

  it('has help for every admin command and subcommand', async () => {
    const top = await run('--help');
    for (const name of ['login', 'groups', 'targets', 'tokens', 'credentials']) {
      expect(top.out).toMatch(new RegExp(`\\n  ${name} +\\S`));
      const help = await run(name, '--help');
      expect(help).toMatchObject({ code: 0, out: expect.stringContaining(`Usage: aami ${name}`) });
      if (name === 'login') continue;
      expect(help.out).toContain('Exit status: 0 ok, 1 the server refused');
      const actions = [...help.out.split('Commands:\n')[1]!.split('\n\n')[0]!.matchAll(/^ {2}(\S+)/gm)].map((m) => m[1]!);
      expect(actions.length).toBeGreaterThanOrEqual(3);
      for (const action of actions) {
        expect(await run(name, action, '--help')).toMatchObject({ code: 0, out: expect.stringMatching(new RegExp(`^Usage: aami ${name} ${action}`)) });
      }
    }
    expect(await run('tokens')).toMatchObject({ code: 2, out: expect.stringContaining('Usage: aami tokens') });
    expect(await run('tokens', 'frobnicate')).toMatchObject({ code: 2, err: expect.stringContaining('unknown command "frobnicate"') });
  });

  it('answers usage errors with exit 2 before any request', async () => {
    const cases = [
      ['tokens', 'create', 'x', '--group', 'g', '--max-uses', 'lots', '--expires', '30d', '--server', 'http://127.0.0.1:1'],
      ['tokens', 'create', 'x', '--max-uses', '1', '--expires', '30d', '--server', 'http://127.0.0.1:1'],
      ['tokens', 'show', '--server', 'http://127.0.0.1:1'],
      ['tokens', 'show', 'a', 'b', '--server', 'http://127.0.0.1:1'],
      ['targets', 'show', '..', '--server', 'http://127.0.0.1:1'],
      ['targets', 'create', 'h', '--ip', '10.0.0.1', '--group', 'g', '--exporter', 'node_exporter:http', '--server', 'http://127.0.0.1:1'],
      ['groups', 'list', '--server', 'ftp://example.com'],
      ['groups', 'list', '--server', 'http://admin:secret@example.com'],
      ['groups', 'list', '--no-such-flag'],
    ];
    for (const argv of cases) {
      const result = await run(...argv);
      expect(result, argv.join(' ')).toMatchObject({ code: 2, out: '' });
      expect(result.err).toContain(`--help' for usage.`);
      expect(result.err).not.toContain('secret');
    }
  });
});
