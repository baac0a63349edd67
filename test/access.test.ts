import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROUTES } from '../src/api/spec/routes.js';
import { apiHarness } from './api-helpers.js';
import { tempDir } from './helpers.js';

/**
 * Who can do what: every endpoint against every kind of credential. The table is the trust
 * model of the README, checked; no 5xx for anyone.
 */
const KINDS = ['none', 'wrong', 'token_active', 'token_used_up', 'token_expired', 'token_revoked', 'node_own', 'node_other', 'reader', 'editor', 'admin', 'break_glass'] as const;
type Kind = (typeof KINDS)[number];
type Expect = Partial<Record<Kind, number>>;

const TOKENS: Kind[] = ['token_active', 'token_used_up', 'token_expired', 'token_revoked'];
const NODES: Kind[] = ['node_own', 'node_other'];
const each = (kinds: Kind[], status: number): Expect => Object.fromEntries(kinds.map((k) => [k, status]));

const anyone = (status: number): Expect => each([...KINDS], status);
/** Anyone, where what is answered depends on who asks (health, /metrics): a wrong secret is refused. */
const anyoneChecked = (status: number): Expect => ({ ...anyone(status), wrong: 401 });
const readers = (ok: number): Expect => ({ none: 401, wrong: 401, ...each(TOKENS, 403), ...each(NODES, 403), ...each(['reader', 'editor', 'admin', 'break_glass'], ok) });
const editors = (ok: number): Expect => ({ ...readers(ok), reader: 403 });
const admins = (ok: number): Expect => ({ ...editors(ok), editor: 403 });
const nodes = (ok: number): Expect => ({ none: 401, wrong: 401, ...each(TOKENS, 403), ...each(NODES, ok), ...each(['reader', 'editor', 'admin', 'break_glass'], 403) });

interface Row {
  method: string;
  path: (k: Kind, i: number) => string;
  body?: (k: Kind, i: number) => unknown;
  expect: Expect;
}
const row = (method: string, path: string | Row['path'], expect: Expect, body?: Row['body']): Row => ({ method, path: typeof path === 'string' ? () => path : path, expect, body });

