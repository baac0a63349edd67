import { BlockList, isIP } from 'node:net';
import { z } from 'zod';

/** Ids of groups and tokens: typed by people in pull requests, used as file names and in URLs. */
export const slug = z
  .string()
  .regex(/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/, 'must be 1-63 lowercase letters, digits or "-", not starting or ending with "-"');

/**
 * RFC 1123 host name, lowercase. Every dot-separated label starts with a letter or digit, so
 * no "/" and no "..". At most 250 characters, not DNS's 253: the target's file is
 * `<hostname>.yaml`, and a name past NAME_MAX (255) makes `git clone` of the repo fail for
 * everyone.
 */
export const MAX_HOSTNAME = 250;
export const hostname = z
  .string()
  .max(MAX_HOSTNAME, `must be at most ${MAX_HOSTNAME} characters (its file, <hostname>.yaml, must fit a file name)`)
  .regex(
    /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/,
    'must be a lowercase host name (letters, digits, "-" and "." only)',
  );

/**
 * An IP address in one spelling only: "::0001", "0:0:0:0:0:0:0:1" and "::1" are one address,
 * and so are "::ffff:10.0.0.1" and "10.0.0.1" — two spellings must not let two targets
 * scrape the same endpoint. Zone ids (fe80::1%eth0) name an interface of one host: refused.
 */
export const ipAddress = z
  .string()
  .refine((value) => isIP(value) !== 0 && !value.includes('%'), 'must be an IPv4 or IPv6 address (without a zone id)')
  .transform(canonicalIp);

/**
 * Where a node's own write (a bootstrap token's enrolment, a node credential's update) may
 * not point Prometheus: no address a node is scraped at. Unspecified ("this network"),
 * link-local (where cloud metadata services answer, 169.254.169.254: a token holder would
 * have Prometheus fetch them and show what they answer), multicast and broadcast. Loopback
 * stays: a server, Prometheus and a node on one host. An admin's target may be anywhere.
 */
const NOT_A_NODE = new BlockList();
NOT_A_NODE.addSubnet('0.0.0.0', 8, 'ipv4');
NOT_A_NODE.addSubnet('169.254.0.0', 16, 'ipv4');
NOT_A_NODE.addSubnet('224.0.0.0', 4, 'ipv4');
NOT_A_NODE.addAddress('255.255.255.255', 'ipv4');
NOT_A_NODE.addAddress('::', 'ipv6');
NOT_A_NODE.addSubnet('fe80::', 10, 'ipv6');
NOT_A_NODE.addSubnet('ff00::', 8, 'ipv6');
// IPv4 inside IPv6 (compatible, and NAT64's well-known prefix), and EC2's IPv6 metadata address.
NOT_A_NODE.addSubnet('::', 96, 'ipv6');
NOT_A_NODE.addSubnet('64:ff9b::', 96, 'ipv6');
NOT_A_NODE.addSubnet('64:ff9b:1::', 48, 'ipv6');
NOT_A_NODE.addAddress('fd00:ec2::254', 'ipv6');

export const nodeIpAddress = ipAddress
  .refine(
    // ::1 lies in ::/96 (IPv4-compatible addresses): loopback stays allowed.
    (value) => value === '::1' || !NOT_A_NODE.check(value, isIP(value) === 6 ? 'ipv6' : 'ipv4'),
    'must be an address the node is scraped at: not unspecified (0.0.0.0, ::), link-local (169.254.0.0/16, fe80::/10), IPv4 inside IPv6 (::/96, NAT64), EC2\'s IPv6 metadata address, multicast or broadcast',
  )
  .describe('The node\'s address: not unspecified, link-local (where cloud metadata services answer), IPv4 inside IPv6, EC2\'s IPv6 metadata address, multicast or broadcast (an admin\'s target may be anywhere)');

export function canonicalIp(value: string): string {
  if (isIP(value) === 4) return value;
  const compressed = new URL(`http://[${value}]/`).hostname.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(compressed);
  if (!mapped) return compressed;
  const [high, low] = [parseInt(mapped[1]!, 16), parseInt(mapped[2]!, 16)];
  return [high >> 8, high & 255, low >> 8, low & 255].join('.');
}

