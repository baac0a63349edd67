import * as fs from 'node:fs';
import { join } from 'node:path';
import * as net from 'node:net';
import { serve, type HttpBindings } from '@hono/node-server';
import { Hono } from 'hono';
import { describe, expect, it, vi } from 'vitest';
import { jsonBytes } from '../src/api/conventions.js';
import { faultMessageOf, onError } from '../src/api/errors.js';
import { AamiError } from '../src/errors.js';
import { silentLogger } from '../src/log.js';
import { TargetList } from '../src/api/target-list.js';
import { servedPath } from '../src/catalog/place.js';
import { targetView } from '../src/inventory/views.js';
import { Heartbeats } from '../src/nodes/heartbeats.js';
import { apiHarness } from './api-helpers.js';
import { onCleanup, targetYaml, tempDir } from './helpers.js';

type Api = Awaited<ReturnType<typeof apiHarness>>;

/** What GET /api/v1/targets must answer: every target's view, rendered now, by host name. */
function expectedList(api: Api, keep: (view: ReturnType<typeof targetView>) => boolean = () => true): string {
  const catalog = api.live.snapshot().catalog;
  const views = [...catalog.targets.values()].map((t) => targetView(catalog, t, api.heartbeats.lastSeen(t.hostname))).filter(keep);
  return JSON.stringify(views.sort((a, b) => (a.hostname < b.hostname ? -1 : 1)));
}

/** Every page of a paged list, following Link rel="next"; the pages' targets in order. */
async function walk(api: Api, first: string): Promise<{ targets: any[]; pages: number }> {
  const targets: any[] = [];
  let path: string | undefined = first;
  let pages = 0;
  while (path && pages < 10_000) {
    const page = await api.get(path);
    expect(page.status, path).toBe(200);
    targets.push(...page.json);
    pages++;
    const link = page.headers.get('link');
    path = link ? /^<([^>]+)>; rel="next"$/.exec(link)![1] : undefined;
  }
  return { targets, pages };
}

describe('query parameters', () => {
  it('answers an unknown, repeated or malformed parameter with 400 naming it, on every route', async () => {
    const api = await apiHarness();
    const unknown = await api.get('/api/v1/targets?lable=rack=r1&hostname=a');
    expect(unknown.status).toBe(400);
    expect(unknown.json.error).toMatchObject({ code: 'validation_failed', details: [{ field: 'lable', message: 'is not a query parameter of this route' }] });
    expect(unknown.json.error.message).toContain('"lable"');
    expect(unknown.json.error.message).toContain('it takes hostname, group, label, limit, cursor');
    for (const path of ['/api/v1/health?verbose=1', '/api/v1/groups?ns=logical', '/api/v1/sd/prometheus?format=yaml', '/metrics?x=1', '/bootstrap.sh?v=2']) {
      const answer = await api.get(path);
      expect(answer.status, path).toBe(400);
      expect(answer.json.error.details[0].field, path).toBe(new URL(path, 'http://x').searchParams.keys().next().value);
    }
    // A write with a query string is refused before anything is committed.
    const before = api.commits();
    expect((await api.post('/api/v1/groups?dry_run=true', { name: 'x', namespace: 'logical' })).status).toBe(400);
    expect(api.commits()).toBe(before);

    expect((await api.get('/api/v1/targets?hostname=a&hostname=b')).json.error).toMatchObject({ code: 'validation_failed', details: [{ field: 'hostname', message: 'may be given once' }] });
    for (const [query, field] of [
      ['limit=0', 'limit'],
      ['limit=10001', 'limit'],
      ['limit=ten', 'limit'],
      ['cursor=%2F%2F', 'cursor'],
      ['cursor=bm90IGEgaG9zdA', 'cursor'],
      ['label=1rack%3Dr1', 'label[0]'],
      ['label=rack%3Dr1&label=%3D%3D', 'label[1]'],
      ['group=Not_A_Slug', 'group'],
      ['hostname=a%2Fb', 'hostname'],
    ]) {
      const answer = await api.get(`/api/v1/targets?${query}`);
      expect(answer.status, query).toBe(400);
      expect(answer.json.error.details.map((d: { field: string }) => d.field), query).toEqual([field]);
    }
    expect((await api.get('/api/v1/sd/prometheus?job=../etc')).status).toBe(400);
  });
});

