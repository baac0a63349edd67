import { describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, apiHarness } from './api-helpers.js';

describe('hostile requests', () => {
  it('never answer 5xx, and make no metric series of their own', async () => {
    const api = await apiHarness();
    await api.post('/api/v1/targets', { hostname: 'gpu-1', ip_address: '10.0.0.1', primary_group_id: 'ml-training' });
    const paths = [
      '/api/v1/targets?label=%ZZ', '/api/v1/targets?cursor=', '/api/v1/targets/%', '/api/v1/targets/%E0%A4%A', '/api/v1/targets?limit=1e3',
      '/api/v1/targets?limit=0x10', '/api/v1/targets?hostname=%00', '/api/v1/targets?label=a%3D%0A%0Dx&limit=1', '/api/v1/targets?label=%E2%82%AC',
      '/api/v1/groups/__proto__', '/api/v1/targets/constructor', '/api/v1/targets/__proto__', '/api/v1/bootstrap-tokens/__proto__', '/api/v1/credentials/toString',
      '/scripts/__proto__', '/scripts/constructor.sha256', '/api/v1/checks/node/__proto__/script', '/api/v1/targets/__proto__/checks', '/api/v1/targets/toString/history',
      '/api/v1/groups/hasOwnProperty/history', '/api/v1/sd/prometheus?job=__proto__', '/api/v1/sd/prometheus?job=constructor', '/api/v1/groups?namespace=__proto__',
      '/api/v1/targets?group=constructor', '/api/v1/targets?__proto__=1', '/api/v1/targets?constructor=1', '/api/v1/targets?hasOwnProperty=1&toString=2',
      '/api/v1/targets?label=__proto__', '/api/v1/targets?label=!constructor', '/api/v1/targets?label=constructor%3Dx', '//api/v1/targets', '/api/v1//targets',
      '/api/v1/targets/', '/api/v1/targets?&&&', '/api/v1/targets?=x', '/api/v1/targets?%00=1', '/api/v1/targets?label', '/api/v1/targets?limit=10000&cursor=' + 'A'.repeat(5000),
      `/api/v1/targets?${'label=a&'.repeat(2000)}`, `/api/v1/targets?label=a%3D${'x'.repeat(20000)}`, '/api/v1/targets?limit=9999999999999999999999', '/api/v1/targets?limit=-0',
      '/api/v1/targets?limit=1.0', '/api/v1/targets?limit=%201', '/api/v1/targets?hostname=GPU-1', '/api/v1/targets?hostname=' + 'a'.repeat(300), '/api/v1/targets?cursor=Z3B1LTE&limit=1',
      '/console?x=%ZZ', '/console/targets?q=%ZZ', '/downloads/..%2F..%2Fetc%2Fpasswd', '/downloads/%2e%2e', '/api/v1/nodes/self', '/api/v1/checks/node', '/api/v1/openapi.json?x',
      '/api/v1/targets/gpu-1?x=1', '/api/v1/targets/gpu%2D1', '/api/v1/targets/GPU-1',
    ];
    const bad: string[] = [];
    for (const path of paths) {
      for (const method of ['GET', 'HEAD', 'DELETE', 'PATCH', 'PROPFIND', 'OPTIONS']) {
        for (const headers of <Array<Record<string, string>>>[{ authorization: `Bearer ${ADMIN_TOKEN}` }, {}, { authorization: 'Bearer aami_node_' + 'x'.repeat(40), 'if-none-match': '*' }, { authorization: 'Bearer \u00ff\u00fe', 'if-none-match': 'W/"x", ,,' }]) {
          try {
            const r = await api.app.request(path, { method, headers, body: method === 'PATCH' ? '{"labels":{"__proto__":{"x":"1"}}}' : undefined });
            const text = await r.text();
            if (r.status >= 500) bad.push(`${method} ${path.slice(0, 80)} ${JSON.stringify(headers).slice(0, 40)} → ${r.status} ${text.slice(0, 200)}`);
          } catch (error) {
            bad.push(`${method} ${path.slice(0, 80)} threw ${(error as Error).message}`);
          }
        }
      }
    }
    expect(bad).toEqual([]);
    const metrics = await (await api.app.request('/metrics')).text();
    const routes = new Set([...metrics.matchAll(/aami_http_requests_total\{[^}]*route="([^"]*)"/g)].map((m) => m[1]));
    const methods = new Set([...metrics.matchAll(/aami_http_requests_total\{[^}]*method="([^"]*)"/g)].map((m) => m[1]));
    // route patterns and known methods only: no raw path, id or method name an attacker chose
    for (const route of routes) expect(route === 'unmatched' || route!.startsWith('/'), route).toBe(true);
    for (const route of routes) expect(route, route).not.toMatch(/proto|constructor|toString|gpu-1|%/);
    expect([...methods].every((m) => ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'other'].includes(m!))).toBe(true);
  }, 120_000);
});
