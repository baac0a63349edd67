import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ROOT, tempDir } from './helpers.js';
import { requireBinary } from './node-helpers.js';

const deploy = (path: string) => join(ROOT, 'deploy', path);
const read = (path: string) => readFileSync(deploy(path), 'utf8');

describe('deploy/prometheus', () => {
  it('is a configuration promtool accepts', () => {
    const promtool = requireBinary('promtool', 'prometheus');
    const dir = tempDir();
    mkdirSync(join(dir, 'sd'));
    for (const job of ['node', 'dcgm']) writeFileSync(join(dir, 'sd', `${job}.json`), '[]\n');
    writeFileSync(join(dir, 'token'), 'x');
    const config = read('prometheus/prometheus.yml')
      .replaceAll('/etc/prometheus/aami-sd/', `${dir}/sd/`)
      .replaceAll('/etc/prometheus/secrets/aami-read-token', join(dir, 'token'))
      .replaceAll('/etc/prometheus/rules/*.yml', deploy('prometheus/rules/*.yml'));
    writeFileSync(join(dir, 'prometheus.yml'), config);
    const out = execFileSync(promtool, ['check', 'config', join(dir, 'prometheus.yml')], { encoding: 'utf8' });
    expect(out).toContain('SUCCESS');
    expect(out).toContain('11 rules found');
  });

  it('has alert rules whose unit tests pass', () => {
    const promtool = requireBinary('promtool', 'prometheus');
    const result = spawnSync(promtool, ['test', 'rules', 'aami-rules.test.yml'], { cwd: deploy('prometheus/tests'), encoding: 'utf8' });
    expect(result.stdout + result.stderr).toContain('SUCCESS');
    expect(result.status).toBe(0);
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
