import { isIP } from 'node:net';
import { z } from 'zod';

/** Ids of groups and tokens: typed by people in pull requests, used as file names and in URLs. */
export const slug = z
  .string()
  .regex(/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/, 'must be 1-63 lowercase letters, digits or "-", not starting or ending with "-"');

/** RFC 1123 host name, lowercase. Every dot-separated label starts with a letter or digit, so no "/" and no "..". */
export const hostname = z
  .string()
  .max(253, 'must be at most 253 characters')
  .regex(
    /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/,
    'must be a lowercase host name (letters, digits, "-" and "." only)',
  );

export const ipAddress = z.string().refine((value) => isIP(value) !== 0, 'must be an IPv4 or IPv6 address');

export const port = z.number().int('must be a whole number').min(1, 'must be 1-65535').max(65535, 'must be 1-65535');

/** Labels aami adds to every target (its groups); users cannot set them. */
export const SYSTEM_LABEL_PREFIX = 'aami_';

/**
 * Label names valid for every Prometheus version (2.x rejects UTF-8 names). Names starting
 * with "__" are Prometheus's own; the few we set (__metrics_path__, __scheme__, ...) come
 * from exporter fields, never from label maps.
 */
export const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
export const labelName = z
  .string()
  .regex(LABEL_NAME, 'must match [a-zA-Z_][a-zA-Z0-9_]*')
  .refine((name) => !name.startsWith('__'), 'names starting with "__" are reserved for Prometheus')
  .refine((name) => !name.startsWith(SYSTEM_LABEL_PREFIX), 'names starting with "aami_" are set by aami itself');

/** YAML authors write `gpu_count: 8`; Prometheus label values are strings. */
export const labelValue = z
  .union([z.string(), z.number(), z.boolean()])
  .transform(String)
  .refine((value) => value.length <= 1024, 'must be at most 1024 characters');

export const labels = z.record(labelName, labelValue);

/** Prometheus duration such as 30s, 1m, 1h30m. */
export const duration = z
  .string()
  .regex(/^(?:\d+(?:ms|s|m|h|d|w|y))+$/, 'must be a Prometheus duration such as 15s, 1m or 1h30m');

export const timestamp = z.iso.datetime({ offset: true, message: 'must be an RFC 3339 time such as 2026-12-31T23:59:59Z' });

export const sha256Hash = z.string().regex(/^sha256:[0-9a-f]{64}$/, 'must be "sha256:" and 64 hex digits');
