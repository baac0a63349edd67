import { execFileSync } from 'node:child_process';
import { createHash, createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { mkdirSync, readdirSync, readlinkSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FailureLimiter } from '../src/api/auth.js';
import { NODE_PREFIX, newSecretCredential } from '../src/tokens/secret.js';
import { gitCli, onCleanup, tempDir } from './helpers.js';
import { apiHarness } from './api-helpers.js';
import { serverConfig, waitFor } from './node-helpers.js';
import { startServer } from '../src/server.js';
import { connect } from 'node:net';
import { Agent, get } from 'node:http';
import { once } from 'node:events';

const MACHINE = 'c'.repeat(64);

describe('bootstrap tokens enrol; node credentials maintain', () => {
  it('gives a used-up token no power over the host it enrolled: no relabel, no new address, no credential rotation', async () => {
    const api = await apiHarness();
    const { token } = await api.token({ max_uses: 1 });
    const enrolled = await api.register(token, { hostname: 'gpu-1', ip_address: '10.0.0.1', machine_id: MACHINE, facts: { gpu_count: 8 } });
    expect(enrolled.status).toBe(201);
    await api.call('PATCH', '/api/v1/targets/gpu-1', { body: { labels: { rack: 'r1', owner: 'ml-infra' } } });
    const before = api.commits();
    // Even with the right machine identity, a used-up token is refused before anything else is looked at.
    for (const body of [
      { hostname: 'gpu-1', ip_address: '10.6.6.6', machine_id: MACHINE, labels: { gpu_count: 'visible[$(id>pwned)]' } },
      { hostname: 'gpu-1', ip_address: '10.0.0.1', machine_id: MACHINE, rotate_credential: true },
    ]) {
      expect(await api.register(token, body)).toMatchObject({ status: 403, json: { error: { code: 'token_exhausted' } } });
    }
    expect(api.commits()).toBe(before);
    const target = (await api.get('/api/v1/targets/gpu-1')).json;
    expect(target).toMatchObject({ ip_address: '10.0.0.1', labels: { rack: 'r1', owner: 'ml-infra' }, node_labels: { gpu_count: '8' } });
    // The node's own credential still works.
    expect((await api.get('/api/v1/nodes/self', { token: enrolled.json.node_credential })).status).toBe(200);
  });

  it('re-enrols the same machine with an active token (its credential was lost) and refuses another machine with hostname_taken', async () => {
    const api = await apiHarness();
    const { token, id } = await api.token({ max_uses: 5 });
    const first = await api.register(token, { hostname: 'ubuntu', ip_address: '10.0.0.1', machine_id: MACHINE, labels: { rack: 'r1' } });
    await api.call('PATCH', '/api/v1/targets/ubuntu', { body: { labels: { owner: 'ml-infra' } } });
    const clone = await api.register(token, { hostname: 'ubuntu', ip_address: '10.0.0.2', machine_id: 'd'.repeat(64) });
    expect(clone).toMatchObject({ status: 409, json: { error: { code: 'hostname_taken', message: expect.stringContaining('another machine holds this host name or address') } } });
    expect((await api.get('/api/v1/nodes/self', { token: first.json.node_credential })).status).toBe(200);

    const again = await api.register(token, { hostname: 'ubuntu', ip_address: '10.0.0.3', machine_id: MACHINE });
    expect(again).toMatchObject({ status: 200, json: { outcome: 'reenrolled', target: { ip_address: '10.0.0.3', labels: { owner: 'ml-infra' } } } });
    expect(again.json.node_credential).not.toBe(first.json.node_credential);
    expect((await api.get('/api/v1/nodes/self', { token: first.json.node_credential })).status).toBe(401);
    expect((await api.get(`/api/v1/bootstrap-tokens/${id}`)).json.uses).toBe(1);
  });

  it('keeps only a hash of a machine identity: what a reader sees (API, repository) cannot re-enrol the host with a token', async () => {
    const api = await apiHarness();
    const { token } = await api.token({ max_uses: 5 });
    const enrolled = await api.register(token, { hostname: 'victim-01', ip_address: '10.0.0.1', machine_id: MACHINE });
    expect(enrolled.status).toBe(201);
    const shown = (await api.get('/api/v1/targets/victim-01')).json.machine_id as string;
    expect(shown).toMatch(/^sha256:[0-9a-f]{64}$/);
    const file = api.git('show', 'HEAD:targets/ml-training/victim-01.yaml');
    expect(file).not.toContain(MACHINE);
    expect(file).toContain(`machine_id_hash: ${shown}`);
    // A token holder sends what they read, in the form the schema takes.
    const before = api.commits();
    const takeover = await api.register(token, { hostname: 'victim-01', ip_address: '10.6.6.6', machine_id: shown.slice('sha256:'.length) });
    expect(takeover).toMatchObject({ status: 409, json: { error: { code: 'hostname_taken' } } });
    expect(api.commits()).toBe(before);
    expect((await api.get('/api/v1/nodes/self', { token: enrolled.json.node_credential })).status).toBe(200);
    // The machine itself still re-enrols.
    expect(await api.register(token, { hostname: 'victim-01', ip_address: '10.0.0.2', machine_id: MACHINE })).toMatchObject({ status: 200, json: { outcome: 'reenrolled' } });

    // A file written before: the identity as sent, readable in the repository's history for
    // good. It proves nothing: a token does not re-enrol with it. The node's own credential
    // records the identity it sends now (bootstrap.sh's v2), and the old value goes.
    const legacy = 'e'.repeat(64);
    const node = newSecretCredential(NODE_PREFIX);
    await api.push({ 'targets/ml-training/old-01.yaml': `hostname: old-01\nip_address: 10.0.0.9\nprimary_group: ml-training\nmachine_id: ${legacy}\nnode_credential_hash: ${node.hash}\n` });
    expect((await api.get('/api/v1/targets/old-01')).json.machine_id).toBeNull();
    expect(await api.register(token, { hostname: 'old-01', ip_address: '10.6.6.6', machine_id: legacy })).toMatchObject({ status: 409, json: { error: { code: 'hostname_taken' } } });
    // A bootstrap.sh from before v2 sends the old value again, at every run: it is never recorded.
    for (const ip of ['10.0.0.10', '10.0.0.9']) {
      expect(await api.call('PUT', '/api/v1/nodes/self', { token: node.credential, body: { ip_address: ip, machine_id: legacy } })).toMatchObject({ status: 200, json: { outcome: 'updated' } });
      expect(api.git('show', 'HEAD:targets/ml-training/old-01.yaml')).not.toMatch(/machine_id_hash/);
      expect(await api.register(token, { hostname: 'old-01', ip_address: '10.6.6.6', machine_id: legacy })).toMatchObject({ status: 409, json: { error: { code: 'hostname_taken' } } });
    }
    const now = 'f'.repeat(64);
    expect(await api.call('PUT', '/api/v1/nodes/self', { token: node.credential, body: { ip_address: '10.0.0.9', machine_id: now } })).toMatchObject({ status: 200, json: { outcome: 'updated' } });
    const rewritten = api.git('show', 'HEAD:targets/ml-training/old-01.yaml');
    expect(rewritten).not.toContain(legacy);
    expect(rewritten).toMatch(/^machine_id_hash: sha256:[0-9a-f]{64}$/m);
    expect(await api.register(token, { hostname: 'old-01', ip_address: '10.0.0.9', machine_id: now })).toMatchObject({ status: 200, json: { outcome: 'reenrolled' } });
  });

  it('tells a node or a token that an address is held, not which host holds it (they may not read the inventory)', async () => {
    const api = await apiHarness();
    await api.post('/api/v1/targets', { hostname: 'secret-project-gpu-07', ip_address: '10.0.0.7', primary_group_id: 'ml-training' });
    const { token } = await api.token();
    const enrolled = await api.register(token, { hostname: 'n1', ip_address: '10.0.0.1', machine_id: MACHINE });
    const answers = [
      await api.register(token, { hostname: 'n2', ip_address: '10.0.0.7', machine_id: 'd'.repeat(64) }),
      await api.call('PUT', '/api/v1/nodes/self', { token: enrolled.json.node_credential, body: { ip_address: '10.0.0.7' } }),
    ];
    // A token is told the name or the address is held (one answer for both: no probe of either); a node, whose name is its own, that the address is.
    expect(answers[0]).toMatchObject({ status: 409, json: { error: { code: 'hostname_taken', message: expect.stringContaining('another machine holds this host name or address') } } });
    expect(answers[1]).toMatchObject({ status: 409, json: { error: { code: 'conflict', message: expect.stringContaining('10.0.0.7:9100 is already scraped for another target') } } });
    for (const answer of answers) expect(answer.text).not.toContain('secret-project');
    // An editor, who reads the inventory anyway, is told.
    expect((await api.post('/api/v1/targets', { hostname: 'n3', ip_address: '10.0.0.7', primary_group_id: 'ml-training' })).json.error.message).toContain('target "secret-project-gpu-07"');
  });

  it('lets a node update what it owns and keeps the admin\'s labels across any re-run', async () => {
    const api = await apiHarness();
    const { token } = await api.token({ labels: { environment: 'production' } });
    const { node_credential: credential } = (await api.register(token, { hostname: 'n1', ip_address: '10.0.0.1', facts: { gpu_count: 8, gpu_model: 'H100' }, labels: { environment: 'dev', team: 'a' } })).json;
    await api.call('PATCH', '/api/v1/targets/n1', { body: { labels: { rack: 'r7', gpu_model: 'H100-SXM' } } });
    const updated = await api.call('PUT', '/api/v1/nodes/self', { token: credential, body: { ip_address: '10.0.0.2', facts: { gpu_count: 4, gpu_model: 'H100' }, labels: { team: 'b' } } });
    expect(updated.status).toBe(200);
    expect(updated.json.target).toMatchObject({
      labels: { rack: 'r7', gpu_model: 'H100-SXM' },
      node_labels: { team: 'b', gpu_count: '4', gpu_model: 'H100' },
      token_labels: { environment: 'production' },
      effective_labels: { rack: 'r7', gpu_model: 'H100-SXM', gpu_count: '4', team: 'b', environment: 'production' },
    });
    expect(updated.json.target.label_sources).toMatchObject({ rack: 'admin', gpu_model: 'admin', gpu_count: 'node', environment: expect.stringMatching(/^token:/), aami_group: 'aami' });
    // A merge patch: null removes one label and keeps the rest.
    const patched = await api.call('PATCH', '/api/v1/targets/n1', { body: { labels: { gpu_model: null } } });
    expect(patched.json.labels).toEqual({ rack: 'r7' });
    expect(patched.json.effective_labels.gpu_model).toBe('H100');
  });

  it('deregisters a node with its own credential in a commit authored by the node, and forgets its heartbeat', async () => {
    const api = await apiHarness();
    const { token } = await api.token();
    const { node_credential: credential } = (await api.register(token, { hostname: 'leaving', ip_address: '10.0.0.1' })).json;
    await api.post('/api/v1/nodes/heartbeat', undefined, { token: credential });
    expect(api.heartbeats.lastSeen('leaving')).toBeDefined();
    expect(await api.call('DELETE', '/api/v1/nodes/self', { token: credential })).toMatchObject({ status: 200, json: { deleted: 'leaving' } });
    expect(api.git('log', '-1', '--format=%an|%s').trim()).toBe('node leaving|Deregister leaving');
    expect((await api.get('/api/v1/targets/leaving')).status).toBe(404);
    expect(api.heartbeats.lastSeen('leaving')).toBeUndefined();
    expect((await api.get('/api/v1/nodes/self', { token: credential })).status).toBe(401);

    const { token: kept, id } = await api.token({ allow_deregister: false });
    const { node_credential: stays } = (await api.register(kept, { hostname: 'stays', ip_address: '10.0.0.2' })).json;
    expect(await api.call('DELETE', '/api/v1/nodes/self', { token: stays })).toMatchObject({ status: 403, json: { error: { code: 'forbidden' } } });
    // Its file broken by a push: the token lets nobody in, and its restriction still holds.
    await api.push({ [`tokens/${id}.yaml`]: `${api.git('show', `HEAD:tokens/${id}.yaml`)}revoked: yes\n` });
    expect(api.live.snapshot().catalog.tokens.has(id)).toBe(false);
    const refused = await api.call('DELETE', '/api/v1/nodes/self', { token: stays });
    expect(refused).toMatchObject({ status: 403, json: { error: { code: 'forbidden', message: expect.stringContaining(`tokens/${id}.yaml is invalid`) } } });
    expect((await api.get('/api/v1/targets/stays')).status).toBe(200);
    // The API says why the token is gone, and its history (what broke it) stays readable.
    expect(await api.get(`/api/v1/bootstrap-tokens/${id}`)).toMatchObject({ status: 404, json: { error: { message: expect.stringContaining(`its file tokens/${id}.yaml is invalid`) } } });
    expect(await api.post(`/api/v1/bootstrap-tokens/${id}/revoke`)).toMatchObject({ status: 404, json: { error: { message: expect.stringContaining('lets nobody in until it is fixed') } } });
    const history = await api.get(`/api/v1/bootstrap-tokens/${id}/history`);
    expect(history.status).toBe(200);
    expect(history.json[0].message).toBe('A change pushed by a person');
    expect((await api.get('/api/v1/bootstrap-tokens/nope0000/history')).status).toBe(404);
  });
});

describe('labels are data', () => {
  const reserved = ['job', 'instance', 'hostname', '__address__', '__meta_x', 'aami_group', '__proto__'];

  it('refuses reserved label names in every API body that takes labels', async () => {
    const api = await apiHarness();
    const { token } = await api.token();
    const before = api.commits();
    for (const name of reserved) {
      const labels = { [name]: 'fake' };
      const calls = [
        await api.post('/api/v1/targets', { hostname: 'x', ip_address: '10.0.0.9', primary_group_id: 'ml-training', labels }),
        await api.post('/api/v1/groups', { name: 'x', namespace: 'logical', labels }),
        await api.post('/api/v1/bootstrap-tokens', { name: 'x', default_group_id: 'ml-training', max_uses: 1, expires_at: '2027-01-01T00:00:00Z', labels }),
        await api.register(token, { hostname: 'x', ip_address: '10.0.0.9', labels }),
      ];
      for (const call of calls) expect(call, name).toMatchObject({ status: 400, json: { error: { code: 'validation_failed', details: [expect.objectContaining({ field: `labels.${name}` })] } } });
    }
    expect(api.commits()).toBe(before);
  });

  it('reports job and instance set in group and target files as invalid, keeping their last good version', async () => {
    const api = await apiHarness();
    await api.post('/api/v1/targets', { hostname: 'web-1', ip_address: '10.0.0.1', primary_group_id: 'api-servers' });
    await api.nextCompile();
    await api.push({
      'groups/api-servers.yaml': 'id: api-servers\nname: api-servers\nnamespace: logical\nlabels: {job: fake}\n',
      'targets/api-servers/web-1.yaml': 'hostname: web-1\nip_address: 10.0.0.1\nprimary_group: api-servers\nlabels: {instance: other-node:9100}\n',
    });
    const problems = (await api.get('/api/v1/health')).json.compiler.invalid_files.map((p: any) => `${p.file}: ${p.field}`);
    expect(problems).toEqual(['groups/api-servers.yaml: labels.job', 'targets/api-servers/web-1.yaml: labels.instance']);
    const [entry] = api.sdFile('node');
    expect(entry!.labels).not.toHaveProperty('job');
    expect(entry!.labels).not.toHaveProperty('instance');
  });

  it('refuses control characters in label values and names, and keeps hostile printable values as data', async () => {
    const api = await apiHarness();
    for (const value of ['a\nb', 'nul\u0000', 'tab\there', 'bell\u0007']) {
      const response = await api.post('/api/v1/targets', { hostname: 'x', ip_address: '10.0.0.9', primary_group_id: 'ml-training', labels: { rack: value } });
      expect(response.json.error.details).toContainEqual({ field: 'labels.rack', message: expect.stringContaining('control characters') });
    }
    for (const name of ['bad\nname', 'evil\u0000']) {
      expect((await api.post('/api/v1/bootstrap-tokens', { name, default_group_id: 'ml-training', max_uses: 1, expires_at: '2027-01-01T00:00:00Z' })).status).toBe(400);
    }
    // A scrape path reaches the SD files and Prometheus's request line: a URL path, bounded.
    for (const path of ['/m\n\u0000"evil', '/a b', `/${'x'.repeat(300)}`, 'metrics']) {
      const response = await api.post('/api/v1/targets', { hostname: 'x', ip_address: '10.0.0.9', primary_group_id: 'ml-training', exporters: [{ type: 'node_exporter', metrics_path: path }] });
      expect(response.json.error.details, JSON.stringify(path)).toContainEqual({ field: 'exporters[0].metrics_path', message: expect.stringMatching(/URL path|at most 256/) });
    }
    const hostile = '$(id>pwned) `id` visible[$(touch x)] ; rm -rf / "\' || true';
    const created = await api.post('/api/v1/targets', { hostname: 'x', ip_address: '10.0.0.9', primary_group_id: 'ml-training', labels: { gpu_count: hostile } });
    expect(created.status).toBe(201);
    await api.nextCompile();
    expect(api.sdFile('node')[0]!.labels.gpu_count).toBe(hostile);
    api.git('fsck', '--strict', '--no-progress');
  });
});

describe('repository content is untrusted input', () => {
  it('refuses exporter type "constructor" (a key every JS object has) and keeps compiling', async () => {
    const api = await apiHarness();
    const response = await api.post('/api/v1/targets', { hostname: 'x', ip_address: '10.0.0.9', primary_group_id: 'ml-training', exporters: [{ type: 'constructor' }] });
    expect(response).toMatchObject({ status: 400, json: { error: { code: 'validation_failed' } } });
    await api.push({
      'targets/ml-training/y.yaml': 'hostname: y\nip_address: 10.0.0.8\nprimary_group: ml-training\nexporters: [{type: constructor}, {type: node_exporter}]\n',
      'targets/ml-training/z.yaml': 'hostname: z\nip_address: 10.0.0.7\nprimary_group: ml-training\n',
    });
    await api.nextCompile();
    const health = (await api.get('/api/v1/health')).json;
    expect(health.compiler.last_error).toBeNull();
    expect(health.compiler.invalid_files).toEqual([expect.objectContaining({ file: 'targets/ml-training/y.yaml', field: 'exporters[0].type' })]);
    expect(api.sdFile('node').map((e) => e.targets[0])).toEqual(['10.0.0.7:9100']);
  });

  it('refuses a check script committed as a symlink: it is never served, and health says why', async () => {
    const api = await apiHarness();
    const work = join(tempDir(), 'work');
    gitCli(tempDir(), 'clone', '--quiet', api.dir, work);
    mkdirSync(join(work, 'checks/evil'));
    writeFileSync(join(work, 'checks/evil/check.yaml'), 'description: reads the server environment\n');
    symlinkSync('/proc/self/environ', join(work, 'checks/evil/check.sh'));
    gitCli(work, 'add', '-A');
    gitCli(work, 'commit', '--quiet', '-m', 'evil check');
    gitCli(work, 'push', '--quiet', 'origin', 'HEAD:main');
    await api.follow();
    const problems = (await api.get('/api/v1/health')).json.compiler.invalid_files.map((p: any) => `${p.file}: ${p.message}`);
    expect(problems).toContain('checks/evil/check.sh: is a symbolic link: refused (config files and check scripts must be regular files)');
    expect((await api.get('/api/v1/checks')).json.map((c: any) => c.name)).not.toContain('evil');
    const { token } = await api.token();
    const { node_credential: credential } = (await api.register(token, { hostname: 'n1', ip_address: '10.0.0.1' })).json;
    expect((await api.get('/api/v1/checks/node/evil/script', { token: credential })).status).toBe(404);
  });

  it('survives a file with 130,000 problems and answers health with counts and the first few', async () => {
    const api = await apiHarness();
    await api.push({ 'targets/ml-training/many.yaml': `hostname: many\nip_address: 10.0.0.1\nprimary_group: ml-training\ngroups: [${Array(130_000).fill('BAD').join(', ')}]\n` });
    const health = await api.get('/api/v1/health');
    expect(health.status).toBe(200);
    expect(health.json.compiler).toMatchObject({ problem_count: 130_000, invalid_file_count: 1 });
    expect(health.json.compiler.invalid_files).toHaveLength(50);
    expect(health.text.length).toBeLessThan(20_000);
  });
});

describe('the downloads directory is untrusted', () => {
  it('serves regular files and their sha256 only: a symlink, a directory or a FIFO in it answers 404, and a linked secret never leaves', async () => {
    const downloads = tempDir('aami-downloads-');
    const tarball = Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 7) % 256));
    writeFileSync(join(downloads, 'node_exporter-linux-amd64.tar.gz'), tarball);
    // What a link could reach: the server's state directory (here a stand-in with a secret), /etc/shadow.
    const secret = `aami_cred_statedir_${'s'.repeat(40)}`;
    const state = join(tempDir('aami-state-'), 'admin-credential.txt');
    writeFileSync(state, `${secret}\n`);
    symlinkSync(state, join(downloads, 'state.tar.gz'));
    symlinkSync('/etc/shadow', join(downloads, 'shadow'));
    symlinkSync('node_exporter-linux-amd64.tar.gz', join(downloads, 'alias.tar.gz'));
    symlinkSync('/nonexistent/x', join(downloads, 'dangling'));
    mkdirSync(join(downloads, 'subdir'));
    writeFileSync(join(downloads, 'subdir/inner'), secret);
    execFileSync('mkfifo', [join(downloads, 'fifo')]);
    const api = await apiHarness({ downloadsDir: downloads });

    const file = await api.app.request('/downloads/node_exporter-linux-amd64.tar.gz');
    expect(file.status).toBe(200);
    expect(Buffer.from(await file.arrayBuffer()).equals(tarball)).toBe(true);
    const sum = await api.get('/downloads/node_exporter-linux-amd64.tar.gz.sha256', { token: null });
    expect(sum).toMatchObject({ status: 200, text: `${createHash('sha256').update(tarball).digest('hex')}  node_exporter-linux-amd64.tar.gz\n` });

    for (const name of ['state.tar.gz', 'shadow', 'alias.tar.gz', 'dangling', 'subdir', 'fifo', 'subdir%2Finner', '..%2Fdownloads', 'missing']) {
      for (const path of [`/downloads/${name}`, `/downloads/${name}.sha256`]) {
        const response = await api.get(path, { token: null });
        expect(response, path).toMatchObject({ status: 404, json: { error: { code: 'not_found' } } });
        expect(response.text, path).not.toContain(secret);
      }
    }
  });
});

