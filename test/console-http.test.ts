import { createServer } from 'node:http';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { consoleServer } from './console-helpers.js';
import { fixedClock, onCleanup, tempDir } from './helpers.js';
import { ADMIN, freePort } from './node-helpers.js';
import { PROCESS_ADMIN, serverProcess } from './process-helpers.js';

/**
 * The console's HTTP edge without a browser: what a hostile client can send that a browser
 * never would. Each request is built by hand against a real `aami serve` on 127.0.0.1.
 */
async function console_(overrides: Parameters<typeof consoleServer>[0] = {}) {
  const server = await consoleServer(overrides);
  const origin = server.url;
  const request = (path: string, init: { method?: string; cookie?: string; form?: Record<string, string>; headers?: Record<string, string> } = {}) =>
    fetch(`${server.url}${path}`, {
      method: init.method ?? (init.form ? 'POST' : 'GET'),
      redirect: 'manual',
      headers: { ...(init.form ? { origin } : {}), ...(init.cookie ? { cookie: init.cookie } : {}), ...init.headers },
      body: init.form ? new URLSearchParams(init.form) : undefined,
    });
  /** Sign in; returns the cookie and the CSRF token a page of the session carries. */
  const signIn = async (credential: string) => {
    const response = await request('/console/sign-in', { form: { credential } });
    expect(response.status).toBe(303);
    const cookie = response.headers.get('set-cookie')!.split(';')[0]!;
    const page = await (await request('/console/tokens', { cookie })).text();
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page)![1]!;
    return { cookie, csrf, setCookie: response.headers.get('set-cookie')! };
  };
  return { ...server, request, signIn };
}

