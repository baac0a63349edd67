import { own, type Settings, type Target } from '../schema/index.js';

export function formatAddress(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

export function addressKey(job: string, ip: string, port: number): string {
  return `${job} ${formatAddress(ip, port)}`;
}

/** Each enabled exporter of a target whose type aami.yaml defines: its job, its port and its index. */
function eachAddress(settings: Settings, target: Target, found: (job: string, port: number, index: number) => void): void {
  const { exporters } = target;
  for (let i = 0; i < exporters.length; i++) {
    const e = exporters[i]!;
    const type = own(settings.exporters, e.type);
    if (type && e.enabled) found(type.job, e.port ?? type.port, i);
  }
}

/** Where a target is scraped: one "job address" key per enabled exporter, with the field that gives it. */
export function targetAddresses(settings: Settings, target: Target): Array<{ key: string; job: string; address: string; field: string }> {
  const found: Array<{ key: string; job: string; address: string; field: string }> = [];
  eachAddress(settings, target, (job, port, i) => {
    const address = formatAddress(target.ip_address, port);
    found.push({ key: `${job} ${address}`, job, address, field: `exporters[${i}].port` });
  });
  return found;
}

/** The "job address" keys alone (what the catalog's addresses are indexed by). */
export function addressKeys(settings: Settings, target: Target): string[] {
  const keys: string[] = [];
  eachAddress(settings, target, (job, port) => keys.push(addressKey(job, target.ip_address, port)));
  return keys;
}
