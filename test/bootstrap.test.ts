import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startServer } from '../src/server.js';
import { onCleanup, ROOT, tempDir } from './helpers.js';
import { ADMIN, configServer, DCGM_STAND_IN, dcgmTarball, fakeNode, freePort, requireBinary, runningNodeExporter, serverConfig, waitFor } from './node-helpers.js';
import { execStartArgv, SYSTEMD_ARGV } from './systemd-helpers.js';

/** Stop a process at the end of the test, if it still runs. */
const stopAtEnd = (pid: number) =>
  onCleanup(() => {
    try {
      process.kill(pid);
    } catch {
      // already gone
    }
  });

/** The guide's one-liner, with the token in a file so it stays out of `ps`. */
const oneLiner = (server: string, tokenFile: string, flags = '') =>
  `curl -fsSL ${server}/bootstrap.sh | bash -s -- --token-file ${tokenFile} --server ${server} ${flags}`;
const BOOTSTRAP = join(ROOT, 'scripts/bootstrap.sh');
const machineHash = (id: string) => createHash('sha256').update(`aami-machine-id-v2:${id}`).digest('hex');
/** The JSON document a --dry-run prints. */
const dryRunBody = (stdout: string) => JSON.parse(stdout.slice(stdout.indexOf('{'), stdout.lastIndexOf('}') + 1));

/**
 * systemd is not PID 1 here: a systemctl that records its calls and, as systemd does, starts
 * a service's ExecStart= (with the argv systemd reads from the unit) at `enable --now UNIT`
 * only when it is not running already, and stops it and starts it again at `restart UNIT`.
 * Every process it started is stopped at the end of the test.
 */
function recordingSystemctl(node: ReturnType<typeof fakeNode>) {
  const calls = node.path('../systemctl.log');
  const pids = node.path('../unit.pids');
  const units = node.path('etc/systemd/system');
  node.addStub(
    'systemctl',
    `#!/usr/bin/env bash\necho "$*" >> ${calls}\n` +
      `running() { local pid; pid=$(cat "${pids}.$1" 2>/dev/null) && kill -0 "$pid" 2>/dev/null; }\n` +
      `stop() { if running "$1"; then kill "$(cat "${pids}.$1")"; fi; rm -f "${pids}.$1"; }\n` +
      `start() {\n  grep -qs '^ExecStart=' "${units}/$1" || return 0\n` +
      `  mapfile -d '' argv < <(/usr/bin/python3 ${SYSTEMD_ARGV} "${units}/$1")\n` +
      `  [ "\${#argv[@]}" -gt 0 ] || exit 1\n` +
      `  "\${argv[@]}" </dev/null >/dev/null 2>&1 & echo $! >> ${pids}; echo $! > "${pids}.$1"\n}\n` +
      `case "$1" in\n  enable) if [ "$2" = --now ] && ! running "$3"; then start "$3"; fi ;;\n  restart) stop "$2"; start "$2" ;;\nesac\n`,
  );
  onCleanup(() => {
    for (const pid of existsSync(pids) ? readFileSync(pids, 'utf8').trim().split('\n') : []) {
      try {
        process.kill(Number(pid));
      } catch {
        // already gone
      }
    }
  });
  return { calls: () => (existsSync(calls) ? readFileSync(calls, 'utf8').trim().split('\n') : []) };
}

/**
 * The DCGM stand-in running on a free loopback port before bootstrap (not installed by AAMI),
 * stopped at the end of the test (or by the test, through `child`). A copy outside this
 * package, which would load it as an ES module.
 */
async function runningDcgmExporter() {
  const port = await freePort();
  const binary = join(tempDir('aami-dcgm-'), 'dcgm-exporter');
  copyFileSync(DCGM_STAND_IN, binary);
  const child = spawn(binary, ['--address', `127.0.0.1:${port}`], { stdio: 'ignore' });
  onCleanup(() => {
    child.kill();
  });
  await waitFor('dcgm exporter', async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).ok);
  return { port, child };
}

/**
 * A GPU node as under systemd (the recording systemctl), with the DCGM stand-in on PATH and a
 * node exporter running; `bootstrap` runs the guide's one-liner for it.
 */
async function systemdGpuNode() {
  const server = await configServer();
  const node = fakeNode({ gpu: true });
  node.addStub('dcgm-exporter', readFileSync(DCGM_STAND_IN, 'utf8'));
  const systemctl = recordingSystemctl(node);
  const port = await runningNodeExporter(node.path('var/lib/node_exporter/textfile'));
  const { token } = await server.token();
  const bootstrap = (hostname: string, dcgmPort: number) =>
    node.sh(oneLiner(server.url, node.tokenFile(token), `--hostname ${hostname} --node-exporter-port ${port} --dcgm-exporter-port ${dcgmPort} --no-checks`), { AAMI_ASSUME_SYSTEMD: '1' });
  return { server, node, systemctl, bootstrap };
}

