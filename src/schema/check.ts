import { z } from 'zod';
import { duration, hostname, LABEL_NAME, slug } from './common.js';

/** Settings a group or a target can override for one check. */
export const checkOverride = z.strictObject({
  enabled: z.boolean().optional(),
  interval: duration.optional(),
  timeout: duration.optional(),
  args: z.array(z.string().max(1000)).max(50).optional(),
});

/**
 * checks/<name>/check.yaml: a dynamic check, its script beside it, and where it applies.
 * Precedence, lowest first: these top-level settings, then group overrides down the
 * target's group tree (the nearest group wins), then the target's own override.
 */
export const checkFile = z.strictObject({
  description: z.string().max(2000).optional(),
  /** The script's file name in the same directory. */
  script: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'must be a file name in the check directory').default('check.sh'),
  enabled: z.boolean().default(true),
  interval: duration.default('1m'),
  timeout: duration.default('30s'),
  args: z.array(z.string().max(1000)).max(50).default([]),
  /**
   * Label names the target must have, each with a non-empty value, for the check to apply
   * at all (e.g. [gpu_count]: GPU checks skip CPU-only nodes of a group that enables them).
   */
  requires_labels: z.array(z.string().regex(LABEL_NAME, 'must be a label name ([a-zA-Z_][a-zA-Z0-9_]*)')).max(20).default([]),
  groups: z.record(slug, checkOverride).default({}),
  targets: z.record(hostname, checkOverride).default({}),
});

export type CheckPolicy = z.infer<typeof checkFile>;
export type CheckOverride = z.infer<typeof checkOverride>;

/** A check's script as the catalog keeps it. */
export interface CheckScript {
  check: string;
  file: string;
  text: string;
  sha256: string;
}