describe('methods and Location', () => {
  it('answers a known path with a wrong method 405 and Allow, an unknown path 404', async () => {
    const api = await apiHarness();
    for (const [method, path, allow] of [
      ['DELETE', '/api/v1/health', 'GET, HEAD'],
      ['PUT', '/api/v1/groups', 'GET, HEAD, POST'],
      ['POST', '/api/v1/targets/gpu-1', 'DELETE, GET, HEAD, PATCH, PUT'],
      ['PATCH', '/api/v1/bootstrap-tokens/abc/revoke', 'POST'],
      ['GET', '/api/v1/bootstrap/register', 'POST'],
      ['POST', '/metrics', 'GET, HEAD'],
    ]) {
      const answer = await api.call(method!, path!, { body: method === 'GET' ? undefined : {} });
      expect(answer.status, `${method} ${path}`).toBe(405);
      expect(answer.headers.get('allow'), `${method} ${path}`).toBe(allow);
      expect(answer.json.error).toMatchObject({ code: 'method_not_allowed', details: { allowed: allow!.split(', ') } });
    }
    expect((await api.get('/api/v1/no-such-thing')).json.error.code).toBe('not_found');
    expect((await api.call('DELETE', '/api/v1/targets/a/b/c')).status).toBe(404);
  });

  it('gives every 201 a Location that reads back what was made', async () => {
    const api = await apiHarness();
    const made = [
      await api.post('/api/v1/groups', { name: 'gpu-fleet', namespace: 'logical' }),
      await api.post('/api/v1/targets', { hostname: 'GPU-01', ip_address: '10.0.0.1', primary_group_id: 'gpu-fleet' }),
      await api.post('/api/v1/bootstrap-tokens', { name: 't', default_group_id: 'gpu-fleet', max_uses: 2, expires_at: '2027-01-01T00:00:00Z' }),
      await api.post('/api/v1/credentials', { name: 'ci-bot', role: 'reader' }),
    ];
    const machine = { hostname: 'gpu-02', ip_address: '10.0.0.2', machine_id: 'e'.repeat(64) };
    made.push(await api.register(made[2]!.json.token, machine));
    expect(made.map((m) => m.headers.get('location'))).toEqual([
      '/api/v1/groups/gpu-fleet',
      '/api/v1/targets/gpu-01',
      `/api/v1/bootstrap-tokens/${made[2]!.json.id}`,
      `/api/v1/credentials/${made[3]!.json.id}`,
      '/api/v1/targets/gpu-02',
    ]);
    for (const m of made) {
      expect(m.status).toBe(201);
      const read = await api.get(m.headers.get('location')!);
      expect(read.status).toBe(200);
      expect(read.json.id).toBe(m.json.id ?? m.json.target.id);
    }
    // Registering an enrolled host again is an update: 200, no Location.
    const again = await api.register(made[2]!.json.token, machine);
    expect(again.status).toBe(200);
    expect(again.headers.get('location')).toBeNull();
  });
});

describe('GET /api/v1/targets: paging and label selectors', () => {
  async function fleet() {
    const api = await apiHarness();
    await api.post('/api/v1/groups', { name: 'gpu-fleet', namespace: 'logical', parent_id: 'ml-training', labels: { tier: 'gpu' } });
    const files: Record<string, string> = {};
    for (let i = 0; i < 45; i++) {
      const host = `node-${String(i).padStart(2, '0')}`;
      const group = i % 3 ? 'ml-training' : 'gpu-fleet';
      files[`targets/${group}/${host}.yaml`] = targetYaml(host, `10.1.0.${i + 1}`, group, `labels: {rack: r${i % 4}${i % 5 ? '' : ', spare: "yes"'}}\n`);
    }
    await api.push(files);
    return api;
  }

  it('keeps the plain array by default, and pages with limit and a Link to the next page', async () => {
    const api = await fleet();
    const all = await api.get('/api/v1/targets');
    expect(all.json).toHaveLength(45);
    expect(all.headers.get('link')).toBeNull();
    expect(all.text).toBe(expectedList(api));

    const { targets, pages } = await walk(api, '/api/v1/targets?limit=10');
    expect(pages).toBe(5);
    expect(JSON.stringify(targets)).toBe(all.text);
    const first = await api.get('/api/v1/targets?limit=10');
    expect(first.json).toHaveLength(10);
    expect(first.headers.get('link')).toMatch(/^<\/api\/v1\/targets\?limit=10&cursor=[\w-]+>; rel="next"$/);
    // exactly one page: no Link
    expect((await api.get('/api/v1/targets?limit=45')).headers.get('link')).toBeNull();

    // A cursor is a place in host name order: targets added before it are not served again, those after it are.
    const cursor = /cursor=([\w-]+)/.exec(first.headers.get('link')!)![1];
    await api.post('/api/v1/targets', { hostname: 'node-00a', ip_address: '10.2.0.1', primary_group_id: 'ml-training' });
    await api.post('/api/v1/targets', { hostname: 'node-44a', ip_address: '10.2.0.2', primary_group_id: 'ml-training' });
    const rest = await walk(api, `/api/v1/targets?limit=7&cursor=${cursor}`);
    expect(rest.targets.map((t) => t.hostname)).toEqual([...Array.from({ length: 35 }, (_, i) => `node-${i + 10}`), 'node-44a']);
  });

  it('selects by label: k=v, k!=v, k, !k, repeatable, against the effective labels, with the other filters and pages', async () => {
    const api = await fleet();
    const hosts = async (query: string) => (await walk(api, `/api/v1/targets?${query}`)).targets.map((t) => t.hostname);
    const expected = (keep: (labels: Record<string, string>) => boolean) => JSON.parse(expectedList(api, (v) => keep(v.effective_labels))).map((t: { hostname: string }) => t.hostname);

    expect(await hosts('label=rack%3Dr1')).toEqual(expected((l) => l.rack === 'r1'));
    expect(await hosts('label=rack!%3Dr1')).toEqual(expected((l) => l.rack !== 'r1'));
    expect(await hosts('label=spare')).toEqual(expected((l) => 'spare' in l));
    expect(await hosts('label=!spare&label=rack%3Dr0')).toEqual(expected((l) => !('spare' in l) && l.rack === 'r0'));
    // a group's label (tier, from gpu-fleet), a parent's (role, from ml-training) and aami's own
    expect(await hosts('label=tier%3Dgpu')).toEqual(expected((l) => l.aami_group === 'gpu-fleet'));
    expect((await hosts('label=role%3Dml-training')).length).toBe(45);
    expect(await hosts('label=aami_group%3Dgpu-fleet&limit=4')).toEqual(await hosts('group=gpu-fleet'));
    expect(await hosts('group=ml-training&label=tier%3Dgpu&label=rack%3Dr2&limit=1')).toEqual(expected((l) => l.tier === 'gpu' && l.rack === 'r2'));
    expect(await hosts('hostname=NODE-07&label=rack%3Dr3')).toEqual(['node-07']);
    // A host name with a cursor: the host if it comes after the cursor.
    const cursorAt = (hostname: string) => Buffer.from(hostname).toString('base64url');
    expect(await hosts(`hostname=node-07&cursor=${cursorAt('node-06')}`)).toEqual(['node-07']);
    expect(await hosts(`hostname=node-07&cursor=${cursorAt('node-07')}`)).toEqual([]);
    expect(await hosts('hostname=node-99')).toEqual([]);
    expect(await hosts('label=rack%3Dr9')).toEqual([]);
    expect((await api.get('/api/v1/targets?label=rack%3Dr9')).text).toBe('[]');
    // a value may hold "=" and anything printable
    await api.call('PATCH', '/api/v1/targets/node-01', { body: { labels: { url: 'a=b c' } } });
    expect(await hosts('label=url%3Da%3Db%20c')).toEqual(['node-01']);
    // The admin's label wins over its group's; aami's own host name label; a name like "constructor" is a name like any other.
    await api.call('PATCH', '/api/v1/targets/node-03', { body: { labels: { tier: 'cpu' } } });
    expect(await hosts('label=tier%3Dcpu')).toEqual(['node-03']);
    expect(await hosts('label=tier%3Dgpu')).toEqual(expected((l) => l.tier === 'gpu'));
    expect((await hosts('label=tier%3Dgpu')).length).toBe(14);
    expect(await hosts('label=hostname%3Dnode-05')).toEqual(['node-05']);
    expect((await hosts('label=!constructor&label=!__proto__')).length).toBe(45);
    expect(await hosts('label=constructor')).toEqual([]);
  });

  it('shows a node credential its own target only, whatever it asks for', async () => {
    const api = await fleet();
    const { token } = await api.token();
    const { node_credential: node } = (await api.register(token, { hostname: 'own-node', ip_address: '10.3.0.1' })).json;
    for (const query of ['', '?limit=1', '?label=rack', '?hostname=node-01', '?group=ml-training', '?hostname=own-node', '?hostname=OWN-NODE&limit=1', '?hostname=own-node&label=rack']) {
      const answer = await api.get(`/api/v1/targets${query}`, { token: node });
      expect(answer.status, query).toBe(200);
      expect(answer.json.map((t: { hostname: string }) => t.hostname), query).toEqual(query.includes('rack') || query.includes('node-01') ? [] : ['own-node']);
      expect(answer.headers.get('etag')).toBeNull();
    }
  });
});

