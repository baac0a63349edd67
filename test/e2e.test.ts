import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { pushFiles, tempDir } from './helpers.js';
import { ADMIN, configServer, fakeNode, runningNodeExporter, waitFor } from './node-helpers.js';
import { renderPrometheusConfig, startPrometheus } from './prometheus-helpers.js';

describe('end to end, with a real Prometheus', () => {
  it('scrapes a node that registered itself, follows the config repo, and survives a broken file', { timeout: 120_000 }, async () => {
    const server = await configServer();
    const sdDir = join(server.repo, '..', 'sd');
    // deploy/prometheus/prometheus.yml: file_sd, no credential (prometheus-http-sd.yml: deploy.test.ts).
    const prometheus = await startPrometheus(renderPrometheusConfig('prometheus.yml', { sdDir, serverUrl: server.url }));

    // The admin's part, with the guide's curl commands (JSON without a Content-Type).
    const node = fakeNode({ gpu: true, cron: true });
    const curl = (args: string) => node.sh(`curl -sS -H "Authorization: Bearer ${ADMIN}" ${args}`);
    const group = JSON.parse((await curl(`-X POST ${server.url}/api/v1/groups -d '{"name": "gpu-fleet", "namespace": "logical", "description": "GPU fleet"}'`)).stdout);
    const token = JSON.parse(
      (await curl(`-X POST ${server.url}/api/v1/bootstrap-tokens -d '{"name": "ml-cluster-token", "default_group_id": "${group.id}", "max_uses": 100, "expires_at": "2099-12-31T23:59:59Z", "labels": {"environment": "production", "cluster": "ml-training"}}'`)).stdout,
    );
    expect(token.token).toMatch(/^aami_bootstrap_/);

    // The node's part: the one-liner, fetched from the server, with the node's own exporter.
    const port = await runningNodeExporter(node.path('var/lib/node_exporter/textfile'));
    const run = await node.sh(`curl -fsSL ${server.url}/bootstrap.sh | bash -s -- --token-file ${node.tokenFile(token.token)} --server ${server.url} --node-exporter-port ${port}`);
    expect(run.code, run.stderr).toBe(0);
    const registeredAt = Date.now();
    const [target] = (await server.admin('GET', '/api/v1/targets')).json;

    const upIn = async (job: string, hostname: string) =>
      waitFor(`${hostname} up in job ${job}`, async () => (await prometheus.targets()).find((t) => t.scrapePool === job && t.labels.hostname === hostname && t.health === 'up'), 300);
    const fileSd = await upIn('node', target.hostname);
    console.log(`e2e: registration → target up in Prometheus (file_sd): ${((Date.now() - registeredAt) / 1000).toFixed(1)} s`);
    expect(fileSd.labels).toMatchObject({
      instance: `${target.hostname}:${port}`,
      aami_group: 'gpu-fleet',
      aami_namespace: 'logical',
      environment: 'production',
      cluster: 'ml-training',
      gpu_model: 'NVIDIA H100 80GB HBM3',
      gpu_count: '1',
    });

    // The node's metrics, and a dynamic check's series from the textfile directory.
    const load = await waitFor('node_load1', async () => (await prometheus.query(`node_load1{hostname="${target.hostname}", job="node"}`))[0]);
    expect(Number(load.value[1])).toBeGreaterThanOrEqual(0);
    const check = await waitFor('a check series', async () => (await prometheus.query(`aami_check_success{check="disk-usage", job="node"}`))[0]);
    expect(check.metric).toMatchObject({ hostname: target.hostname, aami_group: 'gpu-fleet' });

    // A target added by a plain git commit (a merged pull request) appears...
    const prPort = await runningNodeExporter(join(tempDir(), 'textfile'));
    const prFile = 'targets/ml-training/pr-node.yaml';
    const prYaml = `hostname: pr-node\nip_address: 127.0.0.1\nprimary_group: ml-training\nexporters:\n  - {type: node_exporter, port: ${prPort}}\n`;
    pushFiles(server.repo, { [prFile]: prYaml }, 'Add pr-node');
    expect((await upIn('node', 'pr-node')).labels).toMatchObject({ role: 'ml-training', instance: `pr-node:${prPort}` });
    // ...and a deleted one disappears.
    pushFiles(server.repo, { [prFile]: null }, 'Remove pr-node');
    await waitFor('pr-node to leave Prometheus', async () => !(await prometheus.targets()).some((t) => t.labels.hostname === 'pr-node'), 300);

    // A broken file: health names it, and Prometheus keeps the target it described.
    pushFiles(server.repo, { [`targets/gpu-fleet/${target.hostname}.yaml`]: 'hostname: [this is not yaml\n' }, 'Break a file');
    const health = await waitFor('health to report the broken file', async () => {
      const body = (await (await fetch(`${server.url}/api/v1/health`, { headers: { authorization: `Bearer ${ADMIN}` } })).json()) as { status: string; compiler: { invalid_files: Array<{ file: string }> } };
      return body.status === 'degraded' && body;
    });
    expect(health.compiler.invalid_files).toEqual([expect.objectContaining({ file: `targets/gpu-fleet/${target.hostname}.yaml` })]);
    // A valid change after it: once Prometheus scrapes pr-node again, it has read the node.json
    // the server wrote after the broken push (the file is written whole, in commit order).
    pushFiles(server.repo, { [prFile]: prYaml }, 'Add pr-node again');
    await upIn('node', 'pr-node');
    const after = (await prometheus.targets()).filter((t) => t.labels.hostname === target.hostname);
    expect(after.map((t) => `${t.scrapePool}:${t.health}`).sort()).toEqual(['node:up']);
  });
});
