import { describe, expect, it, vi } from 'vitest';
import { ADMIN_TOKEN, apiHarness } from './api-helpers.js';

const goodTarget = { hostname: 'web-01', ip_address: '10.0.0.5', primary_group_id: 'api-servers' };

describe('bad input gets a 4xx JSON error naming the field, and makes no commit', () => {
  const cases: Array<[string, { raw?: string; body?: unknown }, number, string, string?]> = [
    ['malformed JSON', { raw: '{"hostname": ' }, 400, 'invalid_json'],
    ['an empty body', { raw: '' }, 400, 'invalid_json'],
    ['a JSON array', { body: [] }, 400, 'validation_failed'],
    ['a wrong type', { body: { ...goodTarget, ip_address: 42 } }, 400, 'validation_failed', 'ip_address'],
    ['an unknown field', { body: { ...goodTarget, colour: 'blue' } }, 400, 'validation_failed', 'colour'],
    ['a hostname with "/"', { body: { ...goodTarget, hostname: 'a/b' } }, 400, 'validation_failed', 'hostname'],
    ['a hostname with ".."', { body: { ...goodTarget, hostname: '..' } }, 400, 'validation_failed', 'hostname'],
    ['an invalid IP', { body: { ...goodTarget, ip_address: '10.0.0.256' } }, 400, 'validation_failed', 'ip_address'],
    ['port 0', { body: { ...goodTarget, exporters: [{ type: 'node_exporter', port: 0 }] } }, 400, 'validation_failed', 'exporters[0].port'],
    ['port 65536', { body: { ...goodTarget, exporters: [{ type: 'node_exporter', port: 65536 }] } }, 400, 'validation_failed', 'exporters[0].port'],
    ['a label name Prometheus rejects', { body: { ...goodTarget, labels: { 'gpu-model': 'x' } } }, 400, 'validation_failed', 'labels.gpu-model'],
    ['a label starting with __', { body: { ...goodTarget, labels: { __address__: 'x' } } }, 400, 'validation_failed', 'labels.__address__'],
    ['an unknown group', { body: { ...goodTarget, primary_group_id: 'nope' } }, 422, 'group_not_found'],
    ['an unknown exporter type', { body: { ...goodTarget, exporters: [{ type: 'snmp' }] } }, 400, 'validation_failed', 'exporters[0].type'],
    ['an oversized body', { raw: JSON.stringify({ ...goodTarget, labels: { big: 'x'.repeat(70_000) } }) }, 413, 'payload_too_large'],
  ];
  for (const [what, request, status, code, field] of cases) {
    it(`refuses ${what} with ${status} ${code}`, async () => {
      const api = await apiHarness();
      const before = api.commits();
      const response = await api.call('POST', '/api/v1/targets', request);
      expect(response.status).toBe(status);
      expect(response.json.error).toMatchObject({ code, message: expect.any(String) });
      if (field) expect(response.json.error.details).toContainEqual(expect.objectContaining({ field }));
      expect(api.commits()).toBe(before);
    });
  }

  it('refuses a registration with bad input the same way, and uses no token use', async () => {
    const api = await apiHarness();
    const { token, id } = await api.token();
    const before = api.commits();
    const response = await api.register(token, { hostname: '../etc', ip_address: '10.0.0.1' });
    expect(response.status).toBe(400);
    expect(response.json.error.details).toContainEqual(expect.objectContaining({ field: 'hostname' }));
    expect(api.commits()).toBe(before);
    expect((await api.get(`/api/v1/bootstrap-tokens/${id}`)).json.uses).toBe(0);
  });

  it('takes one spelling of an IP address only: two spellings of one endpoint clash, a zone id is refused', async () => {
    const api = await apiHarness();
    const add = (hostname: string, ip_address: string) => api.post('/api/v1/targets', { hostname, ip_address, primary_group_id: 'api-servers' });
    expect((await add('v4', '10.0.0.1')).json.ip_address).toBe('10.0.0.1');
    expect(await add('mapped', '::ffff:10.0.0.1')).toMatchObject({ status: 409, json: { error: { code: 'conflict' } } });
    expect((await add('v6', '0:0:0:0:0:0:0:1')).json.ip_address).toBe('::1');
    expect((await add('v6-again', '::0001')).status).toBe(409);
    expect((await add('upper', 'FD00::0001')).json.ip_address).toBe('fd00::1');
    expect((await add('zoned', 'fe80::1%eth0')).json.error.details).toContainEqual(expect.objectContaining({ field: 'ip_address' }));
  });

  it('answers an unknown route with a JSON 404', async () => {
    const api = await apiHarness();
    expect(await api.get('/api/v1/nothing')).toMatchObject({ status: 404, json: { error: { code: 'not_found' } } });
  });
});

