import { z } from 'zod';
import { duration, hostname, ipAddress, labels, port, sha256Hash, slug, timestamp } from './common.js';
import { exporterType } from './settings.js';

export const exporter = z.strictObject({
  type: exporterType,
  /** Defaults to the port aami.yaml gives the exporter type. */
  port: port.optional(),
  enabled: z.boolean().default(true),
  metrics_path: z.string().startsWith('/', 'must start with "/"').optional(),
  scheme: z.enum(['http', 'https']).optional(),
  interval: duration.optional(),
});

/** What a node reported about itself at registration; informative, not used for scraping. */
export const facts = z.strictObject({
  cpu_cores: z.number().int().min(0).optional(),
  memory_bytes: z.number().int().min(0).optional(),
  gpu_vendor: z.string().max(100).optional(),
  gpu_model: z.string().max(200).optional(),
  gpu_count: z.number().int().min(0).optional(),
  os: z.string().max(200).optional(),
  kernel: z.string().max(200).optional(),
  interfaces: z.array(z.string().max(100)).max(64).optional(),
});

/** targets/<primary_group>/<hostname>.yaml */
export const targetFile = z.strictObject({
  hostname,
  ip_address: ipAddress,
  primary_group: slug,
  /** Further groups the target belongs to, besides the primary one. */
  groups: z.array(slug).default([]),
  exporters: z.array(exporter).default([{ type: 'node_exporter', enabled: true }]),
  labels: labels.default({}),
  facts: facts.optional(),
  /** Set by self-registration: the token that enrolled the node, and the hash of the node's own credential. */
  registered_by_token: slug.optional(),
  node_credential_hash: sha256Hash.optional(),
  registered_at: timestamp.optional(),
});

export type Target = z.infer<typeof targetFile>;
export type Exporter = z.infer<typeof exporter>;
export type Facts = z.infer<typeof facts>;