const ROWS: Row[] = [
  row('GET', '/api/v1/health', anyoneChecked(200)),
  row('HEAD', '/api/v1/health', anyone(200)),
  row('GET', '/metrics', anyoneChecked(200)),
  row('GET', '/api/v1/openapi.json', anyone(200)),
  row('GET', '/bootstrap.sh', anyone(200)),
  row('GET', '/bootstrap.sh.sha256', anyone(200)),
  row('GET', '/scripts/dynamic-check.sh.sha256', anyone(200)),
  row('GET', '/downloads/node_exporter-linux-amd64.tar.gz', anyone(200)),
  row('GET', '/api/v1/groups', readers(200)),
  row('GET', '/api/v1/groups/ml-training', readers(200)),
  row('GET', '/api/v1/groups/ml-training/history', readers(200)),
  row('POST', '/api/v1/groups', editors(201), (k) => ({ name: `new-${k.replace(/_/g, '-')}`, namespace: 'logical' })),
  row('PATCH', (k) => `/api/v1/groups/g-${slug(k)}`, editors(200), () => ({ description: 'patched' })),
  row('PUT', (k) => `/api/v1/groups/g-${slug(k)}`, editors(200), (k) => ({ name: `g-${slug(k)}`, namespace: 'logical' })),
  // A node reads its own target only; the list shows it nothing else.
  row('GET', '/api/v1/targets', { ...readers(200), ...each(NODES, 200) }),
  row('GET', '/api/v1/targets/node-own', { ...readers(200), node_own: 200, node_other: 403 }),
  row('GET', '/api/v1/targets/node-own/history', readers(200)),
  row('GET', '/api/v1/targets/node-own/checks', readers(200)),
  row('POST', '/api/v1/targets', editors(201), (k, i) => ({ hostname: `new-${slug(k)}`, ip_address: `10.7.${i}.1`, primary_group_id: 'ml-training' })),
  row('PUT', (k) => `/api/v1/targets/t-${slug(k)}`, editors(200), (_, i) => ({ ip_address: `10.6.${i}.2`, primary_group_id: 'ml-training' })),
  row('PATCH', (k) => `/api/v1/targets/t-${slug(k)}`, editors(200), () => ({ labels: { rack: 'r9' } })),
  row('GET', '/api/v1/checks', readers(200)),
  row('GET', '/api/v1/sd/prometheus', readers(200)),
  row('GET', '/api/v1/bootstrap-tokens', editors(200)),
  row('GET', (k) => `/api/v1/bootstrap-tokens/${k}`, editors(200)),
  row('POST', '/api/v1/bootstrap-tokens', editors(201), () => ({ name: 'n', default_group_id: 'ml-training', max_uses: 1, expires_at: '2030-01-01T00:00:00Z' })),
  row('GET', (k) => `/api/v1/bootstrap-tokens/${k}/history`, editors(200)),
  row('POST', (k) => `/api/v1/bootstrap-tokens/${k}/revoke`, editors(200)),
  // Revoking a revoked token again answers the token as it is.
  row('DELETE', (k) => `/api/v1/bootstrap-tokens/${k}`, editors(200)),
  row('GET', '/api/v1/credentials', admins(200)),
  row('POST', '/api/v1/credentials', admins(201), (k) => ({ name: `made-by-${slug(k)}`, role: 'reader' })),
  row('GET', (k) => `/api/v1/credentials/${k}`, admins(200)),
  row('GET', (k) => `/api/v1/credentials/${k}/history`, admins(200)),
  row('POST', (k) => `/api/v1/credentials/${k}/revoke`, admins(200)),
  // Without a Git remote an authorized sync answers 404; nobody else gets that far.
  row('POST', '/api/v1/sync', editors(404)),
  row('POST', '/api/v1/bootstrap/register', { none: 401, wrong: 401, token_active: 201, token_used_up: 403, token_expired: 403, token_revoked: 403, ...each(NODES, 403), ...each(['reader', 'editor', 'admin', 'break_glass'], 403) }, (k, i) => ({
    hostname: `enrol-${slug(k)}`,
    ip_address: `10.5.${i}.1`,
  })),
  row('GET', '/api/v1/nodes/self', nodes(200)),
  row('PUT', '/api/v1/nodes/self', nodes(200), () => ({ facts: { cpu_cores: 4 } })),
  row('POST', '/api/v1/nodes/heartbeat', nodes(200)),
  row('GET', '/api/v1/checks/node', nodes(200)),
  row('GET', '/api/v1/checks/node/disk-usage/script', nodes(200)),
  row('DELETE', (k) => `/api/v1/targets/t-${slug(k)}`, editors(200)),
  row('DELETE', (k) => `/api/v1/groups/g-${slug(k)}`, editors(200)),
  row('DELETE', '/api/v1/nodes/self', nodes(200)),
];

function slug(kind: Kind): string {
  return kind.replace(/_/g, '-');
}

