import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { apiHarness } from './api-helpers.js';
import { NODE_CHANGES } from '../src/api/routes/nodes.js';

const MACHINE_A = 'a'.repeat(64);
const MACHINE_B = 'b'.repeat(64);

describe('bootstrap tokens', () => {
  it('requires an expiry in the future and at least one use', async () => {
    const api = await apiHarness();
    const base = { name: 't', default_group_id: 'ml-training' };
    expect((await api.post('/api/v1/bootstrap-tokens', { ...base, max_uses: 1 })).json.error.details).toContainEqual({ field: 'expires_at', message: 'is required' });
    expect((await api.post('/api/v1/bootstrap-tokens', { ...base, max_uses: 1, expires_at: '2020-01-01T00:00:00Z' })).json.error.details).toContainEqual({ field: 'expires_at', message: 'must be in the future' });
    expect((await api.post('/api/v1/bootstrap-tokens', { ...base, max_uses: 0, expires_at: '2027-01-01T00:00:00Z' })).json.error.details).toContainEqual({ field: 'max_uses', message: 'must be at least 1' });
    expect((await api.post('/api/v1/bootstrap-tokens', { ...base, default_group_id: 'nope', max_uses: 1, expires_at: '2027-01-01T00:00:00Z' })).status).toBe(422);
  });

  it('shows the secret once: never in reads, never in the repo', async () => {
    const api = await apiHarness();
    const { token, id } = await api.token();
    const secret = token.split('_').at(-1)!;
    expect((await api.get(`/api/v1/bootstrap-tokens/${id}`)).text).not.toContain(secret);
    expect((await api.get('/api/v1/bootstrap-tokens')).text).not.toContain(secret);
    const file = api.show(`tokens/${id}.yaml`);
    expect(file).toMatch(/^secret_hash: sha256:[0-9a-f]{64}$/m);
    expect(file).not.toContain(secret);
  });

  it('refuses expired, revoked and used-up tokens with distinct codes', async () => {
    const api = await apiHarness();
    const expiring = await api.token({ expires_at: '2026-11-26T01:00:00Z' });
    const revoked = await api.token();
    const single = await api.token({ max_uses: 1 });
    expect((await api.post(`/api/v1/bootstrap-tokens/${revoked.id}/revoke`)).json).toMatchObject({ revoked: true, active: false });
    expect((await api.register(single.token, { hostname: 'a', ip_address: '10.0.0.1' })).status).toBe(201);
    api.advance(2 * 3600_000);
    const attempt = (token: string) => api.register(token, { hostname: 'b', ip_address: '10.0.0.2' });
    expect(await attempt(expiring.token)).toMatchObject({ status: 403, json: { error: { code: 'token_expired' } } });
    expect(await attempt(revoked.token)).toMatchObject({ status: 403, json: { error: { code: 'token_revoked' } } });
    expect(await attempt(single.token)).toMatchObject({ status: 403, json: { error: { code: 'token_exhausted' } } });
    expect((await api.get(`/api/v1/bootstrap-tokens/${expiring.id}`)).json).toMatchObject({ expired: true, active: false });
    expect((await api.get(`/api/v1/bootstrap-tokens/${single.id}`)).json).toMatchObject({ uses: 1, remaining: 0, active: false });
  });

  it('revokes with DELETE too', async () => {
    const api = await apiHarness();
    const { id } = await api.token();
    expect((await api.call('DELETE', `/api/v1/bootstrap-tokens/${id}`)).json.revoked).toBe(true);
    expect((await api.get('/api/v1/bootstrap-tokens/nope')).status).toBe(404);
  });
});

