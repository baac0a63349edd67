import { own, type Settings, type Target } from '../schema/index.js';

export function formatAddress(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

export function addressKey(job: string, ip: string, port: number): string {
  return `${job} ${formatAddress(ip, port)}`;
}

/** Where a target is scraped: one "job address" key per enabled exporter, with the field that gives it. */
export function targetAddresses(settings: Settings, target: Target): Array<{ key: string; job: string; address: string; field: string }> {
  const found: Array<{ key: string; job: string; address: string; field: string }> = [];
  target.exporters.forEach((e, i) => {
    const type = own(settings.exporters, e.type);
    if (!type || !e.enabled) return;
    const address = formatAddress(target.ip_address, e.port ?? type.port);
    found.push({ key: `${type.job} ${address}`, job: type.job, address, field: `exporters[${i}].port` });
  });
  return found;
}
