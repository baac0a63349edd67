import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { pushFiles, ROOT } from './helpers.js';
import { configServer, fakeNode, freePort, waitFor } from './node-helpers.js';

const DYNAMIC_CHECK = join(ROOT, 'scripts/dynamic-check.sh');
const PREFLIGHT = join(ROOT, 'scripts/preflight-check.sh');

/** A server and a node registered with it (no exporter: the checks write textfiles all the same). */
async function registeredNode() {
  const server = await configServer();
  const node = fakeNode({ gpu: true });
  const { token } = await server.token();
  const run = await node.sh(`bash ${join(ROOT, 'scripts/bootstrap.sh')} --token-file ${node.tokenFile(token)} --server ${server.url} --skip-install --no-checks`);
  expect(run.code, run.stderr).toBe(0);
  const prom = (name: string) => {
    const file = node.path(`var/lib/node_exporter/textfile/check_${name}.prom`);
    return existsSync(file) ? readFileSync(file, 'utf8') : undefined;
  };
  /** Commit a change to the server's repo as a merged pull request would, and wait until the server has it. */
  const commitCheck = async (name: string, files: Record<string, string> | null) => {
    const changes = Object.fromEntries(Object.entries(files ?? { 'check.yaml': '', 'check.sh': '' }).map(([file, text]) => [`checks/${name}/${file}`, files ? text : null]));
    pushFiles(server.repo, changes, `${files ? 'Add' : 'Remove'} check ${name}`);
    await waitFor(`check ${name} to be ${files ? 'served' : 'gone'}`, async () => {
      const names = (await server.admin('GET', '/api/v1/checks')).json.map((c: { name: string }) => c.name);
      return names.includes(name) === Boolean(files);
    });
  };
  return { server, node, prom, commitCheck, dynamicCheck: () => node.sh(`bash ${DYNAMIC_CHECK}`) };
}

