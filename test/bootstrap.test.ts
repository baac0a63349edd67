import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers.js';
import { configServer, fakeNode, freePort, requireBinary, runningNodeExporter } from './node-helpers.js';

/** The guide's one-liner, with the token in a file so it stays out of `ps`. */
const oneLiner = (server: string, tokenFile: string, flags = '') =>
  `curl -fsSL ${server}/bootstrap.sh | bash -s -- --token-file ${tokenFile} --server ${server} ${flags}`;

describe('bootstrap.sh', () => {
  it('registers a GPU node, reuses its running exporter, keeps the credential root-only and runs the first check', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: true, cron: true });
    const port = await runningNodeExporter(node.path('var/lib/node_exporter/textfile'));
    const dcgmPort = await freePort();
    const { token, id } = await server.token();
    const flags = `--node-exporter-port ${port} --dcgm-exporter-port ${dcgmPort} --label rack=r7 --label environment=staging`;
    const run = await node.sh(oneLiner(server.url, node.tokenFile(token), flags));
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain(`node exporter: already running on :${port}, reusing it`);
    expect(run.stderr).toContain(`dcgm exporter: none answers on :${dcgmPort}`);
    expect(run.stdout).toMatch(/registered: target \S+ \(created\) in group ml-training/);

    const { json: targets } = await server.admin('GET', '/api/v1/targets');
    expect(targets).toHaveLength(1);
    expect(targets[0]).toMatchObject({
      ip_address: '127.0.0.1',
      exporters: [{ type: 'node_exporter', port }],
      // the token's environment label wins over the node's --label
      labels: { rack: 'r7', environment: 'production', gpu_model: 'NVIDIA H100 80GB HBM3', gpu_count: '1', gpu_vendor: 'nvidia' },
      facts: { gpu_count: 1, gpu_model: 'NVIDIA H100 80GB HBM3' },
    });

    const state = node.path('etc/aami/node.json');
    expect(statSync(state).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(state, 'utf8'))).toMatchObject({ server: server.url, target_id: targets[0].id, node_credential: expect.stringMatching(/^aami_node_/) });
    expect(readFileSync(node.path('etc/cron.d/aami-dynamic-check'), 'utf8')).toContain(`* * * * * root AAMI_ROOT=${node.root} ${node.path('opt/aami/scripts/dynamic-check.sh')}`);
    // The first check ran and its results reach Prometheus through the node exporter.
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toContain('aami_check_success{check="gpu-count"} 1');
    expect(metrics).toContain('aami_gpu_count_match 1');
    expect(metrics).toMatch(/aami_disk_used_ratio\{mountpoint="\/"\} 0\.\d+/);
    expect((await server.admin('GET', `/api/v1/targets/${targets[0].id}`)).json.last_seen).not.toBeNull();

    // Re-running it changes nothing: no duplicate, no token use.
    const again = await node.sh(oneLiner(server.url, node.tokenFile(token), flags));
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('(unchanged)');
    expect((await server.admin('GET', '/api/v1/targets')).json).toHaveLength(1);
    expect((await server.admin('GET', `/api/v1/bootstrap-tokens/${id}`)).json.uses).toBe(1);
    expect(JSON.parse(readFileSync(state, 'utf8')).node_credential).toMatch(/^aami_node_/);
  });

  it('registers a CPU-only node and starts the node exporter itself where there is no systemd', async () => {
    requireBinary('prometheus-node-exporter', 'prometheus-node-exporter');
    const server = await configServer();
    const node = fakeNode({ gpu: false });
    const port = await freePort();
    const { token } = await server.token();
    const run = await node.sh(oneLiner(server.url, node.tokenFile(token), `--node-exporter-port ${port} --no-checks`), { AAMI_ASSUME_SYSTEMD: '' });
    node.stopExporter();
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toContain('no systemd: started');
    expect(run.stderr).not.toContain('dcgm');
    const [target] = (await server.admin('GET', '/api/v1/targets')).json;
    expect(target.labels).not.toHaveProperty('gpu_model');
    expect(target.facts.gpu_count).toBe(0);
    expect(existsSync(node.path('opt/aami/scripts/dynamic-check.sh'))).toBe(false);
  });

  it('uses a systemd timer for the checks on a host with systemd and no cron', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: false });
    const port = await runningNodeExporter(node.path('var/lib/node_exporter/textfile'));
    const calls = node.path('../systemctl.log');
    node.addStub('systemctl', `#!/usr/bin/env bash\necho "$*" >> ${calls}\n`);
    const { token } = await server.token();
    const run = await node.sh(oneLiner(server.url, node.tokenFile(token), `--node-exporter-port ${port}`), { AAMI_ASSUME_SYSTEMD: '1' });
    expect(run.code, run.stderr).toBe(0);
    expect(readFileSync(node.path('etc/systemd/system/aami-dynamic-check.timer'), 'utf8')).toContain('OnCalendar=minutely');
    expect(readFileSync(calls, 'utf8').trim().split('\n')).toEqual(['daemon-reload', 'enable --now aami-dynamic-check.timer']);
  });

  it('changes nothing with --dry-run and prints the request it would send', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: true });
    const { token } = await server.token();
    const run = await node.sh(oneLiner(server.url, node.tokenFile(token), '--dry-run --label rack=r1'));
    expect(run.code, run.stderr).toBe(0);
    const request = JSON.parse(run.stdout.slice(run.stdout.indexOf('{'), run.stdout.lastIndexOf('}') + 1));
    expect(request).toMatchObject({ labels: { rack: 'r1' }, facts: { gpu_model: 'NVIDIA H100 80GB HBM3', gpu_count: 1 } });
    expect(run.stdout).not.toContain(token);
    expect(readdirSync(node.root)).toEqual([]);
    expect((await server.admin('GET', '/api/v1/targets')).json).toEqual([]);

    // Without jq the request is encoded by python3: the same document.
    const python = await node.sh(oneLiner(server.url, node.tokenFile(token), '--dry-run --label rack=r1'), { AAMI_JSON_TOOL: 'python3' });
    expect(JSON.parse(python.stdout.slice(python.stdout.indexOf('{'), python.stdout.lastIndexOf('}') + 1))).toEqual(request);
  });

  it('says why when the token is expired, used up, revoked or wrong, or the server is down', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: false });
    const flags = '--skip-install --no-checks';
    const attempt = (token: string) => node.sh(oneLiner(server.url, node.tokenFile(token), flags));

    const used = await server.token({ max_uses: 1 });
    const first = await fetch(`${server.url}/api/v1/bootstrap/register`, {
      method: 'POST',
      headers: { authorization: `Bearer ${used.token}` },
      body: JSON.stringify({ hostname: 'another-node', ip_address: '10.1.1.1' }),
    });
    expect(first.status).toBe(201);
    const revoked = await server.token();
    await server.admin('POST', `/api/v1/bootstrap-tokens/${revoked.id}/revoke`);
    const expiring = await server.token({ expires_at: new Date(Date.now() + 1500).toISOString() });
    await new Promise((resolve) => setTimeout(resolve, 1600));

    const cases: Array<[string, string]> = [
      [used.token, 'the bootstrap token is used up'],
      [expiring.token, 'the bootstrap token has expired'],
      [revoked.token, 'the bootstrap token has been revoked'],
      [`aami_bootstrap_abcdefgh_${'x'.repeat(40)}`, 'the bootstrap token is not valid'],
    ];
    for (const [token, reason] of cases) {
      const run = await attempt(token);
      expect(run.code, reason).toBe(1);
      expect(run.stderr).toContain(reason);
    }
    expect((await server.admin('GET', '/api/v1/targets')).json).toHaveLength(1);

    await server.stop();
    const down = await node.sh(`bash ${join(ROOT, 'scripts/bootstrap.sh')} --token-file ${node.tokenFile(used.token)} --server ${server.url} ${flags}`);
    expect(down.code).toBe(1);
    expect(down.stderr).toContain(`cannot reach the config server at ${server.url}`);
  });

  it('is served by the server with a checksum, and every script passes shellcheck', async () => {
    const server = await configServer();
    for (const name of ['bootstrap.sh', 'preflight-check.sh', 'dynamic-check.sh']) {
      const body = await (await fetch(`${server.url}/scripts/${name}`)).text();
      expect(body).toBe(readFileSync(join(ROOT, 'scripts', name), 'utf8'));
      const sum = await (await fetch(`${server.url}/scripts/${name}.sha256`)).text();
      expect(sum).toBe(`${createHash('sha256').update(body).digest('hex')}  ${name}\n`);
    }
    expect(await (await fetch(`${server.url}/bootstrap.sh`)).text()).toBe(readFileSync(join(ROOT, 'scripts/bootstrap.sh'), 'utf8'));
    expect((await fetch(`${server.url}/scripts/..%2Fpackage.json`)).status).toBe(404);

    const shellcheck = requireBinary('shellcheck', 'shellcheck');
    const checks = readdirSync(join(ROOT, 'config-repo/checks')).filter((name) => existsSync(join(ROOT, 'config-repo/checks', name, 'check.sh')));
    const files = [...['bootstrap.sh', 'preflight-check.sh', 'dynamic-check.sh'].map((n) => join(ROOT, 'scripts', n)), ...checks.map((c) => join(ROOT, 'config-repo/checks', c, 'check.sh')), join(ROOT, 'test/stubs/nvidia-smi')];
    const node = fakeNode({ gpu: false });
    const result = await node.sh(`${shellcheck} ${files.join(' ')}`);
    expect(result.stdout + result.stderr).toBe('');
    expect(result.code).toBe(0);
  });
});
