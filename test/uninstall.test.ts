import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { gitCli, ROOT, tempDir } from './helpers.js';
import { configServer, dcgmTarball, fakeNode, freePort, requireBinary, runningNodeExporter, waitFor } from './node-helpers.js';

const BOOTSTRAP = join(ROOT, 'scripts/bootstrap.sh');

/** Whether something still listens on 127.0.0.1:PORT. */
const answers = (port: number) =>
  fetch(`http://127.0.0.1:${port}/metrics`).then(
    (response) => response.ok,
    () => false,
  );

describe('uninstall.sh', { timeout: 60_000 }, () => {
  it('deregisters the node and leaves nothing of AAMI under its root: exporters it started, units, cron, checks', async () => {
    requireBinary('prometheus-node-exporter', 'prometheus-node-exporter');
    const downloads = tempDir('aami-downloads-');
    dcgmTarball(downloads);
    const server = await configServer({ downloadsDir: downloads });
    const node = fakeNode({ gpu: true, cron: true });
    const before = node.tree();
    const [nodePort, dcgmPort] = [await freePort(), await freePort()];
    const { token } = await server.token();
    const flags = `--hostname leaving-01 --node-exporter-port ${nodePort} --dcgm-exporter-port ${dcgmPort}`;
    const run = await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} ${flags}`);
    expect(run.code, run.stderr).toBe(0);
    expect(await answers(nodePort)).toBe(true);
    expect(await answers(dcgmPort)).toBe(true);
    expect(existsSync(node.path('var/lib/node_exporter/textfile/check_mount.prom'))).toBe(true);

    const uninstall = await node.sh(`${node.path('opt/aami/uninstall.sh')}`);
    expect(uninstall.code, uninstall.stderr).toBe(0);
    expect(uninstall.stdout).toContain(`deregistered: target leaving-01 is gone from ${server.url}`);
    expect(uninstall.stdout).toContain('done: nothing of AAMI is left on this node');
    expect(node.tree()).toEqual(before);
    expect(await answers(nodePort)).toBe(false);
    expect(await answers(dcgmPort)).toBe(false);
    expect((await server.admin('GET', '/api/v1/targets')).json).toEqual([]);
    // The deletion is a commit the node made, not an admin's.
    expect(gitCli(server.repo, 'log', '-1', '--format=%an%n%s')).toContain('leaving-01');
  });

  it('leaves an exporter it found running, and says so', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: false });
    const port = await runningNodeExporter(node.path('var/lib/node_exporter/textfile'));
    const before = node.tree();
    const { token } = await server.token();
    expect((await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --hostname keeper --node-exporter-port ${port}`)).code).toBe(0);
    const uninstall = await node.sh(node.path('opt/aami/uninstall.sh'));
    expect(uninstall.code, uninstall.stderr).toBe(0);
    expect(uninstall.stdout).toContain(`[aami]   node exporter on :${port}: it ran before AAMI, so it stays`);
    expect(await answers(port)).toBe(true);
    expect(node.tree()).toEqual(before);
  });

  it('removes nothing when it cannot deregister, unless told to keep the registration', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: false });
    const { token } = await server.token();
    expect((await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --hostname stuck --skip-install --no-checks`)).code).toBe(0);
    const installed = node.tree();

    // A token that does not let its nodes leave by themselves.
    const pinned = fakeNode({ gpu: false });
    const strict = await server.token({ allow_deregister: false });
    expect((await pinned.sh(`bash ${BOOTSTRAP} --token-file ${pinned.tokenFile(strict.token)} --server ${server.url} --hostname pinned --node-exporter-port 9101 --skip-install --no-checks`)).code).toBe(0);
    const forbidden = await pinned.sh(pinned.path('opt/aami/uninstall.sh'));
    expect(forbidden.code).toBe(1);
    expect(forbidden.stderr).toContain(`${server.url} does not let this node deregister itself: `);
    expect(forbidden.stderr).toContain('nothing was removed');
    expect((await server.admin('GET', '/api/v1/targets/pinned')).status).toBe(200);
    expect(existsSync(pinned.path('opt/aami/uninstall.sh'))).toBe(true);

    await server.stop();
    const refused = await node.sh(node.path('opt/aami/uninstall.sh'));
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('nothing was removed; run this again when the server answers, or with --keep-registration');
    expect(refused.stderr).toContain(`an admin can delete it: curl -X DELETE ${server.url}/api/v1/targets/stuck`);
    expect(node.tree()).toEqual(installed);

    const kept = await node.sh(`${node.path('opt/aami/uninstall.sh')} --keep-registration`);
    expect(kept.code, kept.stderr).toBe(0);
    expect(kept.stdout).toContain(`[aami]   target stuck on ${server.url} (--keep-registration)`);
    expect(node.tree()).toEqual(['etc', 'etc/machine-id']);
  });

  it('removes its own files by name, never a whole directory: a config server installed on the same host keeps its own', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: false, cron: true });
    // What an older systemd deploy of the server put in the node's directories, and a file of someone else's.
    const others = { 'etc/aami/aami.env': 'AAMI_ADMIN_TOKEN=x\n', 'opt/aami/dist/cli/bin.js': '// the server\n', 'opt/aami/scripts/bootstrap.sh': '#!/bin/sh\n', 'var/lib/aami/config-repo/HEAD': 'ref: refs/heads/main\n' };
    for (const [path, text] of Object.entries(others)) {
      mkdirSync(dirname(node.path(path)), { recursive: true });
      writeFileSync(node.path(path), text);
    }
    const before = node.tree();
    const { token } = await server.token();
    const run = await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --hostname shared-01 --skip-install`);
    expect(run.code, run.stderr).toBe(0);
    expect(existsSync(node.path('var/lib/aami/checks/checks.json'))).toBe(true);
    // Other tools' results, beside the checks' in the directory bootstrap made: one named as the checks' are.
    writeFileSync(node.path('var/lib/node_exporter/textfile/raid.prom'), 'raid_ok 1\n');
    writeFileSync(node.path('var/lib/node_exporter/textfile/check_raid.prom'), 'raid_check 1\n');
    const uninstall = await node.sh(node.path('opt/aami/uninstall.sh'));
    expect(uninstall.code, uninstall.stderr).toBe(0);
    expect(uninstall.stdout).toContain('[aami]   directory /var/lib/node_exporter/textfile: it holds files AAMI did not write');
    expect(node.tree()).toEqual([...before, 'var/lib/node_exporter', 'var/lib/node_exporter/textfile', 'var/lib/node_exporter/textfile/check_raid.prom', 'var/lib/node_exporter/textfile/raid.prom'].sort());
    for (const [path, text] of Object.entries(others)) expect(readFileSync(node.path(path), 'utf8')).toBe(text);
  });

  it('keeps the registration of an ephemeral node with --keep-registration, though stopping its shutdown unit runs the deregistration', async () => {
    const server = await configServer();
    const node = fakeNode({ gpu: false });
    const port = await runningNodeExporter(node.path('var/lib/node_exporter/textfile'));
    // A systemctl that, as systemd does, runs a unit's ExecStop= (with its Environment=) when it stops it.
    const units = node.path('etc/systemd/system');
    const stopLog = node.path('../exec-stop.log');
    node.addStub(
      'systemctl',
      `#!/usr/bin/env bash\nif [ "$1 $2" = "disable --now" ] && [ -f "${units}/$3" ]; then\n` +
        `  stop=$(sed -n 's/^ExecStop=//p' "${units}/$3")\n  [ -z "$stop" ] || env $(sed -n 's/^Environment=//p' "${units}/$3") bash -c "$stop" >> ${stopLog} 2>&1\nfi\n`,
    );
    const { token } = await server.token({ ephemeral: true, ttl_after_last_seen: '10m' });
    const run = await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --hostname spot-02 --node-exporter-port ${port} --no-checks`, { AAMI_ASSUME_SYSTEMD: '1' });
    expect(run.code, run.stderr).toBe(0);
    const kept = await node.sh(`${node.path('opt/aami/uninstall.sh')} --keep-registration`, { AAMI_ASSUME_SYSTEMD: '1' });
    expect(kept.code, kept.stderr).toBe(0);
    expect(kept.stdout).toContain(`[aami]   target spot-02 on ${server.url} (--keep-registration)`);
    // The unit's ExecStop ran, and found nothing to deregister.
    expect(readFileSync(stopLog, 'utf8')).toContain(`not registered: ${node.path('etc/aami/node.json')} is missing`);
    expect((await server.admin('GET', '/api/v1/targets/spot-02')).status).toBe(200);
  });

  it('gives an ephemeral node a unit that deregisters it when it shuts down', async () => {
    const analyze = requireBinary('systemd-analyze', 'systemd');
    const server = await configServer();
    const node = fakeNode({ gpu: false });
    const port = await runningNodeExporter(node.path('var/lib/node_exporter/textfile'));
    const calls = node.path('../systemctl.log');
    node.addStub('systemctl', `#!/usr/bin/env bash\necho "$*" >> ${calls}\n`);
    const { token } = await server.token({ ephemeral: true, ttl_after_last_seen: '10m' });
    const run = await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --hostname spot-01 --node-exporter-port ${port} --no-checks`, { AAMI_ASSUME_SYSTEMD: '1' });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('ephemeral: aami-deregister.service deregisters this node when it shuts down');
    const unitFile = node.path('etc/systemd/system/aami-deregister.service');
    const unit = readFileSync(unitFile, 'utf8');
    expect(unit).toContain(`ExecStop=${node.path('opt/aami/uninstall.sh')} --deregister-only\n`);
    expect(unit).toMatch(/^RemainAfterExit=yes$/m);
    expect(unit).toMatch(/^WantedBy=multi-user.target$/m);
    expect(readFileSync(calls, 'utf8')).toContain('enable --now aami-deregister.service');
    const verify = await node.sh(`${analyze} verify ${unitFile}`);
    expect(verify.stdout + verify.stderr).toBe('');

    // Shutdown: systemd stops the unit and runs its ExecStop with its Environment (not PID 1
    // here, so the test runs that command line as systemd would).
    const environment = Object.fromEntries([...unit.matchAll(/^Environment=(\w+)=(.*)$/gm)].map(([, key, value]) => [key!, value!]));
    const stop = await node.sh(unit.match(/^ExecStop=(.*)$/m)![1]!, environment);
    expect(stop.code, stop.stderr).toBe(0);
    expect(stop.stdout).toContain('deregistered: target spot-01');
    await waitFor('the target to be gone', async () => (await server.admin('GET', '/api/v1/targets')).json.length === 0);
    // Only deregistered: the node's files stay until it is gone.
    expect(existsSync(node.path('etc/aami/node.json'))).toBe(true);

    // On a node that is not ephemeral (any more), a lingering unit leaves the target alone.
    const steady = fakeNode({ gpu: false });
    const { token: plain } = await server.token();
    expect((await steady.sh(`bash ${BOOTSTRAP} --token-file ${steady.tokenFile(plain)} --server ${server.url} --hostname steady-01 --skip-install --no-checks`)).code).toBe(0);
    const kept = await steady.sh(`${steady.path('opt/aami/uninstall.sh')} --deregister-only`);
    expect(kept.code, kept.stderr).toBe(0);
    expect(kept.stdout).toContain('this node is not ephemeral: it stays registered');
    expect((await server.admin('GET', '/api/v1/targets/steady-01')).status).toBe(200);
  });
});