export const port = z.number().int('must be a whole number').min(1, 'must be 1-65535').max(65535, 'must be 1-65535');

/** Labels aami adds to every target (its groups); users cannot set them. */
export const SYSTEM_LABEL_PREFIX = 'aami_';

/**
 * Label names nobody may set in a label map (API, token, node, group or target file):
 * `job` and `instance` are Prometheus's identity of a series (a node setting them could pass
 * for another node), `hostname` is aami's own; `__*` and `aami_*` are prefixes reserved for
 * Prometheus and aami. The scrape parameters (__metrics_path__, __scheme__, ...) come only
 * from exporter fields.
 */
export const RESERVED_LABELS = new Set(['job', 'instance', 'hostname']);

/** Label names valid for every Prometheus version (2.x rejects UTF-8 names). */
export const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
export const labelName = z
  .string()
  .max(128, 'must be at most 128 characters')
  .regex(LABEL_NAME, 'must match [a-zA-Z_][a-zA-Z0-9_]*')
  .refine((name) => !name.startsWith('__'), 'names starting with "__" are reserved for Prometheus')
  .refine((name) => !name.startsWith(SYSTEM_LABEL_PREFIX), 'names starting with "aami_" are set by aami itself')
  .refine((name) => !RESERVED_LABELS.has(name), 'is reserved: "job", "instance" and "hostname" are set by Prometheus or aami');

/** No control characters (C0, DEL, C1) and no line or paragraph separators: text that may reach a log line, a commit or a shell. */
const CONTROL = /[\p{Cc}\u2028\u2029]/u;
export const printable = (max: number) =>
  z
    .string()
    .max(max, `must be at most ${max} characters`)
    .refine((value) => !CONTROL.test(value), 'must not contain control characters (newlines, tabs, NUL, ...)');

/** Free text that may span lines (a description): printable but for newlines and tabs. */
const CONTROL_BUT_LINES = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]/;
export const text = (max: number) =>
  z
    .string()
    .max(max, `must be at most ${max} characters`)
    .refine((value) => !CONTROL_BUT_LINES.test(value), 'must not contain control characters');

/**
 * A label value is data: printable and bounded. YAML authors write `gpu_count: 8`;
 * Prometheus label values are strings.
 */
export const labelValue = z
  .union([z.string(), z.number(), z.boolean()])
  .transform(String)
  .pipe(printable(1024));

export const labels = z.record(labelName, labelValue).refine((map) => Object.keys(map).length <= 64, 'must have at most 64 labels');

/** The value of an own property, never one inherited from Object.prototype ("constructor", "toString"). */
export function own<T>(record: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

/** Prometheus duration such as 30s, 1m, 1h30m. */
export const duration = z
  .string()
  .regex(/^(?:\d+(?:ms|s|m|h|d|w|y))+$/, 'must be a Prometheus duration such as 15s, 1m or 1h30m');

export const timestamp = z.iso.datetime({ offset: true, message: 'must be an RFC 3339 time such as 2026-12-31T23:59:59Z' });

/**
 * A scrape path (Prometheus's __metrics_path__): a URL path of at most 256 characters, of
 * the characters RFC 3986 allows in one as they are. It reaches the SD files, and Prometheus
 * puts it in a request line: no quote, space, newline or NUL. No "%" either: Prometheus
 * escapes the path itself, so an escape written here would be sent as "%25...".
 */
export const metricsPath = z
  .string()
  .max(256, 'must be at most 256 characters')
  .regex(/^\/[A-Za-z0-9._~!$&'()*+,;=:@\/-]*$/, 'must be a URL path: "/" then letters, digits and -._~!$&\'()*+,;=:@/');

export const sha256Hash = z.string().regex(/^sha256:[0-9a-f]{64}$/, 'must be "sha256:" and 64 hex digits');
