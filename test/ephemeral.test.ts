import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadDirectory } from '../src/cli/validate.js';
import { staleTargets } from '../src/inventory/nodes.js';
import { startServer } from '../src/server.js';
import { fixture, gitCli, onCleanup } from './helpers.js';
import { ADMIN, serverConfig, waitFor } from './node-helpers.js';

describe('ephemeral tokens', () => {
  it('count nodes registered at the same time, and the server removes silent ones in a commit of their own', async () => {
    let now = Date.parse('2026-11-26T00:00:00Z');
    const config = serverConfig({ clock: () => new Date(now), reapIntervalMs: 50 });
    const server = await startServer(config);
    onCleanup(() => server.close());
    const call = async (method: string, path: string, token: string, body?: unknown) => {
      const response = await fetch(`${server.url}${path}`, { method, headers: { authorization: `Bearer ${token}` }, body: body === undefined ? undefined : JSON.stringify(body) });
      return { status: response.status, json: (await response.json()) as any };
    };
    const created = await call('POST', '/api/v1/bootstrap-tokens', ADMIN, { name: 'asg', default_group_id: 'ml-training', max_uses: 2, expires_at: '2027-01-01T00:00:00Z', ephemeral: true, ttl_after_last_seen: '30s' });
    expect(created.json).toMatchObject({ ephemeral: true, ttl_after_last_seen: '30s', registered: 0 });
    const enrol = (host: string, ip: string) => call('POST', '/api/v1/bootstrap/register', created.json.token, { hostname: host, ip_address: ip });
    const a = await enrol('asg-a', '10.0.0.1');
    const b = await enrol('asg-b', '10.0.0.2');
    expect([a.status, b.status]).toEqual([201, 201]);
    expect(a.json.ephemeral).toBe(true);
    expect((await enrol('asg-c', '10.0.0.3')).json.error.code).toBe('token_exhausted');

    // One leaves cleanly: its place is free again.
    expect((await call('DELETE', '/api/v1/nodes/self', b.json.node_credential)).status).toBe(200);
    expect((await enrol('asg-c', '10.0.0.3')).status).toBe(201);

    const sd = () => JSON.parse(readFileSync(join(config.sdDir, 'node.json'), 'utf8')) as Array<{ labels: Record<string, string> }>;
    const hosts = () => sd().map((e) => e.labels.hostname).join(',');
    await waitFor('both nodes in the SD file', async () => hosts() === 'asg-a,asg-c');
    // asg-a keeps sending heartbeats; asg-c goes silent past the TTL.
    now += 20_000;
    await call('POST', '/api/v1/nodes/heartbeat', a.json.node_credential);
    now += 20_000;
    await waitFor('the silent node to leave the SD file', async () => hosts() === 'asg-a');
    const log = await call('GET', '/api/v1/targets', ADMIN);
    expect(log.json.map((t: any) => t.hostname)).toEqual(['asg-a']);
    expect((await call('GET', `/api/v1/bootstrap-tokens/${created.json.id}`, ADMIN)).json).toMatchObject({ registered: 1, remaining: 1, uses: 3 });
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toContain('aami_ephemeral_targets_removed_total 1');
    expect(gitCli(config.repo, 'log', '-1', '--format=%an|%s').trim()).toBe("aami ephemeral-reaper|Remove 1 ephemeral node silent past their token's TTL: asg-c");
  });

  it('counts a node silent only while the server could hear it: a restart after a downtime longer than the TTL removes nobody at once', async () => {
    let now = Date.parse('2026-11-26T00:00:00Z');
    // Read by nothing but the reaper while no request comes: a count of its looks.
    let reads = 0;
    const config = serverConfig({ clock: () => (reads++, new Date(now)), reapIntervalMs: 50 });
    const call = async (url: string, method: string, path: string, token: string, body?: unknown) => {
      const response = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}` }, body: body === undefined ? undefined : JSON.stringify(body) });
      return { status: response.status, json: (await response.json()) as any };
    };
    const first = await startServer(config);
    const created = await call(first.url, 'POST', '/api/v1/bootstrap-tokens', ADMIN, { name: 'asg', default_group_id: 'ml-training', max_uses: 5, expires_at: '2027-01-01T00:00:00Z', ephemeral: true, ttl_after_last_seen: '30s' });
    const nodes: Record<string, string> = {};
    for (const [host, ip] of [['asg-a', '10.0.0.1'], ['asg-b', '10.0.0.2']] as const) {
      nodes[host] = (await call(first.url, 'POST', '/api/v1/bootstrap/register', created.json.token, { hostname: host, ip_address: ip })).json.node_credential;
      expect((await call(first.url, 'POST', '/api/v1/nodes/heartbeat', nodes[host]!)).status).toBe(200);
    }
    await first.close();

    // Down for an hour (an upgrade, a reboot), while the nodes went on sending heartbeats nobody took.
    now += 3600_000;
    const server = await startServer(config);
    onCleanup(() => server.close());
    const hosts = async () => (await call(server.url, 'GET', '/api/v1/targets', ADMIN)).json.map((t: any) => t.hostname);
    const looked = reads;
    await waitFor('the reaper to look twice', async () => reads >= looked + 2);
    expect(await hosts()).toEqual(['asg-a', 'asg-b']);
    // Heard from again: asg-a sends heartbeats, asg-b stays silent past a TTL from the start.
    now += 20_000;
    expect((await call(server.url, 'POST', '/api/v1/nodes/heartbeat', nodes['asg-a']!)).status).toBe(200);
    now += 20_000;
    await waitFor('the silent node to be removed', async () => (await hosts()).length === 1);
    expect(await hosts()).toEqual(['asg-a']);
  });

  it('never removes a target of an ordinary token, but lists it as stale', async () => {
    let now = Date.parse('2026-11-26T00:00:00Z');
    const config = serverConfig({ clock: () => new Date(now), reapIntervalMs: 50, staleAfterMs: 60_000 });
    const server = await startServer(config);
    onCleanup(() => server.close());
    const headers = { authorization: `Bearer ${ADMIN}` };
    const token = (await (await fetch(`${server.url}/api/v1/bootstrap-tokens`, { method: 'POST', headers, body: JSON.stringify({ name: 't', default_group_id: 'ml-training', max_uses: 5, expires_at: '2027-01-01T00:00:00Z' }) })).json()) as any;
    const node = (await (await fetch(`${server.url}/api/v1/bootstrap/register`, { method: 'POST', headers: { authorization: `Bearer ${token.token}` }, body: JSON.stringify({ hostname: 'pet', ip_address: '10.0.0.1' }) })).json()) as any;
    await fetch(`${server.url}/api/v1/nodes/heartbeat`, { method: 'POST', headers: { authorization: `Bearer ${node.node_credential}` } });
    now += 3600_000;
    const healthOf = async (init?: RequestInit) => (await (await fetch(`${server.url}/api/v1/health`, init)).json()) as any;
    const health = await waitFor('health to list the stale node', async () => {
      const body = await healthOf({ headers });
      return body.nodes.stale_count === 1 && body;
    });
    expect(health.nodes.stale).toEqual(['pet']);
    expect(health.withheld).toBeNull();
    const metricsOf = async (init?: RequestInit) => (await fetch(`${server.url}/metrics`, init)).text();
    expect(await metricsOf({ headers })).toMatch(/^aami_node_last_seen_timestamp_seconds\{hostname="pet"\} \d+$/m);
    // Without a credential, or with a node's (which reads its own target only): the counts, no host names.
    for (const init of [undefined, { headers: { authorization: `Bearer ${node.node_credential}` } }]) {
      const told = await healthOf(init);
      expect(told.nodes).toEqual({ stale_after_seconds: 60, stale_count: 1, stale: [] });
      expect(told.withheld).toMatch(/name hosts/);
      const metrics = await metricsOf(init);
      expect(metrics).toContain('aami_stale_targets 1');
      expect(metrics).not.toContain('pet');
    }
    // A wrong secret is refused, as anywhere (health must not tell secrets apart); a probe's HEAD is not checked.
    const wrong = { headers: { authorization: 'Bearer aami_cred_wrongwro_wrongwrongwrongwrongwrongwrongwrongwrong' } };
    expect((await fetch(`${server.url}/api/v1/health`, wrong)).status).toBe(401);
    expect((await fetch(`${server.url}/metrics`, wrong)).status).toBe(401);
    expect((await fetch(`${server.url}/api/v1/health`, { ...wrong, method: 'HEAD' })).status).toBe(200);
    expect(((await (await fetch(`${server.url}/api/v1/targets`, { headers })).json()) as any[]).map((t) => t.hostname)).toEqual(['pet']);
  });

  it('lists as stale only the targets of the catalog whose last heartbeat is older than the threshold, by name', () => {
    const { catalog } = loadDirectory(fixture('basic'));
    const now = new Date('2026-11-26T01:00:00Z');
    const ago = (ms: number) => now.getTime() - ms;
    // api-01 on the threshold is not stale yet; gone-01 has no target (removed) any more.
    const heartbeats = new Map([['gpu-02', ago(60_001)], ['gpu-01', ago(3600_000)], ['api-01', ago(60_000)], ['gone-01', ago(3600_000)]]);
    expect(staleTargets(catalog, heartbeats.entries(), now, 60_000)).toEqual(['gpu-01', 'gpu-02']);
    expect(staleTargets(catalog, [], now, 60_000)).toEqual([]);
  });
});
