import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { onCleanup, pushFiles, ROOT, tempDir } from './helpers.js';
import { configServer, fakeNode, freePort, runningNodeExporter, waitFor } from './node-helpers.js';

const DYNAMIC_CHECK = join(ROOT, 'scripts/dynamic-check.sh');
const PREFLIGHT = join(ROOT, 'scripts/preflight-check.sh');
const STARTER_CHECKS = ['disk-usage', 'gpu-count', 'mount', 'nvme-health'];
const starterScript = (name: string) => join(ROOT, 'config-repo/checks', name, 'check.sh');

/** A server and a node registered with it (no exporter: the checks write textfiles all the same). */
async function registeredNode(options: { gpu: boolean | 'amd' } = { gpu: true }) {
  const server = await configServer();
  const node = fakeNode(options);
  const { token } = await server.token();
  const run = await node.sh(`bash ${join(ROOT, 'scripts/bootstrap.sh')} --token-file ${node.tokenFile(token)} --server ${server.url} --hostname node-1 --skip-install --no-checks`);
  expect(run.code, run.stderr).toBe(0);
  const prom = (name: string) => {
    const file = node.path(`var/lib/node_exporter/textfile/check_${name}.prom`);
    return existsSync(file) ? readFileSync(file, 'utf8') : undefined;
  };
  /** Add (or with null, remove) a check as a merged pull request would. */
  const commitCheck = async (name: string, files: Record<string, string> | null) => {
    const changes = Object.fromEntries(Object.entries(files ?? { 'check.yaml': '', 'check.sh': '' }).map(([file, text]) => [`checks/${name}/${file}`, files ? text : null]));
    pushFiles(server.repo, changes, `${files ? 'Add' : 'Remove'} check ${name}`);
    await waitFor(`check ${name} to be ${files ? 'served' : 'gone'}`, async () => {
      const names = (await server.admin('GET', '/api/v1/checks')).json.map((c: { name: string }) => c.name);
      return names.includes(name) === Boolean(files);
    });
  };
  return { server, node, prom, commitCheck, dynamicCheck: (env: Record<string, string> = {}) => node.sh(`bash ${DYNAMIC_CHECK}`, env) };
}

/** Values a label or a check.yaml can carry that must stay data. CANARY is replaced by a path. */
const HOSTILE = [
  '$(touch CANARY)',
  '`touch CANARY`',
  'a[$(touch CANARY)]',
  'visible[$(touch CANARY)]',
  '; touch CANARY',
  '/tmp; touch CANARY',
  '/x\ntouch CANARY',
  '\'"; touch CANARY; echo "\'',
  '/x"} 1\ninjected_metric{a="',
  '-P --output=source /',
];