describe('self-registration', () => {
  it('enrols once with the token; later updates take the node credential, and unchanged makes no commit', async () => {
    const api = await apiHarness();
    const { token, id } = await api.token();
    const first = await api.register(token, { hostname: 'n1', ip_address: '10.0.0.1', machine_id: MACHINE_A });
    expect(first.status).toBe(201);
    const credential = first.json.node_credential as string;
    const commits = api.commits();
    // The token cannot touch the host it enrolled: another machine is refused, and so is a request without identity.
    expect(await api.register(token, { hostname: 'n1', ip_address: '10.6.6.6', machine_id: MACHINE_B })).toMatchObject({ status: 409, json: { error: { code: 'hostname_taken' } } });
    expect(await api.register(token, { hostname: 'n1', ip_address: '10.6.6.6' })).toMatchObject({ status: 409, json: { error: { code: 'hostname_taken' } } });
    const self = (body: unknown) => api.call('PUT', '/api/v1/nodes/self', { token: credential, body });
    const again = await self({ ip_address: '10.0.0.1' });
    expect(again).toMatchObject({ status: 200, json: { outcome: 'unchanged' } });
    expect(again.json.node_credential).toBeUndefined();
    expect(api.commits()).toBe(commits);
    expect(await self({ ip_address: '10.0.0.9' })).toMatchObject({ status: 200, json: { outcome: 'updated', target: { ip_address: '10.0.0.9' } } });
    expect(api.commits()).toBe(commits + 1);
    expect(api.git('log', '-1', '--format=%an <%ae>').trim()).toBe('node n1 <n1@nodes.aami>');
    expect((await api.get('/api/v1/targets')).json).toHaveLength(1);
    expect((await api.get(`/api/v1/bootstrap-tokens/${id}`)).json.uses).toBe(1);
  });

  it('answers a node that sends too many updates of its target 429, with no commit, until its window ends; other nodes go on', async () => {
    const api = await apiHarness();
    const { token } = await api.token({ max_uses: 2 });
    const credentialOf = async (hostname: string, ip: string) => (await api.register(token, { hostname, ip_address: ip })).json.node_credential as string;
    const [n1, n2] = [await credentialOf('n1', '10.0.0.1'), await credentialOf('n2', '10.0.0.2')];
    const self = (credential: string, body: unknown) => api.call('PUT', '/api/v1/nodes/self', { token: credential, body });
    // What comes to no commit is given back: an unchanged update, a refused one, one that fails.
    for (let i = 0; i < NODE_CHANGES.maxFailures; i++) {
      expect((await self(n1, { ip_address: '10.0.0.1' })).json.outcome).toBe('unchanged');
      expect((await self(n1, { ip_address: 'not an address' })).status).toBe(400);
      expect((await self(n1, { ip_address: '10.0.0.2' })).status).toBe(409); // n2's address
    }
    // Each change counts.
    for (let i = 0; i < NODE_CHANGES.maxFailures; i++) expect((await self(n1, { ip_address: `10.0.1.${i % 2}` })).json.outcome, `change ${i}`).toBe('updated');
    const commits = api.commits();
    const limited = await self(n1, { ip_address: '10.0.9.9' });
    expect(limited).toMatchObject({ status: 429, json: { error: { code: 'rate_limited' } } });
    expect(Number(limited.headers.get('retry-after'))).toBe(NODE_CHANGES.windowMs / 1000);
    expect(api.commits()).toBe(commits);
    expect((await api.get('/api/v1/targets/n1')).json.ip_address).not.toBe('10.0.9.9');
    // Another node, and the node's heartbeat, are not held up.
    expect((await self(n2, { ip_address: '10.0.2.2' })).status).toBe(200);
    expect((await api.post('/api/v1/nodes/heartbeat', undefined, { token: n1 })).status).toBe(200);
    // By the server's clock: the window ends, and the update goes through.
    api.advance(NODE_CHANGES.windowMs);
    expect(await self(n1, { ip_address: '10.0.9.9' })).toMatchObject({ status: 200, json: { outcome: 'updated' } });
  });

  it('lets neither a token nor a node credential point Prometheus at a metadata service, a broadcast or a page of its choosing; an admin may', async () => {
    const api = await apiHarness();
    const { token } = await api.token();
    const commits = api.commits();
    const refused = async (attempt: Promise<{ status: number; json: any }>, field: string) => {
      const { status, json } = await attempt;
      expect(status, field).toBe(400);
      expect(json.error.details.map((d: { field: string }) => d.field), field).toEqual([field]);
    };
    for (const ip of ['169.254.169.254', '::ffff:169.254.169.254', '64:ff9b::a9fe:a9fe', '::169.254.169.254', 'fd00:ec2::254', 'fe80::1', '0.0.0.0', '::', '224.0.0.1', 'ff02::1', '255.255.255.255']) {
      await refused(api.register(token, { hostname: 'n1', ip_address: ip }), 'ip_address');
    }
    await refused(api.register(token, { hostname: 'n1', ip_address: '10.0.0.1', exporters: [{ type: 'node_exporter', port: 80, metrics_path: '/latest/meta-data/' }] }), 'exporters[0].metrics_path');
    await refused(api.register(token, { hostname: 'n1', ip_address: '10.0.0.1', exporters: [{ type: 'node_exporter', scheme: 'https' }] }), 'exporters[0].scheme');
    expect(api.commits()).toBe(commits);
    // A node on the server's own host (loopback), with its own port and interval, enrols.
    const enrolled = await api.register(token, { hostname: 'n1', ip_address: '127.0.0.1', exporters: [{ type: 'node_exporter', port: 9101, interval: '30s' }] });
    expect(enrolled.status).toBe(201);
    const self = (body: unknown) => api.call('PUT', '/api/v1/nodes/self', { token: enrolled.json.node_credential, body });
    await refused(self({ ip_address: '169.254.169.254' }), 'ip_address');
    await refused(self({ exporters: [{ type: 'node_exporter', metrics_path: '/' }] }), 'exporters[0].metrics_path');
    expect(api.commits()).toBe(commits + 1);
    // An admin's target may be anywhere, scraped any way.
    const admin = await api.post('/api/v1/targets', { hostname: 'bmc-01', ip_address: '169.254.0.10', primary_group_id: 'ml-training', exporters: [{ type: 'node_exporter', port: 443, metrics_path: '/probe', scheme: 'https' }] });
    expect(admin.status).toBe(201);
  });

  it('keeps whether and where an admin has an exporter scraped (enabled, path, scheme, interval) through the node\'s updates and re-enrolments', async () => {
    const api = await apiHarness();
    const { token } = await api.token();
    const enrolled = await api.register(token, { hostname: 'n1', ip_address: '10.0.0.1', machine_id: MACHINE_A, exporters: [{ type: 'node_exporter', port: 9100 }] });
    expect(enrolled.status).toBe(201);
    const scraped = { type: 'node_exporter', port: 9100, enabled: true, metrics_path: '/node/metrics', scheme: 'https', interval: '30s' };
    expect((await api.call('PATCH', '/api/v1/targets/n1', { body: { exporters: [scraped] } })).status).toBe(200);
    // The node's bootstrap runs again: an update, then a re-enrolment, each sending its type and port only.
    const self = await api.call('PUT', '/api/v1/nodes/self', { token: enrolled.json.node_credential, body: { exporters: [{ type: 'node_exporter', port: 9100 }, { type: 'dcgm_exporter', port: 9400 }] } });
    expect(self.status).toBe(200);
    expect((await api.get('/api/v1/targets/n1')).json.exporters).toEqual([scraped, { type: 'dcgm_exporter', port: 9400, enabled: true }]);
    const reenrolled = await api.register(token, { hostname: 'n1', ip_address: '10.0.0.1', machine_id: MACHINE_A, exporters: [{ type: 'node_exporter', port: 9100, interval: '15s' }] });
    expect(reenrolled.status).toBe(200);
    expect((await api.get('/api/v1/targets/n1')).json.exporters).toEqual([{ ...scraped, interval: '15s' }]);
    // An exporter the admin turned off stays off; the node may turn it off itself, not on again.
    const off = { ...scraped, interval: '15s', enabled: false };
    expect((await api.call('PATCH', '/api/v1/targets/n1', { body: { exporters: [off] } })).status).toBe(200);
    const again = await api.call('PUT', '/api/v1/nodes/self', { token: reenrolled.json.node_credential, body: { exporters: [{ type: 'node_exporter', port: 9100 }] } });
    expect(again.json.outcome).toBe('unchanged');
    expect((await api.get('/api/v1/targets/n1')).json.exporters).toEqual([off]);
  });

  it('issues a new node credential on request and keeps only its hash', async () => {
    const api = await apiHarness();
    const { token } = await api.token();
    const first = await api.register(token, { hostname: 'n1', ip_address: '10.0.0.1' });
    const rotated = await api.call('PUT', '/api/v1/nodes/self', { token: first.json.node_credential, body: { rotate_credential: true } });
    expect(rotated.json.node_credential).toMatch(/^aami_node_/);
    expect(rotated.json.node_credential).not.toBe(first.json.node_credential);
    expect((await api.get('/api/v1/nodes/self', { token: first.json.node_credential })).status).toBe(401);
    expect((await api.get('/api/v1/nodes/self', { token: rotated.json.node_credential })).json.hostname).toBe('n1');
    const file = api.git('show', 'HEAD:targets/ml-training/n1.yaml');
    expect(file).toMatch(/^node_credential_hash: sha256:/m);
    expect(file).not.toContain(rotated.json.node_credential);
  });

  it('keeps a node inside its token\'s group tree', async () => {
    const api = await apiHarness();
    const { token } = await api.token({ default_group_id: 'production' });
    expect((await api.register(token, { hostname: 'n1', ip_address: '10.0.0.1', group_id: 'production-critical' })).json.target.primary_group_id).toBe('production-critical');
    expect(await api.register(token, { hostname: 'n2', ip_address: '10.0.0.2', group_id: 'ml-training' })).toMatchObject({ status: 403, json: { error: { code: 'forbidden' } } });
  });

  it('does not let a token take over a host an admin made, in its groups or not, from any address', async () => {
    const api = await apiHarness();
    await api.post('/api/v1/targets', { hostname: 'db-01', ip_address: '10.0.3.1', primary_group_id: 'databases' });
    await api.post('/api/v1/targets', { hostname: 'gpu-07', ip_address: '10.0.3.7', primary_group_id: 'ml-training' });
    const { token } = await api.token();
    const commits = api.commits();
    for (const [hostname, ip] of [['db-01', '10.0.3.1'], ['db-01', '10.9.9.9'], ['gpu-07', '10.0.3.7'], ['gpu-07', '10.9.9.9']]) {
      const refused = await api.register(token, { hostname, ip_address: ip, machine_id: 'c'.repeat(64) });
      expect(refused, `${hostname} ${ip}`).toMatchObject({ status: 409, json: { error: { code: 'hostname_taken' } } });
      // Nothing said of its group.
      expect(refused.text).not.toMatch(/databases|ml-training/);
    }
    expect(api.commits()).toBe(commits);
    for (const hostname of ['db-01', 'gpu-07']) expect((await api.get(`/api/v1/targets/${hostname}`)).json).toMatchObject({ registered_by_token: null, machine_id: null });
  });

  it('tells a token nothing of other hosts, groups or addresses without a write: what the request alone decides comes first, then one answer for a name or an address held', async () => {
    const api = await apiHarness();
    await api.post('/api/v1/targets', { hostname: 'secret-gpu-07', ip_address: '10.0.3.7', primary_group_id: 'databases' });
    const { token } = await api.token();
    expect((await api.register(token, { hostname: 'mine', ip_address: '10.0.0.1', machine_id: '1'.repeat(64) })).status).toBe(201);
    const commits = api.commits();
    /** What the caller is told, with the names and addresses it sent put back as placeholders. */
    const answer = async (body: Record<string, unknown>, with_ = token) => {
      const { status, json } = await api.register(with_, body);
      const text = JSON.stringify(json).replaceAll(String(body.hostname), 'HOST').replaceAll(String(body.ip_address), 'IP');
      return { status, told: JSON.parse(text) };
    };
    const labels = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`l${i}`, 'v']));
    const probes: Array<Record<string, unknown>> = [
      { ip_address: '10.5.5.5', group_id: 'no-such-group' },
      { ip_address: '10.5.5.5', group_id: 'databases' },
      { ip_address: '10.5.5.5', exporters: [{ type: 'nope' }] },
      { ip_address: '10.5.5.5', exporters: [{ type: 'node_exporter' }, { type: 'node_exporter' }] },
      // The node's labels and its GPU facts' past the file's 64.
      { ip_address: '10.5.5.5', labels, facts: { gpu_count: 1, gpu_model: 'a', gpu_vendor: 'b' } },
      { ip_address: '10.0.3.7', labels, facts: { gpu_count: 1, gpu_model: 'a', gpu_vendor: 'b' } },
      // An address that is scraped (the caller's own, and another's), and one that is not: a held name gets the same.
      { ip_address: '10.0.0.1' },
      { ip_address: '10.0.3.7' },
    ];
    for (const probe of probes) {
      // A host an admin made elsewhere, the caller's own host without its identity, and a free name: the same answer.
      const told = await Promise.all(['secret-gpu-07', 'mine', 'free-name'].map((hostname) => answer({ hostname, ...probe })));
      expect(told[0]!.status, JSON.stringify(probe)).toBeGreaterThanOrEqual(400);
      expect(told[1], JSON.stringify(probe)).toEqual(told[0]);
      expect(told[2], JSON.stringify(probe)).toEqual(told[0]);
    }
    // A held name at a free address, and a free name at a held address: one answer.
    const [name, address] = await Promise.all([answer({ hostname: 'secret-gpu-07', ip_address: '10.6.6.6' }), answer({ hostname: 'free-name', ip_address: '10.0.3.7' })]);
    expect(name).toEqual(address);
    expect(name).toMatchObject({ status: 409, told: { error: { code: 'hostname_taken' } } });
    // A group that does not exist and one outside the token's tree: one answer.
    const [missing, outside] = await Promise.all(['no-such-group', 'databases'].map((group) => answer({ hostname: 'x', ip_address: '10.5.5.5', group_id: group })));
    expect(JSON.stringify(missing).replaceAll('no-such-group', 'G')).toBe(JSON.stringify(outside).replaceAll('databases', 'G'));
    expect(api.commits()).toBe(commits);
    // A used-up token: used up for every name, the caller's own machine aside.
    const spent = await api.token({ max_uses: 1 });
    expect((await api.register(spent.token, { hostname: 'n-spent', ip_address: '10.0.0.2' })).status).toBe(201);
    for (const hostname of ['secret-gpu-07', 'mine', 'free-name']) {
      expect(await answer({ hostname, ip_address: '10.5.5.5' }, spent.token)).toMatchObject({ status: 403, told: { error: { code: 'token_exhausted' } } });
    }
  });

  it('lets a used-up ephemeral token re-enrol the machines it counts, not one another token enrolled', async () => {
    const api = await apiHarness();
    const asg = await api.token({ max_uses: 1, ephemeral: true, ttl_after_last_seen: '30s' });
    const plain = await api.token();
    expect((await api.register(asg.token, { hostname: 'asg-1', ip_address: '10.0.0.1', machine_id: 'a'.repeat(64) })).status).toBe(201);
    expect((await api.register(plain.token, { hostname: 'pet', ip_address: '10.0.0.2', machine_id: 'b'.repeat(64) })).status).toBe(201);
    expect(await api.register(asg.token, { hostname: 'pet', ip_address: '10.0.0.2', machine_id: 'b'.repeat(64) })).toMatchObject({ status: 403, json: { error: { code: 'token_exhausted' } } });
    expect((await api.get('/api/v1/targets/pet')).json.registered_by_token).toBe(plain.id);
    expect((await api.register(asg.token, { hostname: 'asg-1', ip_address: '10.0.0.1', machine_id: 'a'.repeat(64) })).status).toBe(200);
  });

  it('tells a node whether an address is scraped only for a write it would make: its exporters are checked first', async () => {
    const api = await apiHarness();
    const { token } = await api.token();
    await api.register(token, { hostname: 'other', ip_address: '10.0.0.9' });
    const credential = (await api.register(token, { hostname: 'me', ip_address: '10.0.0.1' })).json.node_credential;
    const commits = api.commits();
    const self = (body: unknown) => api.call('PUT', '/api/v1/nodes/self', { token: credential, body });
    for (const ip of ['10.0.0.9', '10.7.7.7']) {
      expect(await self({ ip_address: ip, exporters: [{ type: 'node_exporter' }, { type: 'nope' }] }), ip).toMatchObject({ status: 400, json: { error: { code: 'validation_failed' } } });
      expect(await self({ ip_address: ip, exporters: [{ type: 'node_exporter' }, { type: 'node_exporter', port: 9101 }] }), ip).toMatchObject({ status: 400, json: { error: { code: 'validation_failed' } } });
      const labels = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`l${i}`, 'v']));
      expect(await self({ ip_address: ip, labels, facts: { gpu_count: 1, gpu_model: 'a', gpu_vendor: 'b' } }), ip).toMatchObject({ status: 400, json: { error: { code: 'validation_failed' } } });
    }
    expect(api.commits()).toBe(commits);
    expect(await self({ ip_address: '10.0.0.9' })).toMatchObject({ status: 409, json: { error: { code: 'conflict' } } });
  });

  it('refuses a second host on an address already scraped', async () => {
    const api = await apiHarness();
    const { token } = await api.token();
    await api.register(token, { hostname: 'n1', ip_address: '10.0.0.1' });
    expect(await api.register(token, { hostname: 'n2', ip_address: '10.0.0.1' })).toMatchObject({ status: 409, json: { error: { code: 'hostname_taken', message: expect.stringContaining('host name or address') } } });
  });

  it('admits exactly max_uses new hosts under 200 concurrent registrations, with a consistent history', async () => {
    const api = await apiHarness();
    const { token, id } = await api.token({ max_uses: 50 });
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => api.register(token, { hostname: `node-${i}`, ip_address: `10.1.${i >> 8}.${i & 255}` })),
    );
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s === 201)).toHaveLength(50);
    expect(results.filter((r) => r.status !== 201).every((r) => r.json.error.code === 'token_exhausted')).toBe(true);
    expect((await api.get('/api/v1/targets')).json).toHaveLength(50);
    expect((await api.get(`/api/v1/bootstrap-tokens/${id}`)).json).toMatchObject({ uses: 50, remaining: 0 });
    // Every created host is named in a commit authored by the token.
    const messages = api.git('log', `--author=token ${id}`, '--format=%B');
    const named = [...messages.matchAll(/Register (node-\d+) with bootstrap token/g)].map((m) => m[1]);
    expect(new Set(named).size).toBe(50);
    expect(api.git('log', '--format=%an', '-n', '1', '--', 'tokens').trim()).toBe(`token ${id}`);
    expect(api.git('show', `HEAD:tokens/${id}.yaml`)).toMatch(/^uses: 50$/m);
    api.git('fsck', '--strict', '--no-progress');
  });
});