describe('cached reads', () => {
  it('serves the unchanged list as the same bytes with an ETag; 304 until a write or a heartbeat changes it', async () => {
    const api = await apiHarness();
    const { token } = await api.token();
    const { node_credential: node } = (await api.register(token, { hostname: 'n1', ip_address: '10.0.0.1' })).json;
    const first = await api.get('/api/v1/targets');
    const etag = first.headers.get('etag')!;
    expect(etag).toMatch(/^"[\w-]+\.\d+"$/);
    expect(first.headers.get('cache-control')).toBe('no-cache');
    expect(first.text).toBe(expectedList(api));
    expect(await api.get('/api/v1/targets', { headers: { 'if-none-match': etag } })).toMatchObject({ status: 304, text: '' });
    expect((await api.get('/api/v1/targets', { headers: { 'if-none-match': `"other", W/${etag}` } })).status).toBe(304);
    expect((await api.get('/api/v1/targets', { headers: { 'if-none-match': '"other"' } })).status).toBe(200);

    // A heartbeat changes last_seen: a new ETag and the new time, no commit needed.
    api.advance(60_000);
    await api.post('/api/v1/nodes/heartbeat', undefined, { token: node });
    const seen = await api.get('/api/v1/targets', { headers: { 'if-none-match': etag } });
    expect(seen.status).toBe(200);
    expect(seen.json[0].last_seen).toBe('2026-11-26T00:01:00.000Z');
    expect(seen.headers.get('etag')).not.toBe(etag);
    expect(seen.text).toBe(expectedList(api));

    // A write that changes no target (a token's use count) keeps the list and its ETag.
    await api.token();
    expect((await api.get('/api/v1/targets', { headers: { 'if-none-match': seen.headers.get('etag')! } })).status).toBe(304);
    // A target's change does not.
    await api.call('PATCH', '/api/v1/targets/n1', { body: { labels: { rack: 'r2' } } });
    const changed = await api.get('/api/v1/targets', { headers: { 'if-none-match': seen.headers.get('etag')! } });
    expect(changed.status).toBe(200);
    expect(changed.json[0].labels).toEqual({ rack: 'r2' });
  });

  it('serves http_sd with an ETag of its bytes, for every job and for one', async () => {
    const api = await apiHarness();
    await api.post('/api/v1/targets', { hostname: 'gpu-01', ip_address: '10.0.0.1', primary_group_id: 'ml-training', exporters: [{ type: 'node_exporter' }, { type: 'dcgm_exporter' }] });
    await api.nextCompile();
    for (const path of ['/api/v1/sd/prometheus', '/api/v1/sd/prometheus?job=dcgm']) {
      const sd = await api.get(path);
      const etag = sd.headers.get('etag')!;
      expect(etag, path).toMatch(/^"[\w-]{27}"$/);
      expect(await api.get(path, { headers: { 'if-none-match': etag } })).toMatchObject({ status: 304, text: '' });
    }
    const before = await api.get('/api/v1/sd/prometheus');
    await api.post('/api/v1/targets', { hostname: 'gpu-02', ip_address: '10.0.0.2', primary_group_id: 'ml-training' });
    await api.nextCompile();
    const after = await api.get('/api/v1/sd/prometheus', { headers: { 'if-none-match': before.headers.get('etag')! } });
    expect(after.status).toBe(200);
    expect(after.json.map((e: { targets: string[] }) => e.targets[0]).sort()).toEqual(['10.0.0.1:9100', '10.0.0.1:9400', '10.0.0.2:9100']);
    // the job's file is unchanged (gpu-02 has no dcgm): same ETag
    expect((await api.get('/api/v1/sd/prometheus?job=dcgm', { headers: { 'if-none-match': (await api.get('/api/v1/sd/prometheus?job=dcgm')).headers.get('etag')! } })).status).toBe(304);
  });

  it('stays equal to a fresh render through adds, edits, moves, deletes, group and token changes and heartbeats (400 targets, seeded random steps)', { timeout: 120_000 }, async () => {
    const api = await apiHarness();
    const { token, id: tokenId } = await api.token({ max_uses: 100 });
    const nodes: string[] = [];
    for (let i = 0; i < 4; i++) nodes.push((await api.register(token, { hostname: `enrolled-${i}`, ip_address: `10.9.0.${i + 1}` })).json.node_credential);
    let seed = 42;
    const random = (n: number) => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31), seed % n);
    // Beside the server's list (every chunk kept as it is), one of chunks of 2 to 4 entries
    // (splits and emptied chunks at every step), every chunk deflated, and one of 3 to 6
    // whose budget ~150 targets' JSON fit: kept as they are while few, then deflated as they
    // change once more are there (both kinds side by side). The first renders a page's one
    // match of a chunk on its own and inflates the chunk for two; the others render them all.
    const small = new TargetList(api.heartbeats, 2, 0, 1);
    const mixed = new TargetList(api.heartbeats, 3, 150_000);
    const kinds = new Set<string>();
    let checks = 0;
    const check = async (step: string) => {
      const expected = expectedList(api);
      expect((await api.get('/api/v1/targets')).text, step).toBe(expected);
      const rack = (v: ReturnType<typeof targetView>) => v.effective_labels.rack === 'r1';
      // Through a group, and by a label a group gives (the groups' labels are kept while the groups stay the same).
      const role = (v: ReturnType<typeof targetView>) => v.effective_labels.aami_groups!.includes(',ml-training,') && v.effective_labels.role !== 'ml-0';
      const byRole = { group: 'ml-training', label: [{ name: 'role', op: '!=' as const, value: 'ml-0' }] };
      // Every other time the pages come before the whole list: chunks still open since the change (or never joined since the groups changed) are paged from.
      const pagesFirst = checks++ % 2 === 1;
      for (const [name, list] of Object.entries({ small, mixed })) {
        list.sync(api.live.snapshot());
        if (pagesFirst) expect(list.select({ label: [{ name: 'rack', op: '=', value: 'r1' }] }).json.toString(), `${step}, ${name}, pages first`).toBe(expectedList(api, rack));
        // A part is good until the next is asked for (each is copied here as it comes).
        expect(Buffer.concat(Array.from(list.all().parts.read(), (part) => Buffer.from(part))).toString(), `${step}, ${name}`).toBe(expected);
        expect(list.select({ label: [{ name: 'rack', op: '=', value: 'r1' }] }).json.toString(), `${step}, ${name}`).toBe(expectedList(api, rack));
        expect(list.select(byRole).json.toString(), `${step}, ${name}, by role`).toBe(expectedList(api, role));
        const pages: unknown[] = [];
        for (let cursor: string | undefined, n = 0; n < 1000; n++) {
          const page = list.select({ limit: 7, cursor });
          pages.push(...JSON.parse(page.json.toString()));
          if ((cursor = page.next) === undefined) break;
        }
        expect(JSON.stringify(pages), `${step}, ${name}, pages of 7`).toBe(expected);
        // What is kept as it is, counted right: within the budget, and the sum of the chunks kept so.
        const { chunks, plainBytes, plainBudget } = list as unknown as { chunks: Array<{ joined?: { deflated: boolean; length: number } }>; plainBytes: number; plainBudget: number };
        expect(plainBytes, `${step}, ${name}`).toBe(chunks.reduce((sum, chunk) => sum + (chunk.joined && !chunk.joined.deflated ? chunk.joined.length : 0), 0));
        expect(plainBytes).toBeLessThanOrEqual(plainBudget);
        if (name === 'mixed') kinds.add([...new Set(chunks.map((chunk) => (chunk.joined!.deflated ? 'deflated' : 'plain')))].sort().join(' and '));
      }
      const limit = 20 + random(150);
      expect(JSON.stringify((await walk(api, `/api/v1/targets?limit=${limit}`)).targets), `${step}, pages of ${limit}`).toBe(expected);
      expect((await api.get('/api/v1/targets?label=rack%3Dr1')).text, step).toBe(expectedList(api, rack));
    };
    await check('start');
    // Bulk pushes fill chunks past their split size, in random order.
    const hosts = Array.from({ length: 400 }, (_, i) => `host-${String((i * 7919) % 400).padStart(3, '0')}`);
    for (let batch = 0; batch < 4; batch++) {
      const files: Record<string, string> = {};
      for (const host of hosts.slice(batch * 100, batch * 100 + 100)) files[`targets/ml-training/${host}.yaml`] = targetYaml(host, `10.5.${Number(host.slice(5)) >> 8}.${Number(host.slice(5)) & 255}`, 'ml-training', `labels: {rack: r${random(3)}}\n`);
      await api.push(files, `batch ${batch}`);
      await check(`batch ${batch}`);
    }
    const live = new Set(hosts);
    for (let step = 0; step < 40; step++) {
      const host = [...live][random(live.size)]!;
      const what = random(7);
      if (what === 0) await api.call('PATCH', `/api/v1/targets/${host}`, { body: { labels: { rack: `r${random(3)}` } } });
      else if (what === 1) await api.call('PATCH', `/api/v1/targets/${host}`, { body: { primary_group_id: random(2) ? 'ml-inference' : 'ml-training' } });
      else if (what === 2) {
        await api.call('DELETE', `/api/v1/targets/${host}`);
        live.delete(host);
      } else if (what === 3) {
        // a run of deletions empties whole chunks
        const sorted = [...live].sort();
        const start = random(Math.max(1, sorted.length - 100));
        const run = sorted.slice(start, start + 1 + random(50));
        await api.push(Object.fromEntries(run.map((h) => [servedPath(api.live.snapshot().catalog, h)!, null])), 'delete a run');
        for (const h of run) live.delete(h);
      } else if (what === 4) await api.call('PATCH', '/api/v1/groups/ml-training', { body: { labels: { role: `ml-${random(9)}` } } });
      else if (what === 5) {
        api.advance(1000);
        await api.post('/api/v1/nodes/heartbeat', undefined, { token: nodes[random(nodes.length)] });
      } else {
        // The enrolling token turns ephemeral by a pull request: the view's ephemeral flag follows.
        const path = `tokens/${tokenId}.yaml`;
        const text = api.show(path).replace(/^ephemeral: .*\n|^ttl_after_last_seen: .*\n/gm, '');
        await api.push({ [path]: random(2) ? `${text}ephemeral: true\nttl_after_last_seen: 10m\n` : text }, 'token ephemeral flip');
      }
      await check(`step ${step} (${what})`);
    }
    expect(live.size).toBeGreaterThan(0);
    expect([...kinds].sort()).toEqual(['deflated', 'deflated and plain', 'plain']);
  });
});

