import { z } from 'zod';
import { duration, hostname, ipAddress, labels, metricsPath, port, printable, sha256Hash, slug, timestamp } from './common.js';
import { exporterType } from './settings.js';

export const exporter = z.strictObject({
  type: exporterType,
  /** Defaults to the port aami.yaml gives the exporter type. */
  port: port.optional(),
  enabled: z.boolean().default(true),
  metrics_path: metricsPath.optional(),
  scheme: z.enum(['http', 'https']).optional(),
  interval: duration.optional(),
});

/** What a node reported about itself at registration; informative, not used for scraping. */
export const facts = z.strictObject({
  cpu_cores: z.number().int().min(0).optional(),
  memory_bytes: z.number().int().min(0).optional(),
  gpu_vendor: printable(100).optional(),
  gpu_model: printable(200).optional(),
  gpu_count: z.number().int().min(0).max(1024).optional(),
  os: printable(200).optional(),
  kernel: printable(200).optional(),
  interfaces: z.array(printable(100)).max(64).optional(),
});

/** sha256 hex of "aami-machine-id-v2:" + /etc/machine-id (or the DMI product UUID), as bootstrap.sh sends it. */
export const machineId = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits (a sha256 of the machine id)');

/** targets/<primary_group>/<hostname>.yaml */
export const targetFile = z.strictObject({
  hostname,
  ip_address: ipAddress,
  primary_group: slug,
  /** Further groups the target belongs to, besides the primary one. */
  groups: z.array(slug).default([]),
  exporters: z.array(exporter).default([{ type: 'node_exporter', enabled: true }]),
  /** The admin's labels (API, pull requests): they win over everything below and survive any re-run of bootstrap. */
  labels: labels.default({}),
  /** The node's own labels: its GPU facts and bootstrap's --label flags, replaced whole when the node re-registers. */
  node_labels: labels.default({}),
  /** The enrolling token's labels, fixed at enrolment: the node cannot override them. */
  token_labels: labels.default({}),
  facts: facts.optional(),
  /** Set by self-registration: the token that enrolled the node, and the hash of the node's own credential. */
  registered_by_token: slug.optional(),
  node_credential_hash: sha256Hash.optional(),
  /**
   * The machine's identity: a different machine claiming this host name is refused. Kept as a
   * hash of what the node sends (as its credential is), so that reading it (the repository,
   * the API) gives nothing a token holder could send to take the host over.
   */
  machine_id_hash: sha256Hash.optional(),
  /**
   * Older files: the identity as the node sent it, where anyone reading the repository (its
   * history too) or the API saw it. Read, never trusted: it proves nothing. It stays until the
   * node's next update with its credential records the hash of a new one (bootstrap.sh's v2),
   * so that the old value sent again is never recorded.
   */
  machine_id: machineId.optional(),
  registered_at: timestamp.optional(),
});

export type Target = z.infer<typeof targetFile>;
export type Exporter = z.infer<typeof exporter>;
export type Facts = z.infer<typeof facts>;