describe('groups and targets', () => {
  it('refuses to delete a group that still holds targets, children or tokens, saying what holds it', async () => {
    const api = await apiHarness();
    await api.post('/api/v1/targets', { hostname: 'db-01', ip_address: '10.0.3.1', primary_group_id: 'databases' });
    const held = await api.call('DELETE', '/api/v1/groups/databases');
    expect(held).toMatchObject({ status: 409, json: { error: { code: 'group_in_use', details: { targets: ['db-01'], children: [], tokens: [] } } } });
    expect((await api.call('DELETE', '/api/v1/groups/production')).json.error.details.children).toEqual(['production-critical', 'production-standard']);
    await api.call('DELETE', '/api/v1/targets/db-01');
    expect((await api.call('DELETE', '/api/v1/groups/databases')).json).toEqual({ deleted: 'databases' });
    expect((await api.get('/api/v1/groups/databases')).status).toBe(404);
  });

  it('creates nested groups, refuses duplicates, and edits with PUT and PATCH', async () => {
    const api = await apiHarness();
    const created = await api.post('/api/v1/groups', { name: 'Zone C', namespace: 'infrastructure', parent_id: 'datacenter-seoul', labels: { zone: 'c' } });
    expect(created.json).toMatchObject({ id: 'zone-c', parent_id: 'datacenter-seoul' });
    expect((await api.post('/api/v1/groups', { name: 'zone-c', namespace: 'infrastructure' })).status).toBe(409);
    expect((await api.post('/api/v1/groups', { name: 'x', namespace: 'logical', parent_id: 'datacenter-seoul' })).json.error.details).toContainEqual(expect.objectContaining({ field: 'parent_id' }));
    const patched = await api.call('PATCH', '/api/v1/groups/zone-c', { body: { description: 'third zone' } });
    expect(patched.json).toMatchObject({ description: 'third zone', labels: { zone: 'c' } });
    const replaced = await api.call('PUT', '/api/v1/groups/zone-c', { body: { name: 'zone-c', namespace: 'infrastructure' } });
    expect(replaced.json).toMatchObject({ parent_id: null, labels: {}, description: '' });
    expect((await api.get('/api/v1/groups?namespace=logical')).json.map((g: any) => g.id)).toEqual(['api-servers', 'databases', 'ml-inference', 'ml-training']);
  });

  it('keeps comments a pull-request author wrote when the API edits the file', async () => {
    const api = await apiHarness();
    await api.push({ 'groups/databases.yaml': '# owned by the DBA team\nid: databases\nname: databases  # display name\nnamespace: logical\n' }, 'Comment on databases');
    await api.call('PATCH', '/api/v1/groups/databases', { body: { labels: { role: 'database' } } });
    const text = api.show('groups/databases.yaml');
    expect(text).toContain('# owned by the DBA team');
    expect(text).toContain('# display name');
    expect(text).toContain('role: database');
  });

  it('writes label values the reader would take for numbers so that they read back as written, comments or not', async () => {
    const api = await apiHarness();
    await api.post('/api/v1/targets', { hostname: 'fw-01', ip_address: '10.0.0.7', primary_group_id: 'ml-training' });
    const path = 'targets/ml-training/fw-01.yaml';
    // A person's comment: from now on the API edits the document, keeping it where it can.
    await api.push({ [path]: `# racked by ops\n${api.show(path)}` }, 'Comment on fw-01');
    const labels = { fw: '0b11', sign: '+0b1', octal: '0o17', hex: '0x_1F', big: '1_000', yes: 'yes', nothing: '~', exp: '1e3', inf: '.inf', note: 'rack#4' };
    const patched = await api.call('PATCH', '/api/v1/targets/fw-01', { body: { labels } });
    expect(patched.status).toBe(200);
    expect(patched.json.labels).toEqual(labels);
    // What was committed reads back as what was answered, and a second identical edit changes nothing.
    expect((await api.get('/api/v1/targets/fw-01')).json.labels).toEqual(labels);
    const head = api.git('rev-parse', 'HEAD').trim();
    expect((await api.call('PATCH', '/api/v1/targets/fw-01', { body: { labels } })).status).toBe(200);
    expect(api.git('rev-parse', 'HEAD').trim()).toBe(head);
    // A later edit of a value that reads back as written keeps the comment.
    await api.push({ [path]: `# racked by ops\n${api.show(path).replace(/^# racked by ops\n/, '')}` }, 'Comment again');
    await api.call('PATCH', '/api/v1/targets/fw-01', { body: { labels: { ...labels, rack: 'r7' } } });
    expect(api.show(path)).toContain('# racked by ops');
    expect((await api.get('/api/v1/targets/fw-01')).json.labels).toEqual({ ...labels, rack: 'r7' });
  });

  it('creates, filters, moves between groups, edits and deletes targets', async () => {
    const api = await apiHarness();
    const created = await api.post('/api/v1/targets', {
      hostname: 'onsite-gpu-01',
      ip_address: '192.168.1.100',
      primary_group_id: 'ml-training',
      group_ids: ['seoul-zone-a'],
      exporters: [{ type: 'node_exporter', port: 9100, enabled: true }, { type: 'dcgm_exporter', port: 9400, enabled: true }],
      labels: { datacenter: 'seoul', rack: 'r1', gpu_model: 'A100', gpu_count: '8' },
    });
    expect(created.status).toBe(201);
    expect(created.json.effective_labels).toMatchObject({ zone: 'zone-a', role: 'ml-training', aami_groups: ',datacenter-seoul,ml-training,seoul-zone-a,' });
    expect((await api.post('/api/v1/targets', { hostname: 'onsite-gpu-01', ip_address: '192.168.1.101', primary_group_id: 'ml-training' })).status).toBe(409);
    expect((await api.get('/api/v1/targets?group=datacenter-seoul')).json).toHaveLength(1);
    expect((await api.get('/api/v1/targets?group=datacenter-tokyo')).json).toHaveLength(0);
    const moved = await api.call('PATCH', '/api/v1/targets/onsite-gpu-01', { body: { primary_group_id: 'ml-inference' } });
    expect(moved.json).toMatchObject({ primary_group_id: 'ml-inference', labels: { rack: 'r1' } });
    expect(api.git('show', '--name-status', '--format=', 'HEAD').trim()).toMatch(
      /^R\d+\ttargets\/ml-training\/onsite-gpu-01.yaml\ttargets\/ml-inference\/onsite-gpu-01.yaml$/,
    );
    expect((await api.call('PUT', '/api/v1/targets/onsite-gpu-01', { body: { ip_address: '192.168.1.100' } })).json.error.details).toContainEqual({ field: 'primary_group_id', message: 'is required' });
    expect((await api.get('/api/v1/targets/onsite-gpu-01/history')).json).toHaveLength(2);
    expect((await api.call('DELETE', '/api/v1/targets/onsite-gpu-01')).json).toEqual({ deleted: 'onsite-gpu-01' });
    expect((await api.get('/api/v1/targets/onsite-gpu-01')).status).toBe(404);
  });

  it('exposes its own metrics in the Prometheus text format', async () => {
    const api = await apiHarness();
    const { token } = await api.token();
    const { node_credential: credential } = (await api.register(token, { hostname: 'n1', ip_address: '10.0.0.1' })).json;
    await api.call('PUT', '/api/v1/nodes/self', { token: credential, body: { ip_address: '10.0.0.1' } });
    const metrics = await api.get('/metrics', { token: null });
    expect(metrics.headers.get('content-type')).toContain('text/plain');
    expect(metrics.text).toContain('aami_registrations_total{outcome="created"} 1');
    expect(metrics.text).toContain('aami_registrations_total{outcome="unchanged"} 1');
  });
});