describe('the trust model', () => {
  it('has a row for every route of the API, and every row is a route', () => {
    const pattern = (path: string) => new RegExp(`^${path.replace(/\./g, '\\.').replace(/:[a-z]+/g, '[^/]+')}$`);
    const covers = (route: { method: string; path: string }, r: Row) => r.method === route.method && pattern(route.path).test(r.path('none', 0));
    expect(ROUTES.filter((route) => !ROWS.some((r) => covers(route, r))).map((route) => `${route.method} ${route.path}`)).toEqual([]);
    expect(ROWS.filter((r) => !ROUTES.some((route) => covers(route, r))).map((r) => `${r.method} ${r.path('none', 0)}`)).toEqual([]);
  });

  it(`answers every endpoint for every kind of credential as the README's table says (${ROWS.length} endpoints x ${KINDS.length} kinds)`, { timeout: 120_000 }, async () => {
    const downloads = tempDir('aami-downloads-');
    writeFileSync(join(downloads, 'node_exporter-linux-amd64.tar.gz'), 'a tarball');
    const api = await apiHarness({ downloadsDir: downloads });
    const secrets = new Map<Kind, string | null>([['none', null], ['wrong', `aami_cred_zzzzzzzz_${'x'.repeat(40)}`]]);
    const ok = <R extends { status: number; text: string }>(response: R, what: string): R => {
      if (response.status >= 300) throw new Error(`${what}: ${response.status} ${response.text}`);
      return response;
    };
    // Named credentials, bootstrap tokens in each state, and two enrolled nodes.
    for (const role of ['reader', 'editor', 'admin'] as const) {
      secrets.set(role, ok(await api.post('/api/v1/credentials', { name: `the-${role}`, role }), role).json.credential);
    }
    const active = await api.token({ max_uses: 100 });
    secrets.set('token_active', active.token);
    const nodeOwn = ok(await api.register(active.token, { hostname: 'node-own', ip_address: '10.1.0.1' }), 'node-own').json.node_credential;
    const nodeOther = ok(await api.register(active.token, { hostname: 'node-other', ip_address: '10.1.0.2' }), 'node-other').json.node_credential;
    secrets.set('node_own', nodeOwn);
    secrets.set('node_other', nodeOther);
    const usedUp = await api.token({ max_uses: 1 });
    ok(await api.register(usedUp.token, { hostname: 'used-host', ip_address: '10.1.0.3' }), 'used-host');
    secrets.set('token_used_up', usedUp.token);
    secrets.set('token_expired', (await api.token({ expires_at: '2026-11-26T01:00:00Z' })).token);
    const revoked = await api.token();
    ok(await api.post(`/api/v1/bootstrap-tokens/${revoked.id}/revoke`), 'revoke');
    secrets.set('token_revoked', revoked.token);
    // One group, target, token and credential per kind, for the rows that change or delete one.
    const tokenIds = new Map<Kind, string>();
    const credentialIds = new Map<Kind, string>();
    for (const [i, kind] of KINDS.entries()) {
      ok(await api.post('/api/v1/groups', { name: `g-${slug(kind)}`, namespace: 'logical' }), 'group');
      ok(await api.post('/api/v1/targets', { hostname: `t-${slug(kind)}`, ip_address: `10.6.${i}.1`, primary_group_id: 'ml-training' }), 'target');
      tokenIds.set(kind, (await api.token()).id);
      credentialIds.set(kind, ok(await api.post('/api/v1/credentials', { name: `c-${slug(kind)}`, role: 'reader' }), 'credential').json.id);
    }
    api.advance(2 * 3600_000); // the expiring token is past its expiry now

    const mismatches: string[] = [];
    let calls = 0;
    for (const r of ROWS) {
      for (const [i, kind] of KINDS.entries()) {
        const expected = r.expect[kind];
        if (expected === undefined) throw new Error(`no expectation for ${r.method} ${r.path(kind, i)} as ${kind}`);
        const path = r
          .path(kind, i)
          .replace(/bootstrap-tokens\/([a-z_]+)(\/|$)/, (_, k: Kind, rest: string) => `bootstrap-tokens/${tokenIds.get(k)}${rest}`)
          .replace(/credentials\/([a-z_]+)(\/|$)/, (_, k: Kind, rest: string) => `credentials/${credentialIds.get(k)}${rest}`);
        const secret = secrets.get(kind);
        const response = await api.call(r.method, path, { token: kind === 'break_glass' ? undefined : secret, body: r.body?.(kind, i) });
        calls++;
        if (response.status >= 500 || response.status !== expected) {
          mismatches.push(`${r.method} ${path} as ${kind}: expected ${expected}, got ${response.status} ${response.text.slice(0, 160)}`);
        }
      }
    }
    expect(mismatches).toEqual([]);
    expect(calls).toBe(ROWS.length * KINDS.length);
    api.git('fsck', '--strict', '--no-progress');
  });
});
