import { z } from 'zod';
import { duration, metricsPath, port, slug } from './common.js';

export const exporterType = z
  .string()
  .regex(/^[a-z][a-z0-9_]{0,62}$/, 'must be lowercase letters, digits and "_", starting with a letter');

export const jobName = z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'must be lowercase letters, digits, "_" or "-"');

export const exporterSettings = z.strictObject({
  job: jobName,
  port,
  metrics_path: metricsPath.optional(),
  scheme: z.enum(['http', 'https']).optional(),
  interval: duration.optional(),
});

/** aami.yaml at the root of the config repo. */
export const settingsFile = z.strictObject({
  exporters: z.record(exporterType, exporterSettings),
  /** Group a target joins when an admin registers it without naming one. */
  default_group: slug.optional(),
});

export type Settings = z.infer<typeof settingsFile>;
export type ExporterSettings = z.infer<typeof exporterSettings>;

export const DEFAULT_SETTINGS: Settings = {
  exporters: {
    node_exporter: { job: 'node', port: 9100 },
    dcgm_exporter: { job: 'dcgm', port: 9400 },
  },
};