describe('bootstrap.sh', { timeout: 60_000 }, () => {
  it('registers a GPU node, reuses its running exporter, keeps the credential root-only and runs the first check', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: true, cron: true });
    const port = await runningNodeExporter(node.path('var/lib/node_exporter/textfile'));
    const dcgmPort = await freePort();
    const { token, id } = await server.token();
    const flags = `--hostname GPU-Node-01 --node-exporter-port ${port} --dcgm-exporter-port ${dcgmPort} --label rack=r7 --label environment=staging`;
    const run = await node.sh(oneLiner(server.url, node.tokenFile(token), flags));
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain(`node exporter: already running on :${port}, reusing it`);
    expect(run.stderr).toContain(`dcgm exporter: none answers on :${dcgmPort} and none can be installed here`);
    expect(run.stdout).toMatch(/registered: target gpu-node-01 \(created\) in group ml-training/);

    const { json: targets } = await server.admin('GET', '/api/v1/targets');
    expect(targets).toHaveLength(1);
    expect(targets[0]).toMatchObject({
      id: 'gpu-node-01',
      ip_address: '127.0.0.1',
      exporters: [{ type: 'node_exporter', port }],
      // the node's own labels, and the token's environment label winning over its --label
      node_labels: { rack: 'r7', gpu_model: 'NVIDIA H100 80GB HBM3', gpu_count: '1', gpu_vendor: 'nvidia' },
      effective_labels: { rack: 'r7', environment: 'production', gpu_model: 'NVIDIA H100 80GB HBM3', gpu_count: '1', gpu_vendor: 'nvidia' },
      facts: { gpu_count: 1, gpu_model: 'NVIDIA H100 80GB HBM3' },
    });

    const state = node.path('etc/aami/node.json');
    expect(statSync(state).mode & 0o777).toBe(0o600);
    expect(statSync(node.path('etc/aami')).mode & 0o777).toBe(0o700);
    const credential = JSON.parse(readFileSync(state, 'utf8')).node_credential;
    expect(JSON.parse(readFileSync(state, 'utf8'))).toMatchObject({ server: server.url, target_id: 'gpu-node-01', node_credential: expect.stringMatching(/^aami_node_/) });
    expect(readFileSync(node.path('etc/cron.d/aami-dynamic-check'), 'utf8')).toContain(`* * * * * root AAMI_ROOT=${node.root} ${node.path('opt/aami/scripts/dynamic-check.sh')} >/dev/null 2>&1`);
    expect(statSync(node.path('opt/aami/uninstall.sh')).mode & 0o777).toBe(0o755);
    // The first check ran, said so, and its results reach Prometheus through the node exporter.
    expect(run.stdout).toMatch(/^gpu-count: ran$/m);
    expect(run.stdout).toMatch(/^mount: ran$/m);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toContain('aami_check_success{check="gpu-count"} 1');
    expect(metrics).toContain('aami_gpu_count_match 1');
    expect(run.stderr).not.toContain('does not read');
    expect(metrics).toContain('aami_mount_present{mountpoint="/"} 1');
    expect(metrics).toMatch(/aami_disk_used_ratio\{mountpoint="\/"\} 0\.\d+/);
    expect((await server.admin('GET', '/api/v1/targets/gpu-node-01')).json.last_seen).not.toBeNull();

    // Its last line is a command the node can run to see itself, and it works as printed.
    const verify = run.stdout.trim().split('\n').at(-1)!.replace(/^\[aami\] +/, '');
    // The credential reaches curl through a file descriptor, never its arguments (`ps`).
    expect(verify).toBe(`jq -r '"Authorization: Bearer " + .node_credential' ${state} | curl -s -H @- "${server.url}/api/v1/targets?hostname=gpu-node-01"`);
    const self = await node.sh(verify);
    expect(JSON.parse(self.stdout)).toMatchObject([{ id: 'gpu-node-01' }]);
    expect(run.stdout + run.stderr).not.toContain(credential);

    // Re-running it updates through the node credential: no token use, no new credential, no duplicate.
    const again = await node.sh(`bash ${BOOTSTRAP} --server ${server.url} ${flags}`);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('(unchanged)');
    expect((await server.admin('GET', '/api/v1/targets')).json).toHaveLength(1);
    expect((await server.admin('GET', `/api/v1/bootstrap-tokens/${id}`)).json.uses).toBe(1);
    expect(JSON.parse(readFileSync(state, 'utf8')).node_credential).toBe(credential);
  });

  it('names the machine by a hash of its machine-id (or product_uuid), and the host by --hostname or AAMI_HOSTNAME', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: false, machineId: '6f1e0a4c2b8d4e0f9a7b3c5d1e2f4a6b' });
    const { token } = await server.token();
    const dryRun = (flags: string, env: Record<string, string> = {}) => node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --dry-run ${flags}`, env);

    const named = await dryRun('--hostname Rack7-Node.Example.COM');
    expect(named.code, named.stderr).toBe(0);
    expect(dryRunBody(named.stdout)).toMatchObject({ hostname: 'rack7-node.example.com', machine_id: machineHash('6f1e0a4c2b8d4e0f9a7b3c5d1e2f4a6b') });
    expect(named.stdout).not.toContain('6f1e0a4c2b8d4e0f9a7b3c5d1e2f4a6b');
    expect(dryRunBody((await dryRun('', { AAMI_HOSTNAME: 'from-env' })).stdout).hostname).toBe('from-env');

    // A cloned image that has not booted yet has an empty machine-id: the DMI product uuid stands in.
    writeFileSync(node.path('etc/machine-id'), '\n');
    mkdirSync(node.path('sys/class/dmi/id'), { recursive: true });
    writeFileSync(node.path('sys/class/dmi/id/product_uuid'), ' ec2a1b2c-3d4e-5f60-7182-93a4b5c6d7e8 \n');
    expect(dryRunBody((await dryRun('--hostname n1')).stdout).machine_id).toBe(machineHash('ec2a1b2c-3d4e-5f60-7182-93a4b5c6d7e8'));
    rmSync(node.path('sys'), { recursive: true });
    const unknown = await dryRun('--hostname n1');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('cannot identify this machine');

    // A name that is not RFC 1123 never reaches the server.
    for (const bad of ['under_score', '-leading', 'a..b', `${'x'.repeat(64)}.example`]) {
      const run = await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --skip-install --no-checks --hostname ${bad}`);
      expect(run.code, bad).toBe(1);
      expect(run.stderr).toContain('--hostname must be an RFC 1123 host name');
    }
    expect((await server.admin('GET', '/api/v1/targets')).json).toEqual([]);
  });

  it('refuses to take over a host name another machine holds, and re-enrols its own machine', async () => {
    const server = await configServer();
    const { token, id } = await server.token();
    const flags = '--hostname ubuntu --skip-install --no-checks';
    const first = fakeNode({ gpu: false });
    expect((await first.sh(`bash ${BOOTSTRAP} --token-file ${first.tokenFile(token)} --server ${server.url} ${flags}`)).code).toBe(0);

    // A clone of the same image, same host name, another machine.
    const clone = fakeNode({ gpu: false });
    const taken = await clone.sh(`bash ${BOOTSTRAP} --token-file ${clone.tokenFile(token)} --server ${server.url} ${flags}`);
    expect(taken.code).toBe(1);
    const errors = taken.stderr.split('\n').filter((line) => line.includes('ERROR'));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBe("[aami] ERROR: another machine holds this host name or address: choose another name (bootstrap.sh --hostname); this machine's own host re-enrols with its machine identity (bootstrap.sh sends it), else an admin deletes the old target (hostname ubuntu, address 127.0.0.1)");
    // Under another name it enrols (on its own exporter port: both are 127.0.0.1 here).
    const renamed = await clone.sh(`bash ${BOOTSTRAP} --token-file ${clone.tokenFile(token)} --server ${server.url} --skip-install --no-checks --hostname ubuntu-2 --node-exporter-port 9101`);
    expect(renamed.code, renamed.stderr).toBe(0);

    // The first machine lost its state (reinstalled): the same machine gets its name back.
    rmSync(first.path('etc/aami'), { recursive: true });
    const back = await first.sh(`bash ${BOOTSTRAP} --token-file ${first.tokenFile(token)} --server ${server.url} ${flags}`);
    expect(back.code, back.stderr).toBe(0);
    expect(back.stdout).toContain('registered: target ubuntu (reenrolled)');
    expect((await server.admin('GET', '/api/v1/targets')).json.map((t: { id: string }) => t.id).sort()).toEqual(['ubuntu', 'ubuntu-2']);
    expect((await server.admin('GET', `/api/v1/bootstrap-tokens/${id}`)).json.uses).toBe(2);

    // A disk cloned after bootstrap carries the first machine's credential: refused for this
    // machine, so it enrols under its own name instead of updating the first one's target.
    const disk = fakeNode({ gpu: false });
    mkdirSync(disk.path('etc/aami'), { recursive: true, mode: 0o700 });
    writeFileSync(disk.path('etc/aami/node.json'), readFileSync(first.path('etc/aami/node.json')), { mode: 0o600 });
    const cloned = await disk.sh(`bash ${BOOTSTRAP} --token-file ${disk.tokenFile(token)} --server ${server.url} --skip-install --no-checks --hostname ubuntu-3 --node-exporter-port 9102`);
    expect(cloned.code, cloned.stderr).toBe(0);
    expect(cloned.stdout).toContain('was issued to another machine (a cloned disk image?)');
    expect(cloned.stdout).toContain('registered: target ubuntu-3 (created)');
    expect((await server.admin('GET', '/api/v1/targets/ubuntu')).json.ip_address).toBe('127.0.0.1');
  });

  it('enrols again with the token when the server no longer accepts the node credential', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: false });
    const { token } = await server.token();
    const run = () => node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --hostname n1 --skip-install --no-checks`);
    expect((await run()).code).toBe(0);
    const before = JSON.parse(readFileSync(node.path('etc/aami/node.json'), 'utf8')).node_credential;
    expect((await server.admin('DELETE', '/api/v1/targets/n1')).status).toBe(200);
    const again = await run();
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain("the server does not accept this node's credential (its target was deleted");
    expect(again.stdout).toContain('registered: target n1 (created)');
    expect(JSON.parse(readFileSync(node.path('etc/aami/node.json'), 'utf8')).node_credential).not.toBe(before);

    // Without a token it says what it needs.
    await server.admin('DELETE', '/api/v1/targets/n1');
    const tokenless = await node.sh(`bash ${BOOTSTRAP} --server ${server.url} --hostname n1 --skip-install --no-checks`);
    expect(tokenless.code).toBe(1);
    expect(tokenless.stderr).toContain("does not accept this node's credential and no bootstrap token was given");
  });

  it.each([
    ['an installed binary on PATH', 'path'],
    ['a tarball in the server downloads', 'tarball'],
    ["NVIDIA's package where apt has its repository (apt stubbed: no such repository here)", 'package'],
  ])('installs and starts a DCGM exporter from %s and registers it', async (_, source) => {
    const downloads = tempDir('aami-downloads-');
    if (source === 'tarball') dcgmTarball(downloads);
    const server = await configServer({ downloadsDir: downloads });
    const node = fakeNode({ gpu: true });
    if (source === 'path') node.addStub('dcgm-exporter', readFileSync(DCGM_STAND_IN, 'utf8'));
    if (source === 'package') {
      // apt-cache knows the package (as `apt-cache policy` prints it); apt-get "installs" the stand-in on PATH.
      node.addStub('apt-cache', `#!/usr/bin/env bash