/** A Hono app on a real socket (node-server, as the server runs), stopped when the test ends. */
async function onSocket(app: Hono): Promise<string> {
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise((resolve) => server.once('listening', resolve));
  onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}

/** A body read slowly (a pause every few reads), so the server's writes wait on the socket: all of it. */
async function readSlowly(response: Response): Promise<Buffer> {
  const reader = response.body!.getReader();
  const parts: Buffer[] = [];
  for (let n = 0; ; n++) {
    const { done, value } = await reader.read();
    if (done) return Buffer.concat(parts);
    parts.push(Buffer.from(value));
    if (n % 16 === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/**
 * HTTP answers (each with a Content-Length) read from a raw connection, one for each of
 * `partSizes`, pausing `pauseMs` after each piece the socket gives (up to 64 KB): their
 * statuses, body lengths, and how many body bytes are not what `reused` makes (byte o of
 * answer i is floor(o / partSizes[i]) % 256). Rejects if the connection closes first.
 */
function readAnswers(socket: net.Socket, partSizes: number[], pauseMs: number): Promise<Array<{ status: number; body: number; wrong: number }>> {
  const answers: Array<{ status: number; body: number; wrong: number }> = [];
  let head = Buffer.alloc(0);
  let left = -1; // bytes of the body still to come; -1 while a head is read
  return new Promise((resolve, reject) => {
    const finish = (error?: Error) => {
      socket.off('data', data);
      socket.off('close', closed);
      socket.pause(); // what comes next waits for the next reader
      if (error) reject(error);
      else resolve(answers);
    };
    const closed = () => finish(new Error(`the connection closed after ${answers.length} answers`));
    const data = (piece: Buffer) => {
      let at = 0;
      while (at < piece.length) {
        if (left < 0) {
          head = Buffer.concat([head, piece.subarray(at)]);
          const end = head.indexOf('\r\n\r\n');
          if (end < 0) break;
          const text = head.subarray(0, end).toString();
          at = piece.length - (head.length - end - 4);
          head = Buffer.alloc(0);
          const length = /^content-length: (\d+)$/im.exec(text)?.[1];
          if (length === undefined) return finish(new Error(`an answer without a length: ${text}`));
          answers.push({ status: Number(text.split(' ')[1]), body: 0, wrong: 0 });
          left = Number(length);
        }
        const answer = answers.at(-1)!;
        const size = partSizes[answers.length - 1]!;
        const take = Math.min(left, piece.length - at);
        for (let i = 0; i < take; i++) if (piece[at + i] !== Math.floor((answer.body + i) / size) % 256) answer.wrong++;
        answer.body += take;
        left -= take;
        at += take;
        if (left > 0) continue;
        left = -1;
        if (answers.length === partSizes.length) return finish();
      }
      if (pauseMs) {
        socket.pause();
        setTimeout(() => socket.resume(), pauseMs);
      }
    };
    socket.on('data', data);
    socket.once('close', closed);
    socket.resume();
  });
}

describe('streamed answers over a real socket', () => {
  /** `count` parts of `size` bytes, all written into one buffer: part i is byte i % 256 throughout. */
  const reused = (count: number, size: number, made: { parts: number } = { parts: 0 }) => {
    const buffer = Buffer.alloc(size);
    return {
      byteLength: count * size,
      *read() {
        for (let i = 0; i < count; i++) {
          made.parts++;
          yield buffer.fill(i % 256);
        }
      },
    };
  };

  it('writes each part once the one before is flushed: parts that share one buffer arrive whole', { timeout: 60_000 }, async () => {
    // Parts past the socket's high-water mark, and parts under it (a write that returns true may not be flushed yet).
    for (const [count, size] of [[24, 1 << 20], [2000, 12_000]] as const) {
      const app = new Hono().get('/big', (c) => jsonBytes(c, reused(count, size)));
      const response = await fetch(`${await onSocket(app)}/big`);
      expect(response.headers.get('content-length')).toBe(String(count * size));
      const body = await readSlowly(response);
      expect(body.length).toBe(count * size);
      for (let i = 0; i < count; i++) expect(body.subarray(i * size, (i + 1) * size).every((byte) => byte === i % 256), `part ${i} of ${size} bytes`).toBe(true);
    }
  });

  it('stops making parts when the client hangs up, and ends the answer', { timeout: 60_000 }, async () => {
    const made = { parts: 0 };
    let ended!: () => void;
    const answered = new Promise<void>((resolve) => (ended = resolve));
    const app = new Hono()
      .use(async (_c, next) => {
        await next();
        ended();
      })
      .get('/big', (c) => jsonBytes(c, reused(512, 1 << 20, made)));
    const { port } = new URL(await onSocket(app));
    const socket = net.connect(Number(port), '127.0.0.1', () => socket.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n'));
    socket.on('error', () => undefined);
    await new Promise((resolve) => socket.once('data', resolve));
    socket.destroy();
    await answered;
    expect(made.parts).toBeLessThan(512);
  });

  it('ends the connection of a client that takes nothing for the stall time, gives its buffers back and says why', { timeout: 30_000 }, async () => {
    const made = { parts: 0 };
    let released = false;
    let why: string | undefined;
    let finished: boolean | undefined;
    let ended!: () => void;
    const answered = new Promise<void>((resolve) => (ended = resolve));
    const parts = reused(64, 1 << 20, made);
    const app = new Hono()
      .use(async (c, next) => {
        await next();
        why = faultMessageOf(c);
        finished = (c.env as HttpBindings).outgoing.writableFinished;
        ended();
      })
      .get('/big', (c) =>
        jsonBytes(c, {
          byteLength: parts.byteLength,
          *read() {
            try {
              yield* parts.read();
            } finally {
              released = true;
            }
          },
        }, {}, 1000),
      );
    // A client that sends its request and reads nothing: the server's writes fill the socket's buffers and wait.
    const { port } = new URL(await onSocket(app));
    const socket = net.connect(Number(port), '127.0.0.1', () => socket.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n'));
    socket.on('error', () => undefined);
    onCleanup(() => void socket.destroy());
    await answered;
    expect(released).toBe(true);
    expect(made.parts).toBeLessThan(64);
    expect(why).toBe('the client took less than 256 KB in 1 s: its connection was ended');
    expect(finished).toBe(false); // cut short, not sent
  });

  it('never cuts off a client that keeps reading, however long the answer takes: parts past the stall time, an answer queued behind it, the connection kept', { timeout: 60_000 }, async () => {
    const stallMs = 1500;
    const app = new Hono()
      // Parts of 8 MB: each takes this client ~2.5 s, longer than the stall time (a slice of it, ~80 ms, does not).
      .get('/slow', (c) => jsonBytes(c, reused(2, 8 << 20), {}, stallMs))
      .get('/small', (c) => jsonBytes(c, reused(2, 1000), {}, stallMs));
    const { port } = new URL(await onSocket(app));
    const socket = net.connect(Number(port), '127.0.0.1');
    socket.on('error', () => undefined);
    onCleanup(() => void socket.destroy());
    await new Promise((resolve) => socket.once('connect', resolve));
    // Two requests at once (pipelined): the second answer waits for the first, longer than the stall time, and is sent whole after it.
    socket.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /small HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(await readAnswers(socket, [8 << 20, 1000], 20)).toEqual([{ status: 200, body: 16 << 20, wrong: 0 }, { status: 200, body: 2000, wrong: 0 }]);
    // Nothing left behind to end the connection later: it serves the next request after more than the stall time.
    await new Promise((resolve) => setTimeout(resolve, stallMs + 500));
    socket.write('GET /small HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(await readAnswers(socket, [1000], 0)).toEqual([{ status: 200, body: 2000, wrong: 0 }]);
  });

  it('makes no part of a streamed answer queued behind another the client does not take, and ends it when the client goes', { timeout: 30_000 }, async () => {
    const [first, queued] = [{ parts: 0 }, { parts: 0 }];
    let started!: () => void;
    const handling = new Promise<void>((resolve) => (started = resolve));
    let ended!: () => void;
    const answered = new Promise<void>((resolve) => (ended = resolve));
    const app = new Hono()
      .use('/queued', async (_c, next) => {
        started();
        await next();
        ended();
      })
      .get('/first', (c) => jsonBytes(c, reused(64, 1 << 20, first)))
      .get('/queued', (c) => jsonBytes(c, reused(4, 1 << 20, queued)));
    const { port } = new URL(await onSocket(app));
    const socket = net.connect(Number(port), '127.0.0.1', () => socket.write('GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /queued HTTP/1.1\r\nHost: x\r\n\r\n'));
    socket.on('error', () => undefined);
    onCleanup(() => void socket.destroy());
    // The second handler runs while the first answer waits on a client that reads nothing: it waits for the connection, holding no buffer.
    await handling;
    await new Promise((resolve) => setImmediate(resolve));
    expect(first.parts).toBeGreaterThan(0);
    expect(queued.parts).toBe(0);
    socket.destroy();
    await answered;
    expect(queued.parts).toBe(0);
  });

  it('ends every answer when a client that sent requests one after another (pipelined) hangs up, with one listener on its connection', { timeout: 60_000 }, async () => {
    const made = { parts: 0 };
    let ended = 0;
    let allEnded!: () => void;
    const everyEnded = new Promise<void>((resolve) => (allEnded = resolve));
    const warnings: string[] = [];
    const warned = (warning: Error) => warnings.push(warning.name);
    process.on('warning', warned);
    onCleanup(() => void process.off('warning', warned));
    const app = new Hono()
      .use(async (_c, next) => {
        await next();
        if (++ended === 12) allEnded();
      })
      .get('/big', (c) => jsonBytes(c, reused(512, 1 << 20, made)));
    const { port } = new URL(await onSocket(app));
    const socket = net.connect(Number(port), '127.0.0.1', () => socket.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(12)));
    socket.on('error', () => undefined);
    // The others are answered behind the first: their writes wait for a connection that goes while the first is sent.
    let read = 0;
    await new Promise<void>((resolve) => socket.on('data', (data: Buffer) => (read += data.length) > 5 << 20 && resolve()));
    socket.destroy();
    await everyEnded;
    expect(made.parts).toBeLessThan(12 * 512);
    expect(warnings).toEqual([]);
  });

  it('answers a HEAD with the length and makes no part; a part that throws ends the connection short, and the next answer is whole', { timeout: 60_000 }, async () => {
    const made = { parts: 0 };
    const statuses: number[] = [];
    const failing = {
      byteLength: 3 << 20,
      *read() {
        yield Buffer.alloc(1 << 20, 1);
        throw new Error('a chunk would not inflate');
      },
    };
    const app = new Hono()
      .use(async (c, next) => {
        await next();
        statuses.push(c.res.status);
      })
      .get('/big', (c) => jsonBytes(c, reused(4, 1 << 20, made)))
      .get('/failing', (c) => jsonBytes(c, failing));
    const url = await onSocket(app);
    const head = await fetch(`${url}/big`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(4 << 20));
    expect((await head.arrayBuffer()).byteLength).toBe(0);
    expect(made.parts).toBe(0);
    const failed = await fetch(`${url}/failing`);
    expect(failed.status).toBe(200); // the head was out before the part threw
    await expect(readSlowly(failed)).rejects.toThrow();
    const whole = await readSlowly(await fetch(`${url}/big`));
    expect(whole.length).toBe(4 << 20);
    expect(statuses).toEqual([200, 500, 200]);
  });

  it('serves the target list through it, its chunks inflated one by one into one buffer', { timeout: 60_000 }, async () => {
    const api = await apiHarness();
    const files: Record<string, string> = {};
    for (let i = 0; i < 300; i++) files[`targets/ml-training/s-${String(i).padStart(3, '0')}.yaml`] = targetYaml(`s-${String(i).padStart(3, '0')}`, `10.6.${i >> 8}.${i & 255}`, 'ml-training', `labels: {rack: r${i % 3}}\n`);
    await api.push(files, 'three hundred');
    // Heartbeats the list adds as it sends: a time of this year, one of year 10027 (a longer one), none.
    const { token } = await api.token({ max_uses: 3 });
    const [a, b] = await Promise.all(['s-100a', 's-200ab', 's-250abc'].map(async (hostname, i) => (await api.register(token, { hostname, ip_address: `10.8.0.${i + 1}` })).json.node_credential));
    expect((await api.post('/api/v1/nodes/heartbeat', undefined, { token: a })).status).toBe(200);
    api.advance(8000 * 365.25 * 86_400_000);
    expect((await api.post('/api/v1/nodes/heartbeat', undefined, { token: b })).status).toBe(200);
    expect(expectedList(api)).toContain('"last_seen":"+0100');
    // Chunks of 4 to 8 targets, every one deflated.
    const list = new TargetList(api.heartbeats, 4, 0);
    const app = new Hono().get('/list', (c) => {
      list.sync(api.live.snapshot());
      return jsonBytes(c, list.all().parts);
    });
    const answer = await fetch(`${await onSocket(app)}/list`);
    const body = await readSlowly(answer);
    expect(body.toString()).toBe(expectedList(api));
    expect(Number(answer.headers.get('content-length'))).toBe(body.length);
  });
});

describe('the heartbeats journal the list reads', () => {
  it('names the hosts changed since a version, and says when it no longer reaches back that far', async () => {
    let now = 0;
    const heartbeats = new Heartbeats(fs, join(tempDir(), 'heartbeats.json'), () => now++);
    const start = heartbeats.version;
    heartbeats.record('a');
    heartbeats.record('b');
    const middle = heartbeats.version;
    heartbeats.forget('a');
    expect(heartbeats.changedSince(start)).toEqual(['a', 'b', 'a']);
    expect(heartbeats.changedSince(middle)).toEqual(['a']);
    expect(heartbeats.changedSince(heartbeats.version)).toEqual([]);
    for (let i = 0; i < 150_000; i++) heartbeats.record(`n${i % 3}`);
    expect(heartbeats.changedSince(middle)).toBeUndefined();
    const recent = heartbeats.version;
    heartbeats.record('z');
    expect(heartbeats.changedSince(recent)).toEqual(['z']);
    expect(heartbeats.changedSince(recent - 2)).toEqual(['n1', 'n2', 'z']);
    await heartbeats.save(); // and no save timer left behind
  });

  it('loads only times a Date can hold: a hand-edited 1e999 or 9e15 is dropped, not a list that cannot be sent', async () => {
    const file = join(tempDir(), 'heartbeats.json');
    fs.writeFileSync(file, '{"ok": 1790000000000, "far": 8.64e15, "past": -8.64e15, "infinite": 1e999, "beyond": 9e15, "text": "1790000000000"}');
    const heartbeats = new Heartbeats(fs, file);
    await heartbeats.load();
    expect(['ok', 'far', 'past', 'infinite', 'beyond', 'text'].filter((host) => heartbeats.lastSeenMs(host) !== undefined)).toEqual(['ok', 'far', 'past']);
    expect(heartbeats.lastSeen('far')!.toISOString()).toBe('+275760-09-13T00:00:00.000Z');
  });

  it('reports a save that fails (a full disk, a read-only state directory) and tries again: never an unhandled rejection that ends the server', async () => {
    let failing = true;
    const failures: string[] = [];
    const open = (async (...args: Parameters<typeof fs.promises.open>) => {
      if (failing) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      return fs.promises.open(...args);
    }) as typeof fs.promises.open;
    const file = join(tempDir(), 'heartbeats.json');
    const heartbeats = new Heartbeats({ ...fs, promises: { ...fs.promises, open } }, file, Date.now, 5, (error) => failures.push(String(error)));
    heartbeats.record('gpu-01');
    await vi.waitFor(() => expect(failures.length).toBeGreaterThanOrEqual(2)); // failed, and failed again on its retry
    expect(failures[0]).toContain('ENOSPC');
    failing = false;
    await vi.waitFor(() => expect(fs.existsSync(file)).toBe(true));
    expect(Object.keys(JSON.parse(fs.readFileSync(file, 'utf8')))).toEqual(['gpu-01']);
    // At stop a failed save is not tried again: the directory may be another server's by then.
    failing = true;
    heartbeats.record('gpu-02');
    await expect(heartbeats.close()).rejects.toThrow('ENOSPC');
    expect((heartbeats as unknown as { timer: unknown }).timer).toBeUndefined(); // no retry armed
    expect(Object.keys(JSON.parse(fs.readFileSync(file, 'utf8')))).toEqual(['gpu-01']);
  });
});

describe('errors told to a caller who may not read host names', () => {
  it('say what the error carries for anyone (a fault: what happened; a refusal naming other files: that they are there), the whole to others', async () => {
    const app = new Hono();
    app.onError(onError(silentLogger, (c) => c.req.header('x-sees') === 'yes'));
    app.get('/refused', () => {
      throw new AamiError('invalid_config', 'targets/ml/other-host.yaml: broken', { problems: [{ file: 'targets/ml/other-host.yaml' }] }, { message: '1 problem on other files', details: { problems: [] } });
    });
    app.get('/fault', () => {
      throw new AamiError('remote_refused', 'the remote refuses pushes (hook: targets/ml/other-host.yaml denied)');
    });
    app.get('/plain', () => {
      throw new AamiError('conflict', 'an address is taken');
    });
    const answer = async (path: string, sees: boolean) => (await app.request(path, { headers: sees ? { 'x-sees': 'yes' } : {} })).json() as Promise<any>;
    expect((await answer('/refused', false)).error).toEqual({ code: 'invalid_config', message: '1 problem on other files', details: { problems: [] } });
    expect((await answer('/refused', true)).error.message).toBe('targets/ml/other-host.yaml: broken');
    expect((await answer('/fault', false)).error.message).toMatch(/^the Git remote refused the write: .*\(the whole message is for a credential\)$/);
    expect((await answer('/fault', true)).error.message).toContain('other-host');
    expect((await answer('/plain', false)).error.message).toBe('an address is taken');
  });
});
