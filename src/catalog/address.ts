import type { ExporterSettings, Settings, Target } from '../schema/index.js';

export function formatAddress(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

export function addressKey(job: string, ip: string, port: number): string {
  // Joined, not a template: a template string of this length is a tree of concatenated
  // strings, a join one flat string. The catalog keeps a key for each exporter of each
  // target: 31 -> 15 MB for the 200k keys of 100k targets (in-process).
  return [job, formatAddress(ip, port)].join(' ');
}

let typesOf: { settings: Settings; types: ReadonlyMap<string, ExporterSettings> } | undefined;

/**
 * The exporter type aami.yaml defines by that name (never one inherited from
 * Object.prototype). From a Map: a property looked up by a string the parse made goes
 * through the runtime, and a 100k-target build looks up several hundred thousand.
 */
export function exporterType(settings: Settings, type: string): ExporterSettings | undefined {
  if (typesOf?.settings !== settings) typesOf = { settings, types: new Map(Object.entries(settings.exporters)) };
  return typesOf.types.get(type);
}

/** Each enabled exporter of a target whose type aami.yaml defines: its job, its port and its index. */
function eachAddress(settings: Settings, target: Target, found: (job: string, port: number, index: number) => void): void {
  const { exporters } = target;
  for (let i = 0; i < exporters.length; i++) {
    const e = exporters[i]!;
    const type = exporterType(settings, e.type);
    if (type && e.enabled) found(type.job, e.port ?? type.port, i);
  }
}

/** Where a target is scraped: one "job address" key per enabled exporter, with the field that gives it. */
export function targetAddresses(settings: Settings, target: Target): Array<{ key: string; job: string; address: string; field: string }> {
  const found: Array<{ key: string; job: string; address: string; field: string }> = [];
  eachAddress(settings, target, (job, port, i) => {
    const address = formatAddress(target.ip_address, port);
    found.push({ key: addressKey(job, target.ip_address, port), job, address, field: `exporters[${i}].port` });
  });
  return found;
}

/** The "job address" keys alone (what the catalog's addresses are indexed by). */
export function addressKeys(settings: Settings, target: Target): string[] {
  const keys: string[] = [];
  eachAddress(settings, target, (job, port) => keys.push(addressKey(job, target.ip_address, port)));
  return keys;
}