[ "$*" = "policy datacenter-gpu-manager-exporter" ] && printf 'datacenter-gpu-manager-exporter:\n  Installed: (none)\n  Candidate: 1:4.2.3-1\n  Version table:\n'
exit 0
`);
      node.addStub('apt-get', `#!/usr/bin/env bash
[ "$*" = "install -y -qq datacenter-gpu-manager-exporter" ] || exit 100
install -m 0755 ${DCGM_STAND_IN} ${join(node.bin, 'dcgm-exporter')}
`);
    }
    const port = await runningNodeExporter(node.path('var/lib/node_exporter/textfile'));
    const dcgmPort = await freePort();
    const { token } = await server.token();
    const run = await node.sh(oneLiner(server.url, node.tokenFile(token), `--hostname g1 --node-exporter-port ${port} --dcgm-exporter-port ${dcgmPort} --no-checks`));
    expect(run.code, run.stderr).toBe(0);
    const binary = source === 'tarball' ? node.path('usr/local/bin/dcgm-exporter') : join(node.bin, 'dcgm-exporter');
    if (source === 'tarball') expect(run.stdout).toContain(`dcgm-exporter: installing dcgm-exporter-linux-`);
    if (source === 'package') expect(readFileSync(node.path('etc/aami/installed'), 'utf8')).toContain('package datacenter-gpu-manager-exporter\n');
    expect(run.stderr).toContain(`no systemd: started ${binary} in the background`);
    const metrics = await (await fetch(`http://127.0.0.1:${dcgmPort}/metrics`)).text();
    expect(metrics).toMatch(/^DCGM_FI_DEV_GPU_TEMP\{gpu="7",.*\} 35$/m);
    const target = (await server.admin('GET', '/api/v1/targets/g1')).json;
    expect(target.exporters).toEqual([
      expect.objectContaining({ type: 'node_exporter', port }),
      expect.objectContaining({ type: 'dcgm_exporter', port: dcgmPort }),
    ]);
    // uninstall.sh will stop it: bootstrap wrote down that it started it.
    expect(readFileSync(node.path('etc/aami/installed'), 'utf8')).toContain(`pid /etc/aami/dcgm-exporter.pid ${binary}`);

    // A re-run finds it running and knows it is its own.
    const again = await node.sh(`bash ${BOOTSTRAP} --server ${server.url} --hostname g1 --node-exporter-port ${port} --dcgm-exporter-port ${dcgmPort} --no-checks`);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`dcgm exporter: running on :${dcgmPort} (installed by AAMI)`);

    // Leaving: the exporter it started stops; a package it installed stays, named.
    const uninstall = await node.sh(node.path('opt/aami/uninstall.sh'));
    expect(uninstall.code, uninstall.stderr).toBe(0);
    expect(uninstall.stdout).toContain(`stopped ${binary}`);
    if (source === 'package') expect(uninstall.stdout).toContain('package datacenter-gpu-manager-exporter, installed by AAMI (apt-get remove datacenter-gpu-manager-exporter to remove it)');
    await expect(fetch(`http://127.0.0.1:${dcgmPort}/metrics`)).rejects.toThrow();
  });

  it('says exactly what to install when no DCGM exporter can be had', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: true });
    const port = await runningNodeExporter(node.path('var/lib/node_exporter/textfile'));
    const { token } = await server.token();
    const run = await node.sh(oneLiner(server.url, node.tokenFile(token), `--hostname g2 --node-exporter-port ${port} --dcgm-exporter-port ${await freePort()} --no-checks`));
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/install NVIDIA's dcgm-exporter \(apt-get install datacenter-gpu-manager-exporter from NVIDIA's CUDA repository, or put dcgm-exporter-linux-\w+\.tar\.gz and its \.sha256 in the config server's --downloads-dir\), then re-run this script/);
    expect((await server.admin('GET', '/api/v1/targets/g2')).json.exporters).toEqual([expect.objectContaining({ type: 'node_exporter' })]);
  });

  it('keeps the DCGM exporter a GPU node was registered with when it does not answer at a re-run (before the driver, at boot): down in Prometheus, not gone', async () => {
    const server = await configServer();
    const { token } = await server.token();
    const { port: dcgmPort, child: dcgm } = await runningDcgmExporter();
    const exporters = async (hostname: string) => (await server.admin('GET', `/api/v1/targets/${hostname}`)).json.exporters.map((e: { type: string }) => e.type);
    const node = fakeNode({ gpu: true });
    // Each node its own node exporter port: both are at 127.0.0.1.
    const bootstrap = async (which: ReturnType<typeof fakeNode>, hostname: string, nodePort: number) =>
      which.sh(`bash ${BOOTSTRAP} --token-file ${which.tokenFile(token)} --server ${server.url} --hostname ${hostname} --node-exporter-port ${nodePort} --dcgm-exporter-port ${dcgmPort} --skip-install --no-checks`);
    const nodePort = await freePort();
    expect((await bootstrap(node, 'gpu-keep', nodePort)).code).toBe(0);
    expect(await exporters('gpu-keep')).toEqual(['node_exporter', 'dcgm_exporter']);
    expect(JSON.parse(readFileSync(node.path('etc/aami/node.json'), 'utf8')).dcgm_exporter_port).toBe(dcgmPort);
    dcgm.kill();
    await once(dcgm, 'exit');
    const again = await bootstrap(node, 'gpu-keep', nodePort);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain("it stays in this node's registration as before (Prometheus shows it down until it answers)");
    expect(await exporters('gpu-keep')).toEqual(['node_exporter', 'dcgm_exporter']);
    // A node never registered with one is registered without it.
    const fresh = fakeNode({ gpu: true });
    const first = await bootstrap(fresh, 'gpu-fresh', await freePort());
    expect(first.code, first.stderr).toBe(0);
    expect(await exporters('gpu-fresh')).toEqual(['node_exporter']);
    expect(JSON.parse(readFileSync(fresh.path('etc/aami/node.json'), 'utf8'))).not.toHaveProperty('dcgm_exporter_port');
  });

  it('reads the GPUs of an AMD host from rocm-smi', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: 'amd' });
    const { token } = await server.token();
    const run = await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --hostname mi300x-01 --dry-run`);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('8 GPU (AMD Instinct MI300X)');
    expect(run.stdout).toContain("AAMI installs no AMD exporter; GPU metrics need AMD's device-metrics-exporter");
    expect(dryRunBody(run.stdout)).toMatchObject({
      labels: { gpu_vendor: 'amd', gpu_count: '8', gpu_model: 'AMD Instinct MI300X' },
      facts: { gpu_vendor: 'amd', gpu_count: 8, gpu_model: 'AMD Instinct MI300X' },
      exporters: [{ type: 'node_exporter', port: 9100 }],
    });
  });

  it('gives up on a GPU tool that hangs (a GPU fallen off the bus), even one deaf to SIGTERM, and registers nothing rather than a node without GPUs', async () => {
    const server = await configServer();
    const { token } = await server.token();
    // The real `timeout`, its 30 s bound stood in for by 1 s (a stub first on the node's PATH shortens only that call).
    const timeout = execFileSync('sh', ['-c', 'command -v timeout'], { encoding: 'utf8' }).trim();
    const shorter = `#!/bin/sh\nif [ "$1 $2 $3" = "-k 5 30" ]; then shift 3; exec ${timeout} -k 1 1 "$@"; fi\nexec ${timeout} "$@"\n`;
    for (const [gpu, tool] of [[true, 'nvidia-smi'], ['amd', 'rocm-smi']] as const) {
      const node = fakeNode({ gpu });
      node.addStub(tool, "#!/bin/sh\ntrap '' TERM\nexec sleep 600\n");
      node.addStub('timeout', shorter);
      const run = await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --hostname hung-${tool} --skip-install --no-checks`);
      expect(run.code, run.stderr).toBe(1);
      expect(run.stderr).toContain(`${tool} did not answer in 30 s`);
      expect(run.stderr).toContain('not registering this node as one without GPUs');
      // Nothing of the node was kept: no credential, no state.
      expect(existsSync(node.path('etc/aami'))).toBe(false);
    }
    expect((await server.admin('GET', '/api/v1/targets')).json).toEqual([]);
  });

  it('says so when the node exporter it reuses reads another textfile directory: the check results would reach no one', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: false, cron: true });
    // A distribution's package: its own directory.
    const port = await runningNodeExporter(join(tempDir('aami-packaged-'), 'node-exporter'));
    const { token } = await server.token();
    const run = await node.sh(oneLiner(server.url, node.tokenFile(token), `--hostname reused-01 --node-exporter-port ${port}`));
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain(`node exporter: already running on :${port}, reusing it`);
    expect(run.stdout).toMatch(/^mount: ran$/m);
    expect(run.stderr).toContain(`checks: the node exporter on :${port} does not read ${node.path('var/lib/node_exporter/textfile')}`);
  });

  it('finds nvidia-smi where NVIDIA\'s images put it, off the PATH cloud-init and systemd give', async () => {
    const server = await configServer();
    const { token } = await server.token();
    const node = fakeNode({ gpu: true });
    mkdirSync(node.path('usr/local/nvidia/bin'), { recursive: true });
    copyFileSync(join(node.bin, 'nvidia-smi'), node.path('usr/local/nvidia/bin/nvidia-smi'));
    rmSync(join(node.bin, 'nvidia-smi'));
    const run = await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --hostname gpu-path --dry-run`);
    expect(run.code, run.stderr).toBe(0);
    expect(dryRunBody(run.stdout)).toMatchObject({ facts: { gpu_vendor: 'nvidia', gpu_count: 1, gpu_model: 'NVIDIA H100 80GB HBM3' } });
  });

  it('on a re-run, stops rather than register again without GPUs a node whose NVIDIA driver fails while its PCI bus holds NVIDIA GPUs', async () => {
    const server = await configServer();
    const { token } = await server.token();
    const node = fakeNode({ gpu: true });
    const device = (address: string, vendor: string, klass: string, driver?: string) => {
      const dir = node.path(`sys/bus/pci/devices/${address}`);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'vendor'), `${vendor}\n`);
      writeFileSync(join(dir, 'class'), `${klass}\n`);
      if (driver) symlinkSync(`../../../bus/pci/drivers/${driver}`, join(dir, 'driver'));
    };
    device('0000:18:00.0', '0x10de', '0x030200', 'nvidia'); // an H100 (3D controller)
    device('0000:05:00.0', '0x10de', '0x068000'); // an NVSwitch (a bridge: not a GPU)
    device('0000:03:00.0', '0x1a03', '0x030000'); // the BMC's VGA
    device('0000:3b:00.0', '0x10de', '0x030200', 'vfio-pci'); // a GPU passed to a guest: not this host's
    const bootstrap = (flags = '--dry-run') => node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --hostname sick-gpu --skip-install --no-checks ${flags}`);
    const registered = await bootstrap('');
    expect(registered.code, registered.stderr).toBe(0);
    expect((await server.admin('GET', '/api/v1/targets/sick-gpu')).json.node_labels).toMatchObject({ gpu_vendor: 'nvidia', gpu_count: '1' });
    // A driver and library out of step after an update; a GPU lost with an Xid error, the others still listed.
    for (const stub of ['echo "Failed to initialize NVML: Driver/library version mismatch"\nexit 18\n', 'printf \'1, NVIDIA H100 80GB HBM3\\n\'\nexit 15\n']) {
      node.addStub('nvidia-smi', `#!/bin/sh\n${stub}`);
      const run = await bootstrap('');
      expect(run.code, stub).toBe(1);
      expect(run.stderr).toMatch(/nvidia-smi failed \(exit 1[58]\) on a host with 1 NVIDIA GPU\(s\) on its PCI bus .*not registering this node again as one without GPUs/);
    }
    expect((await server.admin('GET', '/api/v1/targets/sick-gpu')).json.node_labels).toMatchObject({ gpu_vendor: 'nvidia', gpu_count: '1' });
    // A first enrolment goes on without GPUs, said so: the host is watched meanwhile.
    const fresh = fakeNode({ gpu: true });
    fresh.addStub('nvidia-smi', '#!/bin/sh\nexit 9\n');
    mkdirSync(fresh.path('sys/bus/pci/devices/0000:18:00.0'), { recursive: true });
    writeFileSync(fresh.path('sys/bus/pci/devices/0000:18:00.0/vendor'), '0x10de\n');
    writeFileSync(fresh.path('sys/bus/pci/devices/0000:18:00.0/class'), '0x030200\n');
    const first = await fresh.sh(`bash ${BOOTSTRAP} --token-file ${fresh.tokenFile(token)} --server ${server.url} --hostname fresh-gpu --dry-run`);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toContain('nvidia-smi failed (exit 9) on a host with 1 NVIDIA GPU(s) on its PCI bus');
    expect(first.stderr).toContain('registering it as a node without GPUs for now');
    // No NVIDIA GPU of this host's on the bus (an image with the driver's tools, a hypervisor's passthrough GPUs): a node without GPUs, told.
    rmSync(node.path('sys/bus/pci/devices/0000:18:00.0'), { recursive: true });
    const cpu = await bootstrap();
    expect(cpu.code, cpu.stderr).toBe(0);
    expect(cpu.stderr).toContain('nvidia-smi is installed but lists no GPU, and the PCI bus holds none');
    expect(dryRunBody(cpu.stdout).facts.gpu_count).toBe(0);
  });

  it('registers a CPU-only node and starts the node exporter itself where there is no systemd', async () => {
    requireBinary('prometheus-node-exporter', 'prometheus-node-exporter');
    const server = await configServer();
    const node = fakeNode({ gpu: false });
    const port = await freePort();
    const { token } = await server.token();
    const run = await node.sh(oneLiner(server.url, node.tokenFile(token), `--hostname cpu-01 --node-exporter-port ${port} --no-checks`));
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toContain('no systemd: started');
    expect(run.stdout + run.stderr).toContain("checks: skipped (--no-checks); nothing sends this node's heartbeat either (dynamic-check.sh does): the server lists this node as stale");
    expect(run.stderr).not.toContain('dcgm');
    const target = (await server.admin('GET', '/api/v1/targets/cpu-01')).json;
    expect(target.effective_labels).not.toHaveProperty('gpu_model');
    expect(target.facts.gpu_count).toBe(0);
    expect((await fetch(`http://127.0.0.1:${port}/metrics`)).ok).toBe(true);
    expect(existsSync(node.path('opt/aami/scripts/dynamic-check.sh'))).toBe(false);
  });

  it('asks the exporter it starts on the address it listens on (AAMI_LISTEN_ADDRESS), and refuses numbers with a leading zero before it installs anything', async () => {
    requireBinary('prometheus-node-exporter', 'prometheus-node-exporter');
    const server = await configServer();
    const node = fakeNode({ gpu: false });
    const port = await freePort();
    const { token } = await server.token();
    for (const [flags, env, said] of [
      ['--node-exporter-port 09100', {}, 'ports must be numbers from 1 to 65535: 09100'],
      ['', { AAMI_PROBE_SECONDS: '09' }, 'AAMI_PROBE_SECONDS must be a number of seconds'],
      ['', { AAMI_RETRY_SECONDS: '010' }, 'AAMI_RETRY_SECONDS must be a number of seconds'],
    ] as const) {
      const refused = await node.sh(oneLiner(server.url, node.tokenFile(token), `--hostname lz-01 --no-checks ${flags}`), env);
      expect(refused.code, said).toBe(1);
      expect(refused.stderr).toContain(said);
    }
    expect(node.tree()).toEqual(['etc', 'etc/machine-id']);
    // A loopback address other than 127.0.0.1: the exporter is not on 127.0.0.1, and bootstrap finds it all the same.
    const run = await node.sh(oneLiner(server.url, node.tokenFile(token), `--hostname lz-01 --node-exporter-port ${port} --no-checks`), { AAMI_LISTEN_ADDRESS: '127.0.0.2' });
    expect(run.code, run.stderr).toBe(0);
    expect((await fetch(`http://127.0.0.2:${port}/metrics`)).ok).toBe(true);
    await expect(fetch(`http://127.0.0.1:${port}/metrics`)).rejects.toThrow();
  });

  it('keeps the node credential and the bootstrap token out of every command line and of the processes it starts, with jq and with python3', async () => {
    const server = await configServer();
    for (const tool of ['jq', 'python3']) {
      const node = fakeNode({ gpu: false });
      // The JSON tool and curl write down the argv they are given (and curl, its environment), then run the real ones.
      const argvLog = node.path('../argv.log');
      const envLog = node.path('../env.log');
      node.addStub(tool, `#!/usr/bin/env bash\nprintf '%s\\n' "$@" >> ${argvLog}\nexec /usr/bin/${tool} "$@"\n`);
      node.addStub('curl', `#!/usr/bin/env bash\nprintf '%s\\n' "$@" >> ${argvLog}\nenv >> ${envLog}\nexec /usr/bin/curl "$@"\n`);
      const { token } = await server.token();
      const run = await node.sh(`AAMI_BOOTSTRAP_TOKEN=${token} bash ${BOOTSTRAP} --server ${server.url} --hostname argv-${tool} --node-exporter-port ${await freePort()} --skip-install`, { AAMI_JSON_TOOL: tool });
      expect(run.code, run.stderr).toBe(0);
      const credential = JSON.parse(readFileSync(node.path('etc/aami/node.json'), 'utf8')).node_credential as string;
      expect(credential).toMatch(/^aami_node_/);
      const seen = readFileSync(argvLog, 'utf8');
      expect(seen.length).toBeGreaterThan(0);
      expect(seen).not.toContain(credential);
      expect(seen).not.toContain(token);
      // Every process it starts (curl here, the first check run's among them) inherits no token.
      expect(run.stdout).toContain('checks: first run:');
      const environments = readFileSync(envLog, 'utf8');
      expect(environments).toContain(`AAMI_ROOT=${node.root}`);
      expect(environments).not.toContain(token);
      // The command it prints last works as printed, and keeps the credential out of curl's arguments too.
      const verify = run.stdout.trim().split('\n').at(-1)!.replace(/^\[aami\] +/, '');
      const self = await node.sh(verify);
      expect(JSON.parse(self.stdout), `${tool}: ${verify}`).toMatchObject([{ id: `argv-${tool}` }]);
      expect(readFileSync(argvLog, 'utf8')).not.toContain(credential);
    }
  });

  it('makes the check results\' directory readable by the exporter\'s user under umask 077 (cloud-init), and refuses what the server would before it installs anything', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: false });
    const { token } = await server.token();
    const run = await node.sh(`umask 077; bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --hostname strict-01 --node-exporter-port ${await freePort()} --skip-install`);
    expect(run.code, run.stderr).toBe(0);
    const textfile = node.path('var/lib/node_exporter/textfile');
    expect(statSync(textfile).mode & 0o777).toBe(0o755);
    const results = readdirSync(textfile).filter((name) => name.endsWith('.prom'));
    expect(results.length).toBeGreaterThan(0);
    for (const name of results) expect([name, statSync(join(textfile, name)).mode & 0o777]).toEqual([name, 0o644]);
    // Private files stay private.
    expect(statSync(node.path('etc/aami/node.json')).mode & 0o777).toBe(0o600);

    // The server's rules for names and labels, checked before any exporter is touched.
    const refused = fakeNode({ gpu: false });
    for (const [flags, why] of [
      [`--hostname ${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(60)}`, 'at most 250 characters'],
      ['--hostname ok-01 --label aami_group=x', 'names starting with __ or aami_'],
      ['--hostname ok-01 --label job=x', 'names starting with __ or aami_, and job, instance and hostname'],
      [`--hostname ok-01 --label "note=$(printf 'a\tb')"`, 'must not hold control characters'],
      [`--hostname ok-01 --label "note=$(printf 'a\u2028b')"`, 'must not hold control characters'],
      [`--hostname ok-01 --label "note=$(printf 'a\xc2\x85b')"`, 'must not hold control characters'],
      ['--hostname ok-01 --group GPU-Nodes', '--group must be a group id'],
    ]) {
      const attempt = await refused.sh(`bash ${BOOTSTRAP} --token-file ${refused.tokenFile(token)} --server ${server.url} --node-exporter-port ${await freePort()} ${flags}`);
      expect(attempt.code, flags).toBe(1);
      expect(attempt.stderr).toContain(why);
      expect(refused.tree(), flags).toEqual(['etc', 'etc/machine-id']);
    }
  });

  it('counts a label value in characters as the server does, in the C locale and in a UTF-8 one', async () => {
    const server = await configServer();
    const { token } = await server.token();
    const node = fakeNode({ gpu: false });
    // 1,024 characters: 4,096 bytes (what ${#value} counted in the C locale) and 2,048 UTF-16 units. One more is refused.
    const emoji = '😀'.repeat(1024);
    const hangul = '가'.repeat(1025);
    for (const locale of ['C', 'C.UTF-8']) {
      const bootstrap = (value: string) => node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --hostname k-01 --label note=${value} --dry-run`, { LC_ALL: locale });
      const taken = await bootstrap(emoji);
      expect(taken.code, `${locale}: ${taken.stderr}`).toBe(0);
      expect(dryRunBody(taken.stdout).labels.note).toBe(emoji);
      const refused = await bootstrap(hangul);
      expect(refused.code, locale).toBe(1);
      expect(refused.stderr).toContain('a label value has at most 1024 characters');
    }
    // The server draws the line at the same place.
    const target = (hostname: string, ip: string, note: string) => ({ hostname, ip_address: ip, primary_group_id: 'ml-training', labels: { note } });
    expect((await server.admin('POST', '/api/v1/targets', target('k-01', '10.0.0.1', emoji))).status).toBe(201);
    const refused = await server.admin('POST', '/api/v1/targets', target('h-01', '10.0.0.2', hangul));
    expect(refused.status).toBe(400);
    expect(JSON.stringify(refused.json)).toContain('at most 1024 characters');
  });

  it('uses systemd units that systemd accepts: node exporter, checks timer', async () => {
    const analyze = requireBinary('systemd-analyze', 'systemd');
    requireBinary('prometheus-node-exporter', 'prometheus-node-exporter');
    const server = await configServer();
    const node = fakeNode({ gpu: false });
    const systemctl = recordingSystemctl(node);
    const port = await freePort();
    const { token } = await server.token();
    const run = await node.sh(oneLiner(server.url, node.tokenFile(token), `--hostname sd-01 --node-exporter-port ${port}`), { AAMI_ASSUME_SYSTEMD: '1' });
    expect(run.code, run.stderr).toBe(0);
    expect(systemctl.calls()).toEqual(['daemon-reload', 'enable aami-node-exporter.service', 'restart aami-node-exporter.service', 'daemon-reload', 'enable --now aami-dynamic-check.timer']);
    const units = node.path('etc/systemd/system');
    expect(readFileSync(join(units, 'aami-dynamic-check.timer'), 'utf8')).toContain('OnCalendar=minutely');
    expect(readFileSync(join(units, 'aami-dynamic-check.service'), 'utf8')).toContain(`Environment=AAMI_ROOT=${node.root}`);
    // An exporter that fails at boot (its port held a moment, the driver not up) is restarted every 5 s, never given up on.
    const exporter = readFileSync(join(units, 'aami-node-exporter.service'), 'utf8');
    for (const line of ['StartLimitIntervalSec=0', 'Restart=always', 'RestartSec=5']) expect(exporter.split('\n')).toContain(line);
    const verify = await node.sh(`${analyze} verify ${readdirSync(units).map((unit) => join(units, unit)).join(' ')}`);
    expect(verify.stdout + verify.stderr).toBe('');
    expect(verify.code).toBe(0);
  });

  it('moves its exporter to another port on a re-run: the unit restarted under systemd, the old process stopped without it, the server told', async () => {
    requireBinary('prometheus-node-exporter', 'prometheus-node-exporter');
    const server = await configServer();
    const { token } = await server.token();
    const answers = (port: number) => fetch(`http://127.0.0.1:${port}/metrics`).then((response) => response.ok, () => false);
    for (const systemd of [true, false]) {
      const node = fakeNode({ gpu: false });
      if (systemd) recordingSystemctl(node);
      const hostname = systemd ? 'move-sd' : 'move-bg';
      const first = await freePort();
      let second = await freePort();
      while (second === first) second = await freePort();
      for (const port of [first, second]) {
        const run = await node.sh(oneLiner(server.url, node.tokenFile(token), `--hostname ${hostname} --node-exporter-port ${port} --no-checks`), systemd ? { AAMI_ASSUME_SYSTEMD: '1' } : {});
        expect(run.code, run.stderr).toBe(0);
        // The test stops each background exporter it made, whatever the next run does (the pid file names the last).
        if (!systemd) stopAtEnd(Number(readFileSync(node.path('etc/aami/node_exporter.pid'), 'utf8')));
      }
      expect(await answers(second)).toBe(true);
      await waitFor(`the exporter on :${first} to stop`, async () => !(await answers(first)));
      expect((await server.admin('GET', `/api/v1/targets/${hostname}`)).json.exporters).toContainEqual(expect.objectContaining({ type: 'node_exporter', port: second }));
    }
  });

  it('runs the checks from a systemd timer where /etc/cron.d has no cron daemon to read it (Debian without cron), and from cron once it is installed', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: false });
    mkdirSync(node.path('etc/cron.d'), { recursive: true });
    writeFileSync(node.path('etc/cron.d/e2scrub_all'), '# e2fsprogs\n');
    const systemctl = recordingSystemctl(node);
    const { token } = await server.token();
    const flags = `--hostname timer-01 --node-exporter-port ${await freePort()} --skip-install`;
    const first = await node.sh(oneLiner(server.url, node.tokenFile(token), flags), { AAMI_ASSUME_SYSTEMD: '1' });
    expect(first.code, first.stderr).toBe(0);
    expect(systemctl.calls()).toContain('enable --now aami-dynamic-check.timer');
    expect(existsSync(node.path('etc/cron.d/aami-dynamic-check'))).toBe(false);

    // cron installed since: a re-run moves the checks to it, and takes the timer away.
    mkdirSync(node.path('usr/sbin'), { recursive: true });
    writeFileSync(node.path('usr/sbin/cron'), '#!/bin/sh\n', { mode: 0o755 });
    const again = await node.sh(oneLiner(server.url, node.tokenFile(token), flags), { AAMI_ASSUME_SYSTEMD: '1' });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('checks: cron runs them now: removed aami-dynamic-check.timer');
    expect(readFileSync(node.path('etc/cron.d/aami-dynamic-check'), 'utf8')).toContain('dynamic-check.sh');
    expect(existsSync(node.path('etc/systemd/system/aami-dynamic-check.timer'))).toBe(false);
    const installed = readFileSync(node.path('etc/aami/installed'), 'utf8');
    expect(installed).not.toContain('aami-dynamic-check.timer');
    expect(installed).toContain('file /etc/cron.d/aami-dynamic-check\n');
  });

  it('runs the DCGM exporter of a GPU node as a systemd unit that systemd accepts', async () => {
    const analyze = requireBinary('systemd-analyze', 'systemd');
    const { server, node, systemctl, bootstrap } = await systemdGpuNode();
    const dcgmPort = await freePort();
    const run = await bootstrap('gpu-sd-01', dcgmPort);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain(`dcgm-exporter: ${join(node.bin, 'dcgm-exporter')} as systemd unit aami-dcgm-exporter on :${dcgmPort}`);
    expect(systemctl.calls()).toEqual(['daemon-reload', 'enable aami-dcgm-exporter.service', 'restart aami-dcgm-exporter.service']);
    expect((await server.admin('GET', '/api/v1/targets/gpu-sd-01')).json.exporters).toContainEqual(expect.objectContaining({ type: 'dcgm_exporter', port: dcgmPort }));
    const unit = node.path('etc/systemd/system/aami-dcgm-exporter.service');
    expect(readFileSync(unit, 'utf8')).toContain(`ExecStart=${join(node.bin, 'dcgm-exporter')} --address 127.0.0.1:${dcgmPort}\n`);
    const verify = await node.sh(`${analyze} verify ${unit}`);
    expect(verify.stdout + verify.stderr).toBe('');
    expect(verify.code).toBe(0);
  });

  it('runs an exporter whose path holds a space, "%" and ";" under systemd with that path as one exact argv word', async () => {
    const analyze = requireBinary('systemd-analyze', 'systemd');
    const exporter = requireBinary('prometheus-node-exporter', 'prometheus-node-exporter');
    const server = await configServer();
    const node = fakeNode({ gpu: false });
    const systemctl = recordingSystemctl(node);
    // First on PATH: a node_exporter that writes down the argv it gets, then runs the real one.
    const base = tempDir('aami-odd-');
    const dir = join(base, 'Exporters %n 100% ;x é');
    mkdirSync(dir);
    const binary = join(dir, 'node_exporter');
    writeFileSync(binary, `#!/usr/bin/env bash\nprintf '%s\\0' "$0" "$@" > '${base}/argv'\nexec ${exporter} "$@"\n`, { mode: 0o755 });
    const port = await freePort();
    const { token } = await server.token();
    const run = await node.sh(oneLiner(server.url, node.tokenFile(token), `--hostname odd-01 --node-exporter-port ${port} --no-checks`), { AAMI_ASSUME_SYSTEMD: '1', PATH: `${dir}:${node.env.PATH}` });
    expect(run.code, run.stderr).toBe(0);
    expect(systemctl.calls()).toEqual(['daemon-reload', 'enable aami-node-exporter.service', 'restart aami-node-exporter.service']);
    const unit = node.path('etc/systemd/system/aami-node-exporter.service');
    const argv = [binary, `--web.listen-address=127.0.0.1:${port}`, `--collector.textfile.directory=${node.path('var/lib/node_exporter/textfile')}`];
    expect(execStartArgv(unit)).toEqual(argv);
    expect(readFileSync(join(base, 'argv'), 'utf8').split('\0').slice(0, -1)).toEqual(argv);
    const verify = spawnSync(analyze, ['verify', unit], { encoding: 'utf8' });
    expect(verify.stdout + verify.stderr).toBe('');
    expect(verify.status).toBe(0);
  });

  it('refuses, and writes no unit, for an exporter whose path systemd cannot run (a quote, a "$")', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: false });
    const systemctl = recordingSystemctl(node);
    const { token } = await server.token();
    for (const name of ['its "own" exporters', 'cost$HOME']) {
      const dir = join(tempDir('aami-odd-'), name);
      mkdirSync(dir);
      writeFileSync(join(dir, 'node_exporter'), '#!/bin/sh\nexit 1\n', { mode: 0o755 });
      const run = await node.sh(oneLiner(server.url, node.tokenFile(token), `--hostname odd-02 --node-exporter-port ${await freePort()}`), { AAMI_ASSUME_SYSTEMD: '1', PATH: `${dir}:${node.env.PATH}` });
      expect(run.code).toBe(1);
      expect(run.stderr).toContain(`node_exporter: systemd cannot run ${join(dir, 'node_exporter')}: it needs an absolute path without quotes, backslashes, "$" or control characters`);
      expect(existsSync(node.path('etc/systemd/system/aami-node-exporter.service'))).toBe(false);
    }
    expect(systemctl.calls()).toEqual([]);
  });

  it('writes each ExecStart= word so that systemd reads it back exactly: blanks, %, $, quotes, backslashes, ;, control characters, 200 random words', () => {
    const analyze = requireBinary('systemd-analyze', 'systemd');
    let seed = 7;
    const random = (n: number) => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31), seed % n);
    const alphabet = [' ', '%', '$', '{', '}', '"', "'", '\\', ';', '`', '=', '-', 'a', 'n', 'x', '0', '\n', '\t', '\r', '\x01', '\x7f', 'é'];
    const fixed = ['plain', 'a b', '100%', '%n', '$HOME', '${HOME}', '$$', 'q"uote', "s'q", 'back\\slash', '\\x41', ';', '', '-x', 'é ü', 'line\nbreak', 'tab\there'];
    const words = [...fixed, ...Array.from({ length: 200 }, () => Array.from({ length: random(12) }, () => alphabet[random(alphabet.length)]).join(''))];
    // The script's systemd_word alone, without running the script.
    const quote = spawnSync('bash', ['-c', 'set -euo pipefail; source <(sed -n "$1" "$2"); shift 2; for word in "$@"; do systemd_word "$word"; printf "\\0"; done', 'bash', '/^systemd_word() {$/,/^}$/p', BOOTSTRAP, ...words], { encoding: 'utf8' });
    expect(quote.status, quote.stderr).toBe(0);
    const unit = join(tempDir(), 'words.service');
    writeFileSync(unit, `[Service]\nExecStart=/bin/true ${quote.stdout.split('\0').slice(0, -1).join(' ')}\n`);
    expect(readFileSync(unit, 'utf8').split('\n')).toHaveLength(3);
    expect(execStartArgv(unit)).toEqual(['/bin/true', ...words]);
    const verify = spawnSync(analyze, ['verify', unit], { encoding: 'utf8' });
    expect(verify.stdout + verify.stderr).toBe('');
    expect(verify.status).toBe(0);
  });

  it('reuses a DCGM exporter it finds running that AAMI did not install, says so, installs no unit and leaves it running', async () => {
    // One it could install is on PATH too (systemdGpuNode): a running exporter wins.
    const { server, node, systemctl, bootstrap } = await systemdGpuNode();
    const { port: dcgmPort } = await runningDcgmExporter();
    const run = await bootstrap('gpu-own-01', dcgmPort);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain(`dcgm exporter: already running on :${dcgmPort}, reusing it`);
    expect(systemctl.calls()).toEqual([]);
    expect(existsSync(node.path('etc/systemd/system/aami-dcgm-exporter.service'))).toBe(false);
    expect(existsSync(node.path('etc/aami/dcgm-exporter.pid'))).toBe(false);
    const installed = readFileSync(node.path('etc/aami/installed'), 'utf8');
    expect(installed).toContain(`reused dcgm exporter on :${dcgmPort}\n`);
    expect(installed).not.toContain('dcgm-exporter');
    expect((await server.admin('GET', '/api/v1/targets/gpu-own-01')).json.exporters).toContainEqual(expect.objectContaining({ type: 'dcgm_exporter', port: dcgmPort }));
    // A re-run finds it again, still not its own, and writes it down once.
    const again = await bootstrap('gpu-own-01', dcgmPort);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`dcgm exporter: already running on :${dcgmPort}, reusing it`);
    expect(systemctl.calls()).toEqual([]);
    expect(readFileSync(node.path('etc/aami/installed'), 'utf8')).toBe(installed);

    const uninstall = await node.sh(node.path('opt/aami/uninstall.sh'));
    expect(uninstall.code, uninstall.stderr).toBe(0);
    expect(uninstall.stdout).toContain(`dcgm exporter on :${dcgmPort}: it ran before AAMI, so it stays`);
    expect((await fetch(`http://127.0.0.1:${dcgmPort}/metrics`)).ok).toBe(true);
  });

  it('lists at most the 64 interfaces the server keeps, without the virtual ones a container host makes by the hundred', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: false });
    const { token } = await server.token();
    const physical = Array.from({ length: 70 }, (_, i) => `enp${i}s0`).sort();
    for (const name of ['lo', 'eth0', 'ib0', ...physical, ...Array.from({ length: 150 }, (_, i) => `cali${i}`), 'veth1a2b', 'docker0', 'br-3f2a', 'flannel.1']) mkdirSync(node.path(`sys/class/net/${name}`), { recursive: true });
    // The NIC and the InfiniBand port have a device: kept first, whatever their names sort after.
    for (const name of ['eth0', 'ib0']) mkdirSync(node.path(`sys/class/net/${name}/device`));
    const run = await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --dry-run --hostname k8s-1`);
    expect(run.code, run.stderr).toBe(0);
    expect(dryRunBody(run.stdout).facts.interfaces).toEqual(['eth0', 'ib0', ...physical.slice(0, 62)].sort());
    // And the server takes it.
    const enrolled = await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --skip-install --no-checks --hostname k8s-1`);
    expect(enrolled.code, enrolled.stderr).toBe(0);
    expect((await server.admin('GET', '/api/v1/targets/k8s-1')).json.facts.interfaces).toHaveLength(64);
  });

  it('leaves its saved credential as it was when writing the new state fails (a full disk), on a re-run too', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: false });
    const { token } = await server.token();
    const run = () => node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --skip-install --no-checks --hostname full-1`);
    expect((await run()).code).toBe(0);
    const saved = readFileSync(node.path('etc/aami/node.json'), 'utf8');
    // jq fails where it writes the state (as on a full disk); everything else it does as ever.
    const jq = execFileSync('sh', ['-c', 'command -v jq'], { encoding: 'utf8' }).trim();
    writeFileSync(join(node.bin, 'jq'), `#!/bin/sh\n[ "$1" = -Rn ] && exit 1\nexec ${jq} "$@"\n`, { mode: 0o755 });
    const failed = await run();
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain('node.json is left as it was');
    expect(readFileSync(node.path('etc/aami/node.json'), 'utf8')).toBe(saved);
  });

  it('changes nothing with --dry-run and prints the request it would send', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: true });
    const { token } = await server.token();
    const run = await node.sh(oneLiner(server.url, node.tokenFile(token), '--dry-run --hostname d1 --label rack=r1'));
    expect(run.code, run.stderr).toBe(0);
    const request = dryRunBody(run.stdout);
    expect(request).toMatchObject({ hostname: 'd1', machine_id: machineHash(node.machineId), labels: { rack: 'r1', gpu_count: '1' }, facts: { gpu_model: 'NVIDIA H100 80GB HBM3', gpu_count: 1 } });
    expect(run.stdout).toContain(`would POST ${server.url}/api/v1/bootstrap/register`);
    expect(run.stdout).not.toContain(token);
    expect(node.tree()).toEqual(['etc', 'etc/machine-id']);
    expect((await server.admin('GET', '/api/v1/targets')).json).toEqual([]);

    // /etc/os-release is data: read, never sourced (run) by the shell.
    const canary = join(tempDir('aami-canary-'), 'CANARY');
    writeFileSync(node.path('etc/os-release'), `NAME=x\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\n$(touch ${canary})\ntouch ${canary}\n`);
    const os = await node.sh(oneLiner(server.url, node.tokenFile(token), '--dry-run --hostname d1'));
    expect(dryRunBody(os.stdout).facts.os).toBe('Ubuntu 22.04.4 LTS');
    expect(existsSync(canary)).toBe(false);

    // Without jq the request is encoded by python3: the same document, label values kept as data.
    // And a byte that is not UTF-8 becomes U+FFFD with either tool (python3's json would send a lone surrogate, which is no text).
    const label = `--label 'note=a "quoted" value; $(touch x)' --label $'latin=caf\\xe9'`;
    const jq = await node.sh(oneLiner(server.url, node.tokenFile(token), `--dry-run --hostname d1 --label rack=r1 ${label}`));
    const python = await node.sh(oneLiner(server.url, node.tokenFile(token), `--dry-run --hostname d1 --label rack=r1 ${label}`), { AAMI_JSON_TOOL: 'python3' });
    expect(dryRunBody(jq.stdout).labels.note).toBe('a "quoted" value; $(touch x)');
    expect(dryRunBody(jq.stdout).labels.latin).toBe('caf\ufffd');
    expect(dryRunBody(python.stdout)).toEqual(dryRunBody(jq.stdout));
  });

  it('says why when the token is expired, used up, revoked or wrong, or the server is down', async () => {
    // The server's clock, moved past a token's expiry below: no wait in real time for it to expire.
    let ahead = 0;
    const server = await configServer({ clock: () => new Date(Date.now() + ahead) });
    const node = fakeNode({ gpu: false });
    const flags = '--skip-install --no-checks --hostname n1';
    const attempt = (token: string) => node.sh(oneLiner(server.url, node.tokenFile(token), flags));

    const used = await server.token({ max_uses: 1 });
    const other = fakeNode({ gpu: false });
    expect((await other.sh(`bash ${BOOTSTRAP} --token-file ${other.tokenFile(used.token)} --server ${server.url} --skip-install --no-checks --hostname another-node`)).code).toBe(0);
    const revoked = await server.token();
    await server.admin('POST', `/api/v1/bootstrap-tokens/${revoked.id}/revoke`);
    const expiring = await server.token({ expires_at: new Date(Date.now() + 3_600_000).toISOString() });
    ahead = 2 * 3_600_000;

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

    // What waiting does not mend fails at once, whatever AAMI_RETRY_SECONDS says: a scheme curl does not speak.
    const typo = server.url.replace('http:', 'htp:');
    const wrong = await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(used.token)} --server ${typo} ${flags}`, { AAMI_RETRY_SECONDS: '300' });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain(`cannot reach the config server at ${typo}`);
    expect(wrong.stderr).not.toContain('retrying');

    await server.stop();
    // Not waited for (it would be for AAMI_RETRY_SECONDS: a server restarting, see below).
    const down = await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(used.token)} --server ${server.url} ${flags}`, { AAMI_RETRY_SECONDS: '0' });
    expect(down.code).toBe(1);
    expect(down.stderr).toContain(`cannot reach the config server at ${server.url}`);
  });

  it('waits for a config server that does not answer yet (restarting, or not up when a fleet boots) and registers once it does', async () => {
    const config = serverConfig({ port: await freePort() });
    const url = `http://127.0.0.1:${config.port}`;
    const first = await startServer(config);
    const created = await fetch(`${url}/api/v1/bootstrap-tokens`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` }, body: JSON.stringify({ name: 'late', default_group_id: 'ml-training', max_uses: 5, expires_at: '2099-01-01T00:00:00Z' }) });
    const { token } = (await created.json()) as { token: string };
    await first.close();
    const node = fakeNode({ gpu: false });
    // Each of bootstrap's waits is told to the test: a `sleep` first on the node's PATH marks it.
    const sleep = execFileSync('sh', ['-c', 'command -v sleep'], { encoding: 'utf8' }).trim();
    const waited = node.path('../waited');
    node.addStub('sleep', `#!/bin/sh\necho "$1" >> '${waited}'\nexec ${sleep} "$1"\n`);
    const run = node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${url} --hostname late-01 --skip-install --no-checks`, { AAMI_RETRY_SECONDS: '60' });
    await waitFor('bootstrap to wait for the server', async () => existsSync(waited));
    const server = await startServer(config);
    onCleanup(() => server.close());
    const done = await run;
    expect(done.code, done.stderr).toBe(0);
    expect(done.stderr).toMatch(new RegExp(`cannot reach the config server at ${url}; retrying in \\d\\.\\d{3}s`));
    const targets = await fetch(`${url}/api/v1/targets`, { headers: { authorization: `Bearer ${ADMIN}` } });
    expect(((await targets.json()) as Array<{ hostname: string }>).map((t) => t.hostname)).toEqual(['late-01']);
  });

  it('sends a registration whose answer was lost (a connection reset, a proxy\'s 502) again: the same machine re-enrolled, with no second token use', async () => {
    const server = await configServer();
    const { token, id } = await server.token();
    // Between the node and the server, a proxy: the first registration reaches the server and
    // its answer is dropped; the second is answered 502 by the proxy (its backend restarting).
    let registrations = 0;
    const proxy = createServer((request, response) => {
      const attempt = request.url === '/api/v1/bootstrap/register' ? ++registrations : 0;
      if (attempt === 2) return void request.resume().on('end', () => response.writeHead(502).end('Bad Gateway'));
      const forward = httpRequest(`${server.url}${request.url}`, { method: request.method, headers: request.headers }, (answer) => {
        if (attempt === 1) return void (answer.resume(), request.socket.destroy());
        response.writeHead(answer.statusCode!, answer.headers);
        answer.pipe(response);
      });
      request.pipe(forward);
    });
    proxy.listen(0, '127.0.0.1');
    await once(proxy, 'listening');
    onCleanup(() => new Promise<void>((resolve) => proxy.close(() => resolve())));
    const url = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    const node = fakeNode({ gpu: false });
    const run = await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${url} --hostname reset-01 --skip-install --no-checks`, { AAMI_RETRY_SECONDS: '60' });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/no answer from the server \(curl: \(52\) Empty reply from server\); retrying in/);
    expect(run.stderr).toMatch(/the server refused for now \(HTTP 502\); retrying in/);
    expect(registrations).toBe(3);
    expect((await server.admin('GET', '/api/v1/targets')).json.map((t: { hostname: string }) => t.hostname)).toEqual(['reset-01']);
    expect((await server.admin('GET', `/api/v1/bootstrap-tokens/${id}`)).json.uses).toBe(1);
    // The credential it kept is the one the server holds now (the second answer's).
    const { node_credential: credential } = JSON.parse(readFileSync(node.path('etc/aami/node.json'), 'utf8'));
    expect((await fetch(`${server.url}/api/v1/nodes/self`, { headers: { authorization: `Bearer ${credential}` } })).status).toBe(200);
  });

  it('is served by the server with a checksum, and every script passes shellcheck', async () => {
    const server = await configServer();
    for (const name of ['bootstrap.sh', 'preflight-check.sh', 'dynamic-check.sh', 'uninstall.sh']) {
      const body = await (await fetch(`${server.url}/scripts/${name}`)).text();
      expect(body).toBe(readFileSync(join(ROOT, 'scripts', name), 'utf8'));
      const sum = await (await fetch(`${server.url}/scripts/${name}.sha256`)).text();
      expect(sum).toBe(`${createHash('sha256').update(body).digest('hex')}  ${name}\n`);
    }
    const bootstrap = await (await fetch(`${server.url}/bootstrap.sh`)).text();
    expect(bootstrap).toBe(readFileSync(BOOTSTRAP, 'utf8'));
    // The guide's checksum URL, in the form `sha256sum -c` reads.
    expect(await (await fetch(`${server.url}/bootstrap.sh.sha256`)).text()).toBe(`${createHash('sha256').update(bootstrap).digest('hex')}  bootstrap.sh\n`);
    expect((await fetch(`${server.url}/scripts/..%2Fpackage.json`)).status).toBe(404);

    const shellcheck = requireBinary('shellcheck', 'shellcheck');
    const checks = readdirSync(join(ROOT, 'config-repo/checks')).filter((name) => existsSync(join(ROOT, 'config-repo/checks', name, 'check.sh')));
    const scripts = readdirSync(join(ROOT, 'scripts')).filter((name) => name.endsWith('.sh'));
    expect(scripts.sort()).toEqual(['bootstrap.sh', 'dynamic-check.sh', 'preflight-check.sh', 'uninstall.sh']);
    const files = [...scripts.map((n) => join(ROOT, 'scripts', n)), ...checks.map((c) => join(ROOT, 'config-repo/checks', c, 'check.sh')), join(ROOT, 'test/stubs/captured')];
    const node = fakeNode({ gpu: false });
    const result = await node.sh(`${shellcheck} ${files.join(' ')}`);
    expect(result.stdout + result.stderr).toBe('');
    expect(result.code).toBe(0);
  });
});
