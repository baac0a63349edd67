import { describe, expect, it } from 'vitest';
import { apiHarness } from './api-helpers.js';

describe('a node credential and other targets', () => {
  it('cannot tell a target that exists from one that does not', async () => {
    const api = await apiHarness();
    await api.post('/api/v1/targets', { hostname: 'secret-db', ip_address: '10.0.0.9', primary_group_id: 'ml-training' });
    const { token } = await api.token();
    const { node_credential: node } = (await api.register(token, { hostname: 'own-node', ip_address: '10.3.0.1' })).json;
    const existing = await api.get('/api/v1/targets/secret-db', { token: node });
    const missing = await api.get('/api/v1/targets/no-such-host', { token: node });
    expect(existing.status).toBe(403);
    expect(missing.status).toBe(existing.status);
    expect(missing.json.error.code).toBe(existing.json.error.code);
    expect((await api.get('/api/v1/targets/OWN-NODE', { token: node })).status).toBe(200);
    // with the filters and pages too
    for (const query of ['hostname=secret-db', 'hostname=no-such-host', 'label=rack', 'limit=1&cursor=c2VjcmV0LWRi']) {
      const answer = await api.get(`/api/v1/targets?${query}`, { token: node });
      expect(answer.status, query).toBe(200);
      expect(answer.json.every((t: { hostname: string }) => t.hostname === 'own-node'), query).toBe(true);
      expect(answer.headers.get('link'), query).toBeNull();
    }
  });
});
