import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ROOT, tempDir } from './helpers.js';
import { ADMIN, configServer, requireBinary, runningNodeExporter, waitFor } from './node-helpers.js';
import { renderPrometheusConfig, startPrometheus } from './prometheus-helpers.js';

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

describe('deploy/docker-compose.yml', () => {
  it('runs the four services, shares the SD directory, and has no default secret', () => {
    const text = read('docker-compose.yml');
    const compose = parse(text);
    expect(Object.keys(compose.services).sort()).toEqual(['aami', 'alertmanager', 'grafana', 'prometheus']);
    expect(compose.services.aami.volumes).toContain('aami-sd:/var/lib/aami/sd');
    expect(compose.services.prometheus.volumes).toContain('aami-sd:/etc/prometheus/aami-sd:ro');
    // Every secret is required from the env file: ${NAME:?...}, never a literal or a default.
    for (const [name, value] of Object.entries({ ...compose.services.aami.environment, ...compose.services.grafana.environment })) {
      if (/PASSWORD|TOKEN/.test(name)) expect(value, name).toMatch(/^\$\{\w+:\?.+\}$/);
    }
    expect(read('.env.example')).toMatch(/^GRAFANA_ADMIN_PASSWORD=$/m);
  });
});

describe('deploy/systemd', () => {
  it('runs aami serve as its own unprivileged user, hardened', () => {
    const unit = read('systemd/aami.service');
    for (const line of ['User=aami', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'StateDirectory=aami', 'KillSignal=SIGTERM', 'CapabilityBoundingSet=']) {
      expect(unit).toContain(`\n${line}\n`);
    }
    expect(unit).toMatch(/^ExecStart=.* serve$/m);
    expect(read('systemd/aami.sysusers.conf')).toMatch(/^u aami /m);
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
