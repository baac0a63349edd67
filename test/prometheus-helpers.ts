import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onCleanup, ROOT, tempDir } from './helpers.js';
import { freePort, requireBinary, waitFor } from './node-helpers.js';

export interface ActiveTarget {
  labels: Record<string, string>;
  scrapePool: string;
  health: string;
}

/**
 * A Prometheus config from deploy/prometheus/ (prometheus.yml or prometheus-http-sd.yml),
 * pointed at this test's server, SD directory and (for http_sd) credential file, with 1 s intervals.
 * Every deployment path must be replaced: one left over would point at this machine's /etc.
 */
export function renderPrometheusConfig(file: string, options: { sdDir: string; serverUrl: string; credentialFile?: string }): string {
  const replacements: Array<[string, string | undefined]> = [
    ['/var/lib/aami-sd/', `${options.sdDir}/`],
    ['http://aami:8080', options.serverUrl],
    ["'aami:8080'", `'${new URL(options.serverUrl).host}'`],
    ['/etc/prometheus/secrets/aami-reader-credential', options.credentialFile],
    ['/etc/prometheus/rules/*.yml', join(ROOT, 'deploy/prometheus/rules/aami.yml')],
    ["'alertmanager:9093'", "'127.0.0.1:9'"],
  ];
  let config = readFileSync(join(ROOT, 'deploy/prometheus', file), 'utf8');
  // Markers first, so that the check below sees only what is left of the deployment's paths.
  replacements.forEach(([from, to], i) => {
    if (to !== undefined) config = config.replaceAll(from, `\0${i}\0`);
  });
  const leftOver = config.split('\n').filter((line) => !/^\s*#/.test(line) && /\/etc\/prometheus|\/var\/lib\/aami|aami:8080|alertmanager:/.test(line));
  if (leftOver.length) throw new Error(`${file}: deployment paths the test does not replace:\n${leftOver.join('\n')}`);
  return config.replace(/\0(\d+)\0/g, (_, i: string) => replacements[Number(i)]![1]!).replace(/(scrape|evaluation|refresh)_interval: \d+s/g, '$1_interval: 1s');
}

/** The real Prometheus on 127.0.0.1 and a free port, stopped at the end of the test. */
export async function startPrometheus(config: string) {
  const binary = requireBinary('prometheus', 'prometheus');
  const dir = tempDir('aami-prometheus-');
  writeFileSync(join(dir, 'prometheus.yml'), config);
  const port = await freePort();
  const child = spawn(binary, [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (chunk: Buffer) => (log = (log + chunk.toString()).slice(-20_000)));
  onCleanup(() => {
    child.kill();
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`prometheus to be ready (${log})`, async () => (await fetch(`${url}/-/ready`)).ok, 150);
  return {
    url,
    log: () => log,
    async targets(): Promise<ActiveTarget[]> {
      return ((await (await fetch(`${url}/api/v1/targets`)).json()) as { data: { activeTargets: ActiveTarget[] } }).data.activeTargets;
    },
    async query(promql: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> {
      return ((await (await fetch(`${url}/api/v1/query?query=${encodeURIComponent(promql)}`)).json()) as { data: { result: [] } }).data.result;
    },
  };
}