describe('downloads at size', () => {
  it('streams a big download without holding it in memory, and gives many nodes asking at once its sum', async () => {
    const downloads = tempDir('aami-downloads-');
    const size = 200 * 1024 * 1024;
    writeFileSync(join(downloads, 'dcgm-exporter-linux-amd64.tar.gz'), '');
    truncateSync(join(downloads, 'dcgm-exporter-linux-amd64.tar.gz'), size); // sparse: 200 MiB of zeros, no disk
    const api = await apiHarness({ downloadsDir: downloads });
    const zeros = Buffer.alloc(1 << 20);
    const expected = createHash('sha256');
    for (let i = 0; i < size / zeros.length; i++) expected.update(zeros);
    const sum = `${expected.digest('hex')}  dcgm-exporter-linux-amd64.tar.gz\n`;

    // Eight nodes ask for the sum at once: one answer for all.
    const sums = await Promise.all(Array.from({ length: 8 }, () => api.get('/downloads/dcgm-exporter-linux-amd64.tar.gz.sha256', { token: null })));
    expect(sums.map((s) => [s.status, s.text])).toEqual(Array.from({ length: 8 }, () => [200, sum]));

    // Four slow clients: each has its answer's head, none has read on. The files are not in memory.
    const before = process.memoryUsage().arrayBuffers;
    const answers = await Promise.all(Array.from({ length: 4 }, () => api.app.request('/downloads/dcgm-exporter-linux-amd64.tar.gz')));
    const readers = answers.map((answer) => answer.body!.getReader());
    for (const reader of readers) expect((await reader.read()).value!.length).toBeGreaterThan(0);
    expect(answers.map((a) => a.headers.get('content-length'))).toEqual(Array(4).fill(String(size)));
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 * 1024 * 1024);
    for (const reader of readers) await reader.cancel();
    // One read to the end: every byte, as sent.
    let total = 0;
    const whole = createHash('sha256');
    for await (const chunk of (await api.app.request('/downloads/dcgm-exporter-linux-amd64.tar.gz')).body!) {
      total += chunk.length;
      whole.update(chunk);
    }
    expect(`${whole.digest('hex')}  dcgm-exporter-linux-amd64.tar.gz\n`).toBe(sum);
    expect(total).toBe(size);
    const head = await api.app.request('/downloads/dcgm-exporter-linux-amd64.tar.gz', { method: 'HEAD' });
    expect([head.status, head.headers.get('content-length'), await head.text()]).toEqual([200, String(size), '']);
    // Every descriptor it opened is closed again (the cancelled streams', the sums', the HEAD's).
    await waitFor('the download descriptors to close', async () => openIn(downloads).length === 0);
  });

  it('holds at most two answers open on a connection that pipelines downloads and reads none, and closes them when it drops', async () => {
    const downloads = tempDir('aami-downloads-');
    writeFileSync(join(downloads, 'big.tar.gz'), '');
    truncateSync(join(downloads, 'big.tar.gz'), 32 * 1024 * 1024);
    const server = await startServer(serverConfig({ downloadsDir: downloads }));
    onCleanup(() => server.close());
    const socket = connect(Number(new URL(server.url).port), '127.0.0.1');
    await once(socket, 'connect');
    socket.write('GET /downloads/big.tar.gz HTTP/1.1\r\nHost: aami\r\n\r\n'.repeat(30));
    await once(socket, 'data'); // the first answer is under way; the others wait behind it
    socket.pause(); // and the client reads no more
    await waitFor('two answers to open their files', async () => openIn(downloads).length === 2);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(openIn(downloads).length).toBe(2); // not a third: the rest were answered 429
    socket.destroy();
    await waitFor('the download descriptors to close', async () => openIn(downloads).length === 0);

    // One after another on a kept-alive connection, as a node fetches its tarball and sum: every one answered.
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    onCleanup(() => agent.destroy());
    for (let i = 0; i < 5; i++) {
      const answer = await new Promise<{ status: number; bytes: number }>((resolve, reject) => {
        get(`${server.url}/downloads/big.tar.gz`, { agent }, (response) => {
          let bytes = 0;
          response.on('data', (chunk: Buffer) => (bytes += chunk.length)).on('end', () => resolve({ status: response.statusCode!, bytes }));
        }).on('error', reject);
      });
      expect(answer).toEqual({ status: 200, bytes: 32 * 1024 * 1024 });
    }
    await waitFor('the download descriptors to close', async () => openIn(downloads).length === 0);
  });
});