describe('the console over HTTP', () => {
  it('sets an HttpOnly, SameSite=Strict session cookie holding a random id, Secure when the page is https, never the credential', async () => {
    const server = await console_();
    const { setCookie, cookie } = await server.signIn(ADMIN);
    expect(setCookie).toMatch(/^aami_console=[A-Za-z0-9_-]{43}; Path=\/console; HttpOnly; SameSite=Strict$/);
    expect(cookie).not.toContain(ADMIN);

    // Behind a proxy that ends TLS the browser's Origin says https: the cookie is then Secure.
    const https = await server.request('/console/sign-in', { form: { credential: ADMIN }, headers: { origin: `https://${new URL(server.url).host}` } });
    expect(https.status).toBe(303);
    expect(https.headers.get('set-cookie')).toMatch(/; Secure/);

    const pages = await Promise.all(['/console/fleet', '/console/tokens', '/console/problems'].map(async (path) => (await server.request(path, { cookie })).text()));
    for (const text of [...pages, server.log.join('\n')]) expect(text).not.toContain(ADMIN);
    expect(server.log.join('\n')).toMatch(/msg="console sign-in" credential=admin role=admin/);
  });

  it('refuses POSTs without this origin or without the session CSRF token, and changes nothing', async () => {
    const server = await console_();
    const { cookie, csrf } = await server.signIn(ADMIN);
    const form = { _csrf: csrf, name: 'n', default_group_id: 'ml-training', max_uses: '5', expires: '30d', labels: '' };
    const attempts = [
      await server.request('/console/tokens', { form, cookie, headers: { origin: 'http://evil.example' } }),
      await server.request('/console/tokens', { form, cookie, headers: { origin: 'null' } }),
      await server.request('/console/tokens', { form: { ...form, _csrf: 'x'.repeat(43) }, cookie }),
      await server.request('/console/tokens', { form: { ...form, _csrf: '' }, cookie }),
      await server.request('/console/sign-in', { form: { credential: ADMIN }, headers: { origin: 'http://evil.example' } }),
    ];
    expect(attempts.map((r) => r.status)).toEqual([403, 403, 403, 403, 403]);
    // No Origin at all (not a browser): only Sec-Fetch-Site: same-origin would let it through.
    const bare = await fetch(`${server.url}/console/tokens`, { method: 'POST', headers: { cookie }, body: new URLSearchParams(form), redirect: 'manual' });
    expect(bare.status).toBe(403);
    expect((await server.api('GET', '/api/v1/bootstrap-tokens')).json).toEqual([]);

    const made = await server.request('/console/tokens', { form, cookie });
    expect(made.status).toBe(201);
    expect(made.headers.get('cache-control')).toBe('no-store');
    expect((await server.api('GET', '/api/v1/bootstrap-tokens')).json).toHaveLength(1);
  });

  it('ends a session when its credential is revoked, when it sits idle, and at sign-out', async () => {
    const clock = fixedClock(Date.now());
    const server = await console_({ clock: () => new Date(clock.now()) });
    const editor = await server.credential('day-shift', 'editor');
    const { json: credentials } = await server.api('GET', '/api/v1/credentials');

    const first = await server.signIn(editor);
    expect((await server.request('/console/fleet', { cookie: first.cookie })).status).toBe(200);
    expect((await server.api('POST', `/api/v1/credentials/${credentials[0].id}/revoke`)).status).toBe(200);
    const revoked = await server.request('/console/fleet', { cookie: first.cookie });
    expect([revoked.status, revoked.headers.get('location')]).toEqual([303, '/console/sign-in']);
    expect((await server.request('/console/tokens/progress', { cookie: first.cookie })).status).toBe(401);
    expect((await server.request('/console/sign-in', { form: { credential: editor } })).status).toBe(401);

    const idle = await server.signIn(ADMIN);
    clock.advance(29 * 60_000);
    expect((await server.request('/console/fleet', { cookie: idle.cookie })).status).toBe(200);
    clock.advance(31 * 60_000);
    expect((await server.request('/console/fleet', { cookie: idle.cookie })).status).toBe(303);

    const out = await server.signIn(ADMIN);
    expect((await server.request('/console/sign-out', { form: { _csrf: out.csrf }, cookie: out.cookie })).status).toBe(303);
    expect((await server.request('/console/fleet', { cookie: out.cookie })).status).toBe(303);
  });

  it('answers wrong credentials with 401, then 429 past the limit, and keeps bootstrap tokens out', async () => {
    const server = await console_();
    const { json: token } = await server.api('POST', '/api/v1/bootstrap-tokens', { name: 't', default_group_id: 'ml-training', max_uses: 1, expires_at: '2099-01-01T00:00:00Z' });
    const asToken = await server.request('/console/sign-in', { form: { credential: token.token } });
    expect(asToken.status).toBe(403);
    expect(await asToken.text()).toContain('not a bootstrap token');

    const statuses = [];
    for (let i = 0; i < 21; i++) statuses.push((await server.request('/console/sign-in', { form: { credential: `aami_cred_wrong${i}_secret` } })).status);
    expect(statuses.slice(0, 20)).toEqual(Array(20).fill(401));
    expect(statuses[20]).toBe(429);
    // A valid credential is always served, whatever its address did.
    expect((await server.request('/console/sign-in', { form: { credential: ADMIN } })).status).toBe(303);
  });

  it('answers bad input with 4xx pages, never 5xx', async () => {
    const server = await console_();
    const { cookie, csrf } = await server.signIn(ADMIN);
    const get = async (path: string) => (await server.request(path, { cookie })).status;
    expect(await get('/console/fleet?page=abc')).toBe(400);
    expect(await get('/console/fleet?page=0')).toBe(400);
    expect(await get('/console/fleet?label=1bad')).toBe(400);
    expect(await get('/console/fleet?group=ml-training,production')).toBe(400);
    expect(await get(`/console/fleet?q=${'x'.repeat(201)}`)).toBe(400);
    expect(await get('/console/fleet?page=999999&q=%00%3Cscript%3E')).toBe(200);
    expect(await get('/console/targets/no-such-host')).toBe(404);
    expect(await get('/console/tokens?page=-1')).toBe(400);
    expect(await get('/console/nothing-here')).toBe(404);
    expect(await get('/console/assets/..%2Fsessions.ts')).toBe(404);

    const create = async (fields: Record<string, string>) => {
      const response = await server.request('/console/tokens', { cookie, form: { _csrf: csrf, name: 'batch', default_group_id: 'ml-training', max_uses: '5', expires: '30d', labels: '', ...fields } });
      return [response.status, await response.text()] as const;
    };
    const [zero, zeroPage] = await create({ max_uses: '0' });
    expect([zero, zeroPage]).toEqual([400, expect.stringContaining('max_uses must be at least 1')]);
    expect((await create({ expires: '2001-01-01T00:00:00Z' }))[0]).toBe(400);
    expect((await create({ labels: 'no equals sign' }))[0]).toBe(400);
    expect((await create({ labels: '__reserved=x' }))[0]).toBe(400);
    expect((await create({ default_group_id: 'no-such-group' }))[0]).toBe(422);
    const [big] = await create({ labels: 'a=' + 'x'.repeat(100_000) });
    expect(big).toBe(413);
    // The form keeps what was typed, escaped.
    const [, kept] = await create({ max_uses: '0', name: '<b>mine</b>' });
    expect(kept).toContain('value="&lt;b&gt;mine&lt;/b&gt;"');
    // A body that is not a form it can read (a multipart body with no parts of its boundary): 400, signed in or not.
    const garbled = { 'content-type': 'multipart/form-data; boundary=xyz', origin: server.url };
    for (const [path, withCookie] of [['/console/sign-in', false], ['/console/tokens', true]] as const) {
      const response = await fetch(`${server.url}${path}`, { method: 'POST', redirect: 'manual', headers: { ...garbled, ...(withCookie ? { cookie } : {}) }, body: 'garbage' });
      expect([path, response.status]).toEqual([path, 400]);
      expect(await response.text()).toContain('the form could not be read');
    }
    expect(server.log.join('\n')).not.toMatch(/console request failed/);
    expect((await server.api('GET', '/api/v1/bootstrap-tokens')).json).toEqual([]);
  });

  it('serves its assets from the package with a version in the URL, and every page with a strict CSP', async () => {
    const server = await console_();
    const signIn = await server.request('/console/sign-in');
    const html = await signIn.text();
    expect(signIn.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(signIn.headers.get('x-frame-options')).toBe('DENY');
    const js = /src="(\/console\/assets\/console\.js\?v=[0-9a-f]{16})"/.exec(html)![1]!;
    const asset = await server.request(js);
    expect(asset.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(asset.headers.get('cache-control')).toContain('immutable');
    expect(await asset.text()).toContain('textContent');
    expect(html).not.toMatch(/https?:\/\/(?!127\.0\.0\.1)/);
  });

  it('says when Prometheus cannot be asked, or answers with something that is not Prometheus, and still shows the fleet', async () => {
    // A stand-in for a misbehaving endpoint at the configured URL (a real Prometheus never answers like this).
    const answers = ['not json', JSON.stringify({ status: 'success', data: { resultType: 'vector', result: [{ metric: { hostname: '<x>' }, value: ['1', 2] }] } })];
    const impostor = createServer((request, response) => response.end(answers[Number(request.url!.includes('/second/'))]));
    await new Promise<void>((resolve) => impostor.listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise<void>((resolve) => impostor.close(() => resolve())));
    const impostorUrl = `127.0.0.1:${(impostor.address() as { port: number }).port}`;
    const fleetWith = async (prometheusUrl: string) => {
      const server = await console_({ prometheusUrl });
      const response = await server.request('/console/fleet', { cookie: (await server.signIn(ADMIN)).cookie });
      return [response.status, await response.text()] as const;
    };

    const [status, text] = await fleetWith(`http://user:hunter2secret@${impostorUrl}/first/`);
    expect(status).toBe(200);
    expect(text).toContain(`cannot ask Prometheus at http://${impostorUrl}/first/`);
    expect(text).not.toContain('hunter2secret');
    expect(await fleetWith(`http://${impostorUrl}/second/`)).toEqual([200, expect.stringContaining('gave an answer that is not an instant vector')]);
    expect(await fleetWith(`http://127.0.0.1:${await freePort()}`)).toEqual([200, expect.stringContaining('ECONNREFUSED')]);
  });

  it('takes --prometheus-url from the command line and refuses one that is not http(s)', { timeout: 60_000 }, async () => {
    const port = await freePort();
    // Its own directories: the defaults (./data) are the checkout's, a developer's `npm start` among them.
    const base = tempDir();
    const server = await serverProcess(['--repo', join(base, 'repo'), '--sd-dir', join(base, 'sd'), '--state-dir', join(base, 'state'), '--prometheus-url', `http://127.0.0.1:${port}`]);
    const cookie = (await fetch(`${server.url}/console/sign-in`, { method: 'POST', redirect: 'manual', headers: { origin: server.url }, body: new URLSearchParams({ credential: PROCESS_ADMIN }) })).headers.get('set-cookie')!.split(';')[0]!;
    expect(await (await fetch(`${server.url}/console/fleet`, { headers: { cookie } })).text()).toContain(`cannot ask Prometheus at http://127.0.0.1:${port}/`);
    await expect(serverProcess([], { AAMI_PROMETHEUS_URL: 'ftp://prometheus:9090' })).rejects.toThrow(/exited \(2\)[\s\S]*prometheus_url: must be an http/);
  });
});