describe('dynamic-check.sh', { timeout: 60_000 }, () => {
  it('runs the checks that apply to the node, says so line by line, and leaves their results in the textfile directory', async () => {
    const { node, prom, dynamicCheck, server } = await registeredNode();
    const run = await dynamicCheck();
    expect(run.code, run.stderr).toBe(0);
    // One line per check on stdout, in the order the server lists them.
    expect(run.stdout).toBe('disk-usage: ran\ngpu-count: ran\nmount: ran\nnvme-health: ran\n');
    // ml-training adds /data to disk-usage and mount; gpu-count applies because the node has GPUs.
    expect(prom('gpu-count')).toContain('aami_gpu_count_match 1');
    expect(prom('disk-usage')).toMatch(/aami_check_success\{check="disk-usage"\} 1/);
    expect(prom('mount')).toContain('aami_mount_present{mountpoint="/"} 1');
    expect(prom('mount')).toContain('aami_mount_present{mountpoint="/data"}');
    expect(prom('nvme-health')).toContain('aami_check_success{check="nvme-health"} 1');
    // Results are staged under a name the collector ignores and renamed: nothing else is left there.
    expect(readdirSync(node.path('var/lib/node_exporter/textfile')).sort()).toEqual(STARTER_CHECKS.map((name) => `check_${name}.prom`));
    const target = (await server.admin('GET', '/api/v1/targets/node-1')).json;
    expect(target.last_seen).not.toBeNull();
    const effective = (await server.admin('GET', '/api/v1/targets/node-1/checks')).json;
    expect(effective.map((c: { name: string }) => c.name)).toEqual(STARTER_CHECKS);
    expect(effective.find((c: { name: string }) => c.name === 'gpu-count').args).toEqual(['1']);

    // Run again at once: nothing is due.
    const again = await dynamicCheck();
    expect(again.stdout).toBe('disk-usage: not due (runs every 60s)\ngpu-count: not due (runs every 60s)\nmount: not due (runs every 60s)\nnvme-health: not due (runs every 300s)\n');
  });

  it('skips gpu-count on CPU-only nodes of a group that enables it (requires_labels)', async () => {
    const server = await configServer();
    const target = (hostname: string, ip: string, labels: Record<string, string>) =>
      server.admin('POST', '/api/v1/targets', { hostname, ip_address: ip, primary_group_id: 'ml-training', labels });
    expect((await target('gpu-box', '10.0.0.1', { gpu_count: '8' })).status).toBe(201);
    expect((await target('cpu-box', '10.0.0.2', {})).status).toBe(201);
    expect((await target('empty-label', '10.0.0.3', { gpu_count: '' })).status).toBe(201);
    const names = async (hostname: string) => (await server.admin('GET', `/api/v1/targets/${hostname}/checks`)).json.map((c: { name: string }) => c.name);
    expect(await names('gpu-box')).toEqual(STARTER_CHECKS);
    expect(await names('cpu-box')).toEqual(['disk-usage', 'mount', 'nvme-health']);
    expect(await names('empty-label')).toEqual(['disk-usage', 'mount', 'nvme-health']);

    // A bad requires_labels entry is a broken file: it keeps its last good version and is reported.
    pushFiles(server.repo, { 'checks/gpu-count/check.yaml': 'requires_labels: ["gpu-count"]\n' }, 'A bad requires_labels');
    const problems = await waitFor('the broken file to be reported', async () => {
      const invalid = JSON.stringify((await server.admin('GET', '/api/v1/health')).json.compiler.invalid_files);
      return invalid.includes('checks/gpu-count/check.yaml') && invalid;
    });
    expect(problems).toContain('requires_labels');
    expect(await names('cpu-box')).toEqual(['disk-usage', 'mount', 'nvme-health']);
  });

  it('kills a check that hangs at its timeout and reports it failed', async () => {
    const { prom, commitCheck, dynamicCheck } = await registeredNode();
    await commitCheck('hangs', { 'check.yaml': 'timeout: 1s\n', 'check.sh': 'echo partial_output 1\nsleep 30\n' });
    const run = await dynamicCheck();
    expect(run.code).toBe(0);
    expect(prom('hangs')).toContain('aami_check_success{check="hangs"} 0');
    expect(prom('hangs')).toContain('aami_check_timed_out{check="hangs"} 1');
    expect(prom('hangs')).not.toContain('partial_output');
    expect(run.stdout).toContain('hangs: failed: timed out after 1s\n');
    expect(run.stderr).toContain('check hangs failed: timed out after 1s');
  });

  it('ends a check\'s output that lacks a final newline before its own lines, so the node exporter takes the file', async () => {
    const { node, prom, commitCheck, dynamicCheck } = await registeredNode();
    await commitCheck('no-newline', { 'check.yaml': 'timeout: 5s\n', 'check.sh': 'printf "aami_test_value 1"\n' });
    const run = await dynamicCheck();
    expect(run.stdout).toContain('no-newline: ran\n');
    expect(prom('no-newline')).toMatch(/^aami_test_value 1\naami_check_success\{check="no-newline"\} 1\n/);
    // The real node exporter's textfile collector reads the directory without an error.
    const port = await runningNodeExporter(node.path('var/lib/node_exporter/textfile'));
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toMatch(/^node_textfile_scrape_error 0$/m);
    expect(metrics).toMatch(/^aami_check_success\{check="no-newline"\} 1$/m);
  });

  it('runs checks under cron\'s PATH with the sbin directories (nvme-cli is /usr/sbin/nvme), and a readable result under umask 077', async () => {
    const { node, prom, commitCheck } = await registeredNode();
    await commitCheck('path', { 'check.yaml': 'timeout: 5s\n', 'check.sh': 'case ":$PATH:" in *:/usr/sbin:*) echo aami_test_sbin 1 ;; *) echo aami_test_sbin 0 ;; esac\n' });
    const run = await node.sh(`umask 077; PATH=/usr/bin:/bin bash ${DYNAMIC_CHECK}`);
    expect(run.stdout, run.stderr).toContain('path: ran\n');
    expect(prom('path')).toContain('aami_test_sbin 1\n');
    expect(statSync(node.path('var/lib/node_exporter/textfile/check_path.prom')).mode & 0o777).toBe(0o644);
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
    expect(run.stdout).toMatch(/^disk-usage: refused: hash mismatch/m);
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

  it('removes the results of a check that no longer applies, not another tool\'s file named as its are', async () => {
    const { prom, commitCheck, dynamicCheck, node } = await registeredNode();
    await commitCheck('short-lived', { 'check.yaml': 'description: here for a while\n', 'check.sh': 'echo short_lived 1\n' });
    await dynamicCheck();
    expect(prom('short-lived')).toContain('short_lived 1');
    writeFileSync(node.path('var/lib/node_exporter/textfile/check_raid.prom'), 'raid_check 1\n');
    await commitCheck('short-lived', null);
    const run = await dynamicCheck();
    expect(prom('short-lived')).toBeUndefined();
    expect(run.stderr).toContain('removed the results of check short-lived');
    expect(prom('raid')).toBe('raid_check 1\n');
  });

  it('keeps its last list and every result when the server answers something that is not a list of checks', async () => {
    const { node, prom, dynamicCheck } = await registeredNode();
    expect((await dynamicCheck()).code).toBe(0);
    const list = readFileSync(node.path('var/lib/aami/checks/checks.json'), 'utf8');
    const state = JSON.parse(readFileSync(node.path('etc/aami/node.json'), 'utf8'));
    // A proxy's page, a list that is not one and an empty answer, answered 200; with jq and with python3.
    for (const [body, tool] of [['<html>down for maintenance</html>', 'jq'], ['{"checks":null}', 'jq'], ['', 'jq'], ['', 'python3'], ['{"checks":null}', 'python3']]) {
      const stub = createServer((_, response) => response.writeHead(200, { 'content-type': 'text/html' }).end(body));
      await new Promise<void>((resolve) => stub.listen(0, '127.0.0.1', resolve));
      onCleanup(() => new Promise<void>((resolve) => stub.close(() => resolve())));
      writeFileSync(node.path('etc/aami/node.json'), JSON.stringify({ ...state, server: `http://127.0.0.1:${(stub.address() as AddressInfo).port}` }));
      rmSync(node.path('var/lib/aami/checks/mount.last')); // one check due, so the list is read
      const run = await dynamicCheck({ AAMI_JSON_TOOL: tool! });
      expect(run.code, body).toBe(0);
      expect(run.stderr, body).toContain('answered something that is not a list of checks; running the last list fetched');
      expect(run.stdout, body).toContain('mount: ran');
      expect(readFileSync(node.path('var/lib/aami/checks/checks.json'), 'utf8'), body).toBe(list);
      for (const name of STARTER_CHECKS) expect(prom(name), `${name} after ${body}`).toContain(`aami_check_success{check="${name}"}`);
    }
  });

  it('runs a check whose last run is in the future (a clock set back), and one that leaves a helper running stops no later run', async () => {
    const { node, dynamicCheck, commitCheck, server } = await registeredNode();
    expect((await dynamicCheck()).code).toBe(0);
    writeFileSync(node.path('var/lib/aami/checks/mount.last'), `${Math.floor(Date.now() / 1000) + 3600}\n`);
    expect((await dynamicCheck()).stdout).toContain('mount: ran');
    // A check that starts a daemon of its own (it outlives the run, in its own session).
    const pidFile = join(tempDir('aami-helper-'), 'pid');
    onCleanup(() => {
      if (existsSync(pidFile)) process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGKILL');
    });
    // A check that reads its stdin (cat, ssh) takes nothing of the list being read: the checks after it run, their results stay.
    await commitCheck('a-reader', { 'check.yaml': 'description: reads stdin\n', 'check.sh': 'cat >/dev/null\necho read_all 1\n' });
    for (const name of ['a-reader', 'mount']) rmSync(node.path(`var/lib/aami/checks/${name}.last`), { force: true });
    const read = await dynamicCheck();
    expect(read.stdout).toContain('a-reader: ran');
    expect(read.stdout).toContain('mount: ran');
    expect(read.stderr).not.toContain('removed the results');
    // Its interval in milliseconds: told to the node in whole seconds, rounded up (a fraction would never run there).
    await commitCheck('leaves-helper', { 'check.yaml': 'description: starts a helper\ninterval: 1500ms\n', 'check.sh': `setsid sleep 60 </dev/null >/dev/null 2>&1 &\necho $! > ${pidFile}\necho helper_started 1\n` });
    expect((await server.admin('GET', '/api/v1/targets/node-1/checks')).json.find((c: { name: string }) => c.name === 'leaves-helper').interval_seconds).toBe(2);
    expect((await dynamicCheck()).stdout).toContain('leaves-helper: ran');
    rmSync(node.path('var/lib/aami/checks/mount.last'));
    const after = await dynamicCheck();
    expect(after.stderr).not.toContain('the previous run is still going');
    expect(after.stdout).toContain('mount: ran');
  });

  it('writes nothing into a results directory others can write (a planted link would be followed)', async () => {
    const { server, node, dynamicCheck } = await registeredNode();
    const textfile = node.path('var/lib/node_exporter/textfile');
    mkdirSync(textfile, { recursive: true });
    chmodSync(textfile, 0o777);
    const victim = join(tempDir('aami-victim-'), 'file');
    writeFileSync(victim, 'kept\n');
    symlinkSync(victim, join(textfile, '.check_mount.prom.tmp'));
    const run = await dynamicCheck();
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('can be written by others than');
    expect(readFileSync(victim, 'utf8')).toBe('kept\n');
    // The node's heartbeat went all the same: the node is not listed stale for a directory's mode.
    expect((await server.admin('GET', '/api/v1/targets/node-1')).json.last_seen).not.toBeNull();
    chmodSync(textfile, 0o755);
    rmSync(join(textfile, '.check_mount.prom.tmp'));
    expect((await dynamicCheck()).code).toBe(0);
  });

  it('prints no node credential under a trace (bash -x)', async () => {
    const { node } = await registeredNode();
    const { node_credential: credential } = JSON.parse(readFileSync(node.path('etc/aami/node.json'), 'utf8'));
    const run = await node.sh(`bash -x ${DYNAMIC_CHECK}`);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('ran');
    expect(`${run.stdout}${run.stderr}`).not.toContain(credential);
  });

  it('never runs twice at once', async () => {
    const { server, node, dynamicCheck } = await registeredNode();
    const lock = node.path('var/lib/aami/dynamic-check.lock');
    mkdirSync(node.path('var/lib/aami'), { recursive: true });
    const [ready, release] = [node.path('../locked'), node.path('../release')];
    // Another run holds the lock until the test lets it go (bounded: 60 s at most).
    const holder = node.sh(`exec 9>${lock}; flock 9; touch ${ready}; for _ in $(seq 600); do [ -e ${release} ] && break; sleep 0.1; done`);
    await waitFor('the lock to be held', async () => existsSync(ready));
    const run = await dynamicCheck();
    writeFileSync(release, '');
    await holder;
    expect(run.code).toBe(0);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain('the previous run is still going');
    // A check that holds the lock for long (a GPU diagnostic) does not hold the node's heartbeat.
    expect((await server.admin('GET', '/api/v1/targets/node-1')).json.last_seen).not.toBeNull();
  });

  it('keeps hostile label values and check arguments as data, from the server', async () => {
    const { server, node, prom, dynamicCheck } = await registeredNode({ gpu: false });
    const canary = join(tempDir('aami-canary-'), 'CANARY');
    const values = HOSTILE.map((value) => value.replaceAll('CANARY', canary));
    // Every starter check gets every hostile value as its arguments (this node's override), and
    // gpu_count comes from a group label: the way a bad pull request or API call would send them.
    const checkYaml = (name: string) => readFileSync(join(ROOT, 'config-repo/checks', name, 'check.yaml'), 'utf8');
    const override = (name: string) => `${checkYaml(name)}targets:\n  node-1: {args: ${JSON.stringify(values)}}\n`;
    const paths = ['disk-usage', 'mount', 'nvme-health'];
    pushFiles(server.repo, Object.fromEntries(paths.map((name) => [`checks/${name}/check.yaml`, override(name)])), 'Hostile arguments');
    await waitFor('the hostile arguments to be served', async () => {
      const checks = (await server.admin('GET', '/api/v1/targets/node-1/checks')).json as Array<{ name: string; args: string[] }>;
      return paths.every((name) => JSON.stringify(checks.find((c) => c.name === name)?.args) === JSON.stringify(values));
    });
    for (const value of values) {
      const patched = await server.admin('PATCH', '/api/v1/groups/ml-training', { labels: { gpu_count: value } });
      // A label value with a control character (a newline) is refused at the door; the rest reach the node.
      if (/[\x00-\x1f]/.test(value)) {
        expect(patched.status, value).toBe(400);
        continue;
      }
      expect(patched.status, value).toBe(200);
      const args = await waitFor('the label to reach the check', async () => {
        const checks = (await server.admin('GET', '/api/v1/targets/node-1/checks')).json;
        const gpu = checks.find((c: { name: string }) => c.name === 'gpu-count');
        return gpu?.args[0] === value && gpu.args;
      });
      expect(args).toEqual([value]);
      for (const tool of ['jq', 'python3']) {
        rmSync(node.path('var/lib/aami/checks'), { recursive: true, force: true });
        const run = await dynamicCheck({ AAMI_JSON_TOOL: tool });
        expect(run.code, run.stderr).toBe(0);
        expect(existsSync(canary), `${tool}: ${value}`).toBe(false);
        for (const name of STARTER_CHECKS) {
          expect(prom(name), `${name} with ${tool}: ${value}`).toContain(`aami_check_success{check="${name}"} 0`);
          expect(run.stdout).toMatch(new RegExp(`^${name}: failed: exit 1: ${name}: `, 'm'));
        }
      }
    }
  }, 120_000);

  it('keeps any argument as data when it runs the last list fetched: 100 KB, NUL bytes, forged names', async () => {
    // The server is unreachable (nothing listens on that port): the node runs its cached list.
    const node = fakeNode({ gpu: false });
    mkdirSync(node.path('etc/aami'), { recursive: true });
    writeFileSync(node.path('etc/aami/node.json'), JSON.stringify({ server: `http://127.0.0.1:${await freePort()}`, target_id: 'node-1', node_credential: 'aami_node_test' }));
    const prom = (name: string) => readFileSync(node.path(`var/lib/node_exporter/textfile/check_${name}.prom`), 'utf8');
    const canary = join(tempDir('aami-canary-'), 'CANARY');
    const values = [...HOSTILE.map((value) => value.replaceAll('CANARY', canary)), `/${'a'.repeat(100_000)}`, 'x'.repeat(100_000)];
    const cache = node.path('var/lib/aami/checks');
    mkdirSync(cache, { recursive: true });
    const checks = STARTER_CHECKS.map((name) => {
      const script = readFileSync(starterScript(name));
      writeFileSync(join(cache, `${name}.sh`), script);
      return { name, sha256: createHash('sha256').update(script).digest('hex'), interval_seconds: 60, timeout_seconds: 10, args: values };
    });
    const forged = [
      { name: 'nul-arg', sha256: checks[0]!.sha256, interval_seconds: 60, timeout_seconds: 10, args: ['/', 'a\u0000b'] },
      { name: '../../../../tmp/escape', sha256: checks[0]!.sha256, interval_seconds: 60, timeout_seconds: 10, args: [] },
      { name: 'bad-interval', sha256: checks[0]!.sha256, interval_seconds: 'a[$(touch CANARY)]'.replace('CANARY', canary), timeout_seconds: 10, args: [] },
    ];
    writeFileSync(join(cache, 'nul-arg.sh'), readFileSync(starterScript(STARTER_CHECKS[0]!)));
    writeFileSync(join(cache, 'checks.json'), JSON.stringify({ hostname: 'node-1', checks: [...checks, ...forged] }));
    for (const tool of ['jq', 'python3']) {
      for (const name of ['disk-usage', 'gpu-count', 'mount', 'nvme-health', 'nul-arg']) rmSync(join(cache, `${name}.last`), { force: true });
      const run = await node.sh(`bash ${DYNAMIC_CHECK}`, { AAMI_JSON_TOOL: tool });
      expect(run.code, run.stderr).toBe(0);
      expect(existsSync(canary), tool).toBe(false);
      for (const name of STARTER_CHECKS) expect(prom(name), `${name} with ${tool}`).toContain(`aami_check_success{check="${name}"} 0`);
      expect(run.stdout).toContain('nul-arg: refused: an argument is not text or holds a NUL byte\n');
      expect(prom('nul-arg')).toContain('aami_check_refused{check="nul-arg"} 1');
      expect(run.stderr.match(/ignoring a malformed entry/g)).toHaveLength(2);
      expect(readdirSync(node.path('var/lib/node_exporter/textfile')).sort()).toEqual([...STARTER_CHECKS, 'nul-arg'].map((name) => `check_${name}.prom`).sort());
      expect(existsSync('/tmp/escape.prom')).toBe(false);
    }
  });
});

describe('starter checks', { timeout: 60_000 }, () => {
  it('run nothing on a hostile argument, and report it: a failure with a message, or their own metric at 0', async () => {
    const node = fakeNode({ gpu: true });
    const canary = join(tempDir('aami-canary-'), 'CANARY');
    for (const value of [...HOSTILE.map((v) => v.replaceAll('CANARY', canary)), 'x'.repeat(100_000), `/${'x'.repeat(100_000)}`]) {
      for (const name of STARTER_CHECKS) {
        // Arguments reach the script as argv, as dynamic-check.sh passes them.
        const run = await node.sh(`bash ${starterScript(name)} "$HOSTILE"`, { HOSTILE: value });
        const what = `${name}: ${JSON.stringify(value.slice(0, 40))}`;
        expect(existsSync(canary), what).toBe(false);
        if (run.code === 0) {
          // "/tmp; touch …" is a well-formed path that does not exist: the path checks say so.
          expect(['disk-usage', 'mount'], what).toContain(name);
          expect(run.stdout, what).toContain(`_present{mountpoint="${value}"} 0\n`);
        } else {
          expect(run.code, what).toBe(1);
          expect(run.stderr, what).toMatch(new RegExp(`^${name}: `));
        }
      }
    }
  });

  it('count the GPUs of an NVIDIA host and of an AMD host', async () => {
    for (const [gpu, count] of [[true, '1'], ['amd', '8']] as const) {
      const node = fakeNode({ gpu });
      const match = await node.sh(`bash ${starterScript('gpu-count')} ${count}`);
      expect(match.code, match.stderr).toBe(0);
      expect(match.stdout).toContain(`aami_gpu_count_visible ${count}\n`);
      expect(match.stdout).toContain('aami_gpu_count_match 1\n');
      expect((await node.sh(`bash ${starterScript('gpu-count')} 0${count}`)).stdout).toContain('aami_gpu_count_match 1\n');
      expect((await node.sh(`bash ${starterScript('gpu-count')} 4`)).stdout).toContain('aami_gpu_count_match 0\n');
    }
  });
});

describe('preflight-check.sh', { timeout: 60_000 }, () => {
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
    const amd = await fakeNode({ gpu: 'amd' }).sh(`bash ${PREFLIGHT} --mode node --server ${server.url}`);
    expect(amd.stdout).toMatch(/^PASS +gpu +AMD: 8 GPUs \(rocm-smi\)$/m);
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
    // An option given last without its value (an unset $SERVER in the one-liner): usage, at once.
    const missing = await node.sh(`timeout 10 bash ${PREFLIGHT} --mode node --server`);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('preflight-check: --server needs a value');
  });
});
