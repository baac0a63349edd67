import type { ExporterSettings, Settings, Target } from '../schema/index.js';

export function formatAddress(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** What a target claims at an address: its job and its address ("node 10.0.0.1:9100"), one key per enabled exporter. */
export function addressKey(job: string, ip: string, port: number): string {
  return `${job} ${formatAddress(ip, port)}`;
}

/** The addresses on one IP address where several targets are scraped: "job port" (portKey) → host name. */
export type AddressTable = ReadonlyMap<string, string>;

export const portKey = (job: string, port: number) => `${job} ${port}`;

/**
 * Where a catalog's targets are scraped, without a key for each address of each target: an
 * IP address's one target (aami.yaml's exporter types give its addresses), or a table of
 * the addresses there when several targets share the IP address. The catalog once kept a
 * "job address" key for each exporter of each target: ~15 MB of keys and index at 100k
 * targets (of the catalog's ~90 MB), and a full build's garbage twice that.
 */
export interface AddressIndex {
  readonly settings: Settings;
  readonly targets: ReadonlyMap<string, Target>;
  /** IP address → the host name of the one target scraped there, or the table of its addresses when several are. A target scraped nowhere is not in it. */
  readonly hostsByIp: ReadonlyMap<string, string | AddressTable>;
}

/** The host name of the target scraped for `job` at ip:port, if any (placed targets never share an address). */
export function scrapedAt(index: AddressIndex, job: string, ip: string, port: number): string | undefined {
  const on = index.hostsByIp.get(ip);
  if (on === undefined) return undefined;
  if (typeof on !== 'string') return on.get(portKey(job, port));
  return portKeys(index.settings, index.targets.get(on)).includes(portKey(job, port)) ? on : undefined;
}

/** scrapedAt for an address key (addressKey's "job address"). */
export function scrapedAtKey(index: AddressIndex, key: string): string | undefined {
  const space = key.indexOf(' ');
  const address = key.slice(space + 1);
  const colon = address.lastIndexOf(':');
  const ip = address[0] === '[' ? address.slice(1, colon - 1) : address.slice(0, colon);
  return scrapedAt(index, key.slice(0, space), ip, Number(address.slice(colon + 1)));
}

/** Who is scraped at each of a target's addresses (as `settings` gives them), looked up in `index`: a host name or undefined for each. */
export function holdersOf(index: AddressIndex, settings: Settings, target: Target): Array<string | undefined> {
  const holders: Array<string | undefined> = [];
  eachAddress(settings, target, (job, port) => holders.push(scrapedAt(index, job, target.ip_address, port)));
  return holders;
}

/** Each job and port a target is scraped at (none for no target). */
export function portKeys(settings: Settings, target: Target | undefined): string[] {
  const keys: string[] = [];
  if (target) eachAddress(settings, target, (job, port) => keys.push(portKey(job, port)));
  return keys;
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

/** The "job address" keys alone (what placement's address claims are keyed by). */
export function addressKeys(settings: Settings, target: Target): string[] {
  const keys: string[] = [];
  eachAddress(settings, target, (job, port) => keys.push(addressKey(job, target.ip_address, port)));
  return keys;
}