describe('node calls', () => {
  it('answer only to the credential issued at registration, with the checks that apply', async () => {
    const api = await apiHarness();
    const { token } = await api.token();
    const { node_credential: credential } = (await api.register(token, { hostname: 'n1', ip_address: '10.0.0.1', facts: { gpu_count: 8, gpu_model: 'H100' } })).json;
    const checks = await api.get('/api/v1/checks/node', { token: credential });
    expect(checks.json.hostname).toBe('n1');
    expect(checks.json.checks.find((c: any) => c.name === 'gpu-count')).toMatchObject({ args: ['8'], timeout_seconds: 20, interval_seconds: 60, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    const script = await api.get('/api/v1/checks/node/gpu-count/script', { token: credential });
    expect(script.text).toContain('nvidia-smi');
    expect((await api.get('/api/v1/checks/node/not-a-check/script', { token: credential })).status).toBe(404);
    expect((await api.get('/api/v1/checks/node', { token: 'aami_node_wrong' })).json.error.code).toBe('unauthorized');
    expect((await api.get('/api/v1/checks/node', { token: token })).status).toBe(403);
    expect((await api.post('/api/v1/nodes/heartbeat', undefined, { token: credential })).json).toEqual({ hostname: 'n1', last_seen: '2026-11-26T00:00:00.000Z' });
    expect((await api.get('/api/v1/targets/n1')).json.last_seen).toBe('2026-11-26T00:00:00.000Z');
    expect((await api.get('/api/v1/checks')).json.map((c: any) => c.name)).toEqual(['disk-usage', 'gpu-count', 'mount', 'nvme-health']);
  });
});

describe('ids', () => {
  it('refuses to change a group id or a target hostname through PUT', async () => {
    const api = await apiHarness();
    expect((await api.call('PUT', '/api/v1/groups/databases', { body: { id: 'dbs', name: 'databases', namespace: 'logical' } })).json.error).toMatchObject({
      code: 'validation_failed',
      details: [{ field: 'id', message: 'must be "databases"' }],
    });
    await api.post('/api/v1/targets', { hostname: 'db-01', ip_address: '10.0.3.1', primary_group_id: 'databases' });
    expect((await api.call('PUT', '/api/v1/targets/db-01', { body: { hostname: 'db-02', ip_address: '10.0.3.1', primary_group_id: 'databases' } })).json.error).toMatchObject({
      code: 'validation_failed',
      details: [{ field: 'hostname', message: 'must be "db-01"' }],
    });
  });
});