describe('authentication', () => {
  it('needs the admin credential for every write and for reads unless they are opened', async () => {
    const api = await apiHarness();
    for (const [method, path] of [['POST', '/api/v1/groups'], ['POST', '/api/v1/targets'], ['POST', '/api/v1/bootstrap-tokens'], ['DELETE', '/api/v1/targets/x'], ['GET', '/api/v1/targets'], ['GET', '/api/v1/sd/prometheus'], ['GET', '/api/v1/bootstrap-tokens']]) {
      const response = await api.call(method!, path!, { token: null, body: method === 'GET' ? undefined : {} });
      expect(response.status, `${method} ${path}`).toBe(401);
      expect(response.json.error.code).toBe('unauthorized');
      expect(response.headers.get('www-authenticate')).toBe('Bearer');
    }
    expect((await api.call('POST', '/api/v1/groups', { token: 'wrong-credential-xxxxxxxx', body: {} })).status).toBe(401);
  });

  it('serves reads without a credential when the operator opened them, but never token state', async () => {
    const api = await apiHarness({ openReads: true });
    expect((await api.get('/api/v1/targets', { token: null })).status).toBe(200);
    expect((await api.get('/api/v1/groups', { token: null })).status).toBe(200);
    expect((await api.get('/api/v1/bootstrap-tokens', { token: null })).status).toBe(401);
    expect((await api.post('/api/v1/groups', { name: 'x', namespace: 'logical' }, { token: null })).status).toBe(401);
  });

  it('rate-limits wrong credentials from an address, never the right one', async () => {
    const api = await apiHarness({ maxFailures: 5 });
    for (let i = 0; i < 5; i++) expect((await api.get('/api/v1/targets', { token: 'bad-credential-xxxxxxxxxxx' })).status).toBe(401);
    const limited = await api.get('/api/v1/targets', { token: 'bad-credential-xxxxxxxxxxx' });
    expect(limited.status).toBe(429);
    expect(limited.json.error).toMatchObject({ code: 'rate_limited', details: { retry_after_seconds: 60 } });
    // Someone else's failures behind the same address lock nobody with a valid credential out.
    expect((await api.get('/api/v1/targets')).status).toBe(200);
    api.advance(61_000);
    expect((await api.get('/api/v1/targets', { token: 'bad-credential-xxxxxxxxxxx' })).status).toBe(401);
  });

  it('counts wrong bootstrap tokens as failures too', async () => {
    const api = await apiHarness({ maxFailures: 3 });
    const fake = `aami_bootstrap_abcdefgh_${'x'.repeat(40)}`;
    for (let i = 0; i < 3; i++) expect((await api.register(fake, { hostname: 'n', ip_address: '10.0.0.1' })).json.error.code).toBe('unauthorized');
    expect((await api.register(fake, { hostname: 'n', ip_address: '10.0.0.1' })).status).toBe(429);
  });

  it('runs two history reads at once with sixteen waiting behind them: the rest get 429 with Retry-After at once, and nothing is left held', async () => {
    const held: Array<() => void> = [];
    let running = 0;
    let most = 0;
    const api = await apiHarness({
      history: (real) => async (pathspecs) => {
        most = Math.max(most, ++running);
        await new Promise<void>((resolve) => held.push(resolve));
        running--;
        return real(pathspecs);
      },
    });
    expect((await api.post('/api/v1/targets', goodTarget)).status).toBe(201);
    const answers: Array<{ status: number; headers: Headers; json: any }> = [];
    const reads = Array.from({ length: 40 }, () => api.get('/api/v1/targets/web-01/history').then((answer) => answers.push(answer)));
    // None is released yet: once all forty have arrived, two run, sixteen wait, 22 were refused.
    await vi.waitFor(() => expect(answers.length).toBe(22));
    expect(held.length).toBe(2);
    for (const refused of answers) {
      expect(refused.status).toBe(429);
      expect(refused.headers.get('retry-after')).toBe('1');
      expect(refused.json.error).toMatchObject({ code: 'rate_limited', details: { retry_after_seconds: 1 } });
    }
    // The console's target page still shows, without its history.
    const signIn = await api.app.request('/console/sign-in', { method: 'POST', headers: { origin: 'http://localhost', host: 'localhost' }, body: new URLSearchParams({ credential: ADMIN_TOKEN }) });
    expect(signIn.status).toBe(303);
    const page = await api.app.request('/console/targets/web-01', { headers: { cookie: signIn.headers.get('set-cookie')!.split(';')[0]! } });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('Not read now (many history reads are under way');
    // Released one at a time, each hands its place to the next in line.
    for (let released = 0; released < 18; released++) {
      await vi.waitFor(() => expect(held.length).toBeGreaterThan(0));
      held.shift()!();
    }
    await Promise.all(reads);
    expect(most).toBe(2);
    expect(answers.slice(22).map((answer) => answer.status)).toEqual(Array(18).fill(200));
    expect(answers[22]!.json).toEqual([expect.objectContaining({ message: expect.stringContaining('web-01') })]);
    // Every place was given back: a read now runs at once.
    const later = api.get('/api/v1/groups/api-servers/history');
    await vi.waitFor(() => expect(held.length).toBe(1));
    held.shift()!();
    expect((await later).status).toBe(200);
  });
});