/** This process's open descriptors on files under `dir`. */
function openIn(dir: string): string[] {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir);
    } catch {
      return false; // closed while listed
    }
  });
}

describe('secrets compared safely', () => {
  it('answers a webhook signature or token of any length or bytes with 401, never 500', async () => {
    const api = await apiHarness({ remote: { webhookSecret: 'a-webhook-secret-of-length-32-xx' } });
    const attempts: Array<Record<string, string>> = [
      { 'x-hub-signature-256': 'sha256=\u00e9\u00e9' },
      { 'x-hub-signature-256': 'short' },
      { 'x-gitea-signature': 'x'.repeat(5000) },
      { 'x-gitlab-token': 'a-webhook-secret-of-length-32-x' },
      { 'x-gitlab-token': '\u00ff' },
    ];
    for (const headers of attempts) {
      const response = await api.call('POST', '/api/v1/sync', { token: null, raw: '{}', headers });
      expect(response.status, JSON.stringify(headers)).toBe(401);
    }
    const body = '{"ref":"refs/heads/main"}';
    const signature = `sha256=${createHmac('sha256', 'a-webhook-secret-of-length-32-xx').update(body).digest('hex')}`;
    expect((await api.call('POST', '/api/v1/sync', { token: null, raw: body, headers: { 'x-hub-signature-256': signature } })).status).toBe(200);
    expect((await api.call('POST', '/api/v1/sync', { token: null, raw: body, headers: { 'x-gitlab-token': 'a-webhook-secret-of-length-32-xx' } })).status).toBe(200);
  });
});

