import { formatAddress, type Catalog } from '../catalog/build.js';
import { targetLabels } from '../catalog/labels.js';

export interface SdEntry {
  targets: string[];
  labels: Record<string, string>;
}

/** File name of a job's file_sd output. */
export const sdFileName = (job: string) => `${job}.json`;

/**
 * Catalog → file_sd JSON text per file name: one file per job, including jobs with no
 * targets (an empty list, so Prometheus's file_sd has a file to watch). Pure; the same
 * catalog always gives the same bytes: targets by hostname, labels by name.
 */
export function compile(catalog: Catalog): Map<string, string> {
  return new Map([...compileEntries(catalog)].map(([job, entries]) => [sdFileName(job), `${JSON.stringify(entries, null, 2)}\n`]));
}

/** The entries of each job, by job name (for http_sd and the API). */
export function compileEntries(catalog: Catalog): Map<string, SdEntry[]> {
  const jobs = new Map<string, SdEntry[]>();
  for (const type of Object.values(catalog.settings.exporters)) jobs.set(type.job, []);
  const hostnames = [...catalog.targets.keys()].sort();
  for (const hostname of hostnames) {
    const target = catalog.targets.get(hostname)!;
    const base = targetLabels(catalog, target);
    for (const exporter of target.exporters) {
      const type = catalog.settings.exporters[exporter.type];
      if (!exporter.enabled || !type) continue;
      const labels: Record<string, string> = { ...base };
      const metricsPath = exporter.metrics_path ?? type.metrics_path;
      const scheme = exporter.scheme ?? type.scheme;
      const interval = exporter.interval ?? type.interval;
      if (metricsPath) labels.__metrics_path__ = metricsPath;
      if (scheme) labels.__scheme__ = scheme;
      if (interval) labels.__scrape_interval__ = interval;
      jobs.get(type.job)!.push({ targets: [formatAddress(target.ip_address, exporter.port ?? type.port)], labels: sortKeys(labels) });
    }
  }
  return jobs;
}

function sortKeys(labels: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