describe('dynamic-check.sh', () => {
  it('runs the checks that apply to the node and leaves their results in the textfile directory', async () => {
    const { node, prom, dynamicCheck, server } = await registeredNode();
    const run = await dynamicCheck();
    expect(run.code, run.stderr).toBe(0);
    // ml-training enables gpu-count and mount-points; every node gets disk-usage and nvme-health.
    expect(prom('gpu-count')).toContain('aami_gpu_count_match 1');
    expect(prom('disk-usage')).toMatch(/aami_check_success\{check="disk-usage"\} 1/);
    expect(prom('mount-points')).toContain('aami_mount_present{mountpoint="/data"}');
    expect(prom('nvme-health')).toContain('aami_check_success{check="nvme-health"} 1');
    // Results are staged under a name the collector ignores and renamed: nothing else is left there.
    expect(readdirSync(node.path('var/lib/node_exporter/textfile')).sort()).toEqual(['check_disk-usage.prom', 'check_gpu-count.prom', 'check_mount-points.prom', 'check_nvme-health.prom']);
    const [target] = (await server.admin('GET', '/api/v1/targets')).json;
    expect(target.last_seen).not.toBeNull();
    const effective = (await server.admin('GET', `/api/v1/targets/${target.id}/checks`)).json;
    expect(effective.map((c: { name: string }) => c.name)).toEqual(['disk-usage', 'gpu-count', 'mount-points', 'nvme-health']);
    expect(effective.find((c: { name: string }) => c.name === 'gpu-count').args).toEqual(['1']);
  });

  it('kills a check that hangs at its timeout and reports it failed', async () => {
    const { prom, commitCheck, dynamicCheck } = await registeredNode();
    await commitCheck('hangs', { 'check.yaml': 'timeout: 1s\n', 'check.sh': 'echo partial_output 1\nsleep 30\n' });
    const started = Date.now();
    const run = await dynamicCheck();
    expect(run.code).toBe(0);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(prom('hangs')).toContain('aami_check_success{check="hangs"} 0');
    expect(prom('hangs')).toContain('aami_check_timed_out{check="hangs"} 1');
    expect(prom('hangs')).not.toContain('partial_output');
    expect(run.stderr).toContain('check hangs failed (exit 124, timed out after 1s)');
  });

  it('refuses a script whose hash does not match, when the server cannot confirm it', async () => {
    const { server, node, prom, dynamicCheck } = await registeredNode();
    expect((await dynamicCheck()).code).toBe(0);
    const cached = node.path('var/lib/aami/checks/disk-usage.sh');
    writeFileSync(cached, `${readFileSync(cached, 'utf8')}\ncurl -s http://attacker.invalid/ || true\n`);
    // Force it to run again now rather than at its next interval.
    rmSync(node.path('var/lib/aami/checks/disk-usage.last'));
    await server.stop();
    const run = await dynamicCheck();
    expect(run.stderr).toContain('running the last list fetched');
    expect(run.stderr).toContain('refusing to run check disk-usage');
    expect(prom('disk-usage')).toContain('aami_check_refused{check="disk-usage"} 1');
    expect(prom('gpu-count')).toContain('aami_check_success{check="gpu-count"} 1');
  });

  it('fetches a good copy again when the server is there to confirm it', async () => {
    const { node, prom, dynamicCheck } = await registeredNode();
    expect((await dynamicCheck()).code).toBe(0);
    const cached = node.path('var/lib/aami/checks/disk-usage.sh');
    writeFileSync(cached, 'echo tampered 1\n');
    rmSync(node.path('var/lib/aami/checks/disk-usage.last'));
    expect((await dynamicCheck()).code).toBe(0);
    expect(prom('disk-usage')).toContain('aami_disk_used_ratio');
    expect(readFileSync(cached, 'utf8')).not.toContain('tampered');
  });

  it('removes the results of a check that no longer applies', async () => {
    const { prom, commitCheck, dynamicCheck } = await registeredNode();
    await commitCheck('short-lived', { 'check.yaml': 'description: here for a while\n', 'check.sh': 'echo short_lived 1\n' });
    await dynamicCheck();
    expect(prom('short-lived')).toContain('short_lived 1');
    await commitCheck('short-lived', null);
    const run = await dynamicCheck();
    expect(prom('short-lived')).toBeUndefined();
    expect(run.stderr).toContain('removed the results of check short-lived');
  });

  it('never runs twice at once', async () => {
    const { node, dynamicCheck } = await registeredNode();
    const lock = node.path('var/lib/aami/dynamic-check.lock');
    mkdirSync(node.path('var/lib/aami'), { recursive: true });
    const holder = node.sh(`exec 9>${lock}; flock 9; sleep 3`);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const run = await dynamicCheck();
    expect(run.code).toBe(0);
    expect(run.stderr).toContain('the previous run is still going');
    await holder;
  });
});

describe('preflight-check.sh', () => {
  it('passes on a host that can be registered, in text and JSON', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: true });
    const [nodePort, dcgmPort] = [await freePort(), await freePort()];
    const text = await node.sh(`bash ${PREFLIGHT} --mode node --server ${server.url} --node-exporter-port ${nodePort} --dcgm-exporter-port ${dcgmPort}`);
    expect(text.stdout).toMatch(/^PASS +server +/m);
    expect(text.stdout).toMatch(/^PASS +gpu +NVIDIA: 1 x NVIDIA H100 80GB HBM3$/m);
    expect(text.stdout).toMatch(new RegExp(`^PASS +port_${nodePort} +free$`, 'm'));
    expect(text.code, text.stdout).toBe(0);
    const json = await node.sh(`bash ${PREFLIGHT} --mode node --server ${server.url} --json`);
    expect(JSON.parse(json.stdout)).toContainEqual({ status: 'PASS', check: 'curl', detail: expect.any(String) });
  });

  it('fails when the server cannot be reached, and on a usage error', async () => {
    const server = await configServer();
    await server.stop();
    const node = fakeNode({ gpu: false });
    const run = await node.sh(`bash ${PREFLIGHT} --mode node --server ${server.url}`);
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/^FAIL +server +cannot reach/m);
    expect(run.stdout).toMatch(/^PASS +gpu +none found: a CPU-only node$/m);
    expect((await node.sh(`bash ${PREFLIGHT} --server ${server.url}`)).code).toBe(2);
  });
});