describe('the failure limiter', () => {
  it('answers 300 concurrent wrong credentials with exactly 20 401s and serves the admin and nodes behind the same address meanwhile', async () => {
    const api = await apiHarness({ maxFailures: 20 });
    const { token } = await api.token();
    const { node_credential: credential } = (await api.register(token, { hostname: 'n1', ip_address: '10.0.0.1' })).json;
    const wrong = Array.from({ length: 300 }, (_, i) => api.register(`aami_bootstrap_${'abcdefgh'}_${String(i).padStart(40, 'x')}`, { hostname: `h${i}`, ip_address: '10.0.0.2' }));
    const valid = [api.get('/api/v1/targets'), api.post('/api/v1/nodes/heartbeat', undefined, { token: credential }), api.get('/api/v1/sd/prometheus')];
    const statuses = (await Promise.all(wrong)).map((r) => r.status);
    expect(statuses.filter((s) => s === 401)).toHaveLength(20);
    expect(statuses.filter((s) => s === 429)).toHaveLength(280);
    for (const response of await Promise.all(valid)) expect(response.status).toBe(200);
    expect((await api.register(token, { hostname: 'n2', ip_address: '10.0.0.3' })).status).toBe(201);
  });

  it('keeps its memory bounded at 100k addresses and forgets windows in the order they opened', () => {
    let now = 0;
    const limiter = new FailureLimiter({ maxFailures: 2, windowMs: 60_000, now: () => now, maxAddresses: 50_000 });
    for (let i = 0; i < 100_000; i++) limiter.fail(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    expect(limiter.size).toBe(50_000);
    limiter.fail('192.0.2.1');
    limiter.fail('192.0.2.1');
    expect(limiter.limited('192.0.2.1')).toBe(60);
    now += 61_000;
    limiter.fail('192.0.2.2');
    expect(limiter.size).toBe(1);
    expect(limiter.limited('192.0.2.1')).toBeUndefined();
  });

  it('ends a window when the clock steps back, and takes a count back when told to', () => {
    let now = 1_000_000;
    const limiter = new FailureLimiter({ maxFailures: 2, windowMs: 60_000, now: () => now });
    limiter.fail('a');
    limiter.fail('a');
    expect(limiter.limited('a')).toBe(60);
    limiter.forgive('a');
    expect(limiter.limited('a')).toBeUndefined();
    limiter.fail('a');
    now -= 3_600_000; // an hour back: not a window of an hour and a minute
    expect(limiter.limited('a')).toBeUndefined();
  });
});

describe('named credentials', () => {
  it('authors commits by the credential\'s name, limits each role, and stops working when revoked or expired', async () => {
    const api = await apiHarness();
    const alice = await api.post('/api/v1/credentials', { name: 'alice', role: 'editor' });
    expect(alice).toMatchObject({ status: 201, json: { name: 'alice', role: 'editor', credential: expect.stringMatching(/^aami_cred_[a-z0-9]{8}_[A-Za-z0-9]{40}$/) } });
    const prometheus = (await api.post('/api/v1/credentials', { name: 'prometheus-dc1', role: 'reader', expires_at: '2026-12-01T00:00:00Z' })).json;
    expect((await api.post('/api/v1/credentials', { name: 'alice', role: 'reader' })).json.error.code).toBe('conflict');

    expect((await api.post('/api/v1/groups', { name: 'alices-group', namespace: 'logical' }, { token: alice.json.credential })).status).toBe(201);
    expect(api.git('log', '-1', '--format=%an <%ae>').trim()).toBe(`alice <${alice.json.id}@credentials.aami>`);
    expect((await api.post('/api/v1/credentials', { name: 'mallory', role: 'admin' }, { token: alice.json.credential })).status).toBe(403);
    expect((await api.get('/api/v1/sd/prometheus', { token: prometheus.credential })).status).toBe(200);
    expect((await api.post('/api/v1/groups', { name: 'nope', namespace: 'logical' }, { token: prometheus.credential })).status).toBe(403);

    // Only hashes in Git; the list never shows a secret.
    const file = api.git('show', `HEAD:credentials/${alice.json.id}.yaml`);
    expect(file).toMatch(/^secret_hash: sha256:[0-9a-f]{64}$/m);
    expect(api.git('log', '-p', '--all').includes(alice.json.credential.split('_').at(-1))).toBe(false);
    expect((await api.get('/api/v1/credentials')).text).not.toContain(alice.json.credential);

    await api.post(`/api/v1/credentials/${alice.json.id}/revoke`);
    expect((await api.get('/api/v1/groups', { token: alice.json.credential })).status).toBe(401);
    api.advance(6 * 86400_000);
    expect((await api.get('/api/v1/sd/prometheus', { token: prometheus.credential })).json.error.message).toContain('expired');
  });
});
