import { describe, expect, it } from 'vitest';
import { apiHarness } from './api-helpers.js';

describe('the guide\'s commands', () => {
  it('creates groups, a token, registers a node and shows it everywhere the guide looks', async () => {
    const api = await apiHarness();
    // curl -X POST .../groups -d '{...}' sends no JSON content type: accepted all the same.
    const group = await api.call('POST', '/api/v1/groups', {
      raw: '{"name": "gpu-fleet", "namespace": "logical", "description": "GPU fleet"}',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    expect(group.status).toBe(201);
    expect(group.json).toEqual({ id: 'gpu-fleet', name: 'gpu-fleet', namespace: 'logical', parent_id: null, description: 'GPU fleet', labels: {} });

    const token = await api.post('/api/v1/bootstrap-tokens', {
      name: 'ml-cluster-token',
      default_group_id: 'gpu-fleet',
      max_uses: 100,
      expires_at: '2026-12-31T23:59:59Z',
      labels: { environment: 'production', cluster: 'ml-training' },
    });
    expect(token.status).toBe(201);
    expect(token.json.token).toMatch(/^aami_bootstrap_[a-z0-9]{8}_[A-Za-z0-9]{40}$/);
    expect(token.json).toMatchObject({ name: 'ml-cluster-token', max_uses: 100, uses: 0, remaining: 100, expired: false, revoked: false });

    const registered = await api.register(token.json.token, {
      hostname: 'GPU-Node-01',
      ip_address: '10.0.1.21',
      exporters: [{ type: 'node_exporter', port: 9100 }, { type: 'dcgm_exporter', port: 9400 }],
      labels: { rack: 'r1', environment: 'staging' },
      facts: { cpu_cores: 16, memory_bytes: 137438953472, gpu_vendor: 'nvidia', gpu_model: 'NVIDIA H100 80GB HBM3', gpu_count: 1 },
    });
    expect(registered.status).toBe(201);
    expect(registered.json.outcome).toBe('created');
    expect(registered.json.node_credential).toMatch(/^aami_node_/);
    expect(registered.json.target).toMatchObject({
      id: 'gpu-node-01',
      primary_group_id: 'gpu-fleet',
      // GPU facts and --label flags are the node's labels; the token's are fixed and win over them
      labels: {},
      node_labels: { rack: 'r1', environment: 'staging', gpu_model: 'NVIDIA H100 80GB HBM3', gpu_count: '1', gpu_vendor: 'nvidia' },
      token_labels: { environment: 'production', cluster: 'ml-training' },
      effective_labels: { environment: 'production', cluster: 'ml-training', rack: 'r1', gpu_model: 'NVIDIA H100 80GB HBM3', gpu_count: '1', gpu_vendor: 'nvidia' },
    });
    expect(registered.json.target.label_sources).toMatchObject({ environment: `token:${token.json.id}`, rack: 'node', hostname: 'aami' });

    const list = await api.get('/api/v1/targets');
    expect(list.json).toHaveLength(1);
    expect((await api.get('/api/v1/targets?hostname=gpu-node-01')).json).toHaveLength(1);
    expect((await api.get('/api/v1/targets?hostname=other')).json).toEqual([]);
    expect((await api.get('/api/v1/targets/gpu-node-01')).json.ip_address).toBe('10.0.1.21');
    expect((await api.get(`/api/v1/bootstrap-tokens/${token.json.id}`)).json).toMatchObject({ uses: 1, remaining: 99 });

    await api.nextCompile();
    const sd = await api.get('/api/v1/sd/prometheus?job=dcgm');
    expect(sd.headers.get('content-type')).toBe('application/json');
    expect(sd.json).toEqual([expect.objectContaining({ targets: ['10.0.1.21:9400'] })]);
    expect((await api.get('/api/v1/sd/prometheus')).json.map((e: any) => e.targets[0]).sort()).toEqual(['10.0.1.21:9100', '10.0.1.21:9400']);
    expect(api.sd('node')).toEqual((await api.get('/api/v1/sd/prometheus?job=node')).json);

    const health = await api.call('HEAD', '/api/v1/health', { token: null });
    expect(health.status).toBe(200);
    expect((await api.get('/api/v1/health', { token: null })).json.status).toBe('healthy');
  });

  it('records who did what in Git: one commit per change, the author and the source address', async () => {
    const api = await apiHarness();
    const { token, id } = await api.token();
    await api.register(token, { hostname: 'n1', ip_address: '10.0.0.1' });
    const log = api.git('log', '--format=%an|%s|%(trailers:key=Source-Address,valueonly,separator=%x2C)').trim().split('\n');
    expect(log.slice(0, 2)).toEqual([`token ${id}|Register n1 with bootstrap token ${id}|local`, `admin|Create bootstrap token ${id} (test)|local`]);
    expect(api.git('show', '--name-only', '--format=', 'HEAD').trim().split('\n').sort()).toEqual([`targets/ml-training/n1.yaml`, `tokens/${id}.yaml`]);
    const history = await api.get('/api/v1/targets/n1/history');
    expect(history.json).toEqual([expect.objectContaining({ author: `token ${id}`, message: `Register n1 with bootstrap token ${id}`, source_address: 'local' })]);
  });
});
