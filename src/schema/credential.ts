import { z } from 'zod';
import { sha256Hash, slug, timestamp } from './common.js';

/**
 * What a named API credential may do, each role including the ones after it:
 * admin (everything, credentials included), editor (groups, targets, tokens, sync),
 * reader (inventory, http_sd, history, checks: what Prometheus, Grafana and CI need).
 */
export const ROLES = ['admin', 'editor', 'reader'] as const;
export const role = z.enum(ROLES);
export type Role = z.infer<typeof role>;

/** A person or a system; it becomes the author of the commits made with the credential. */
export const credentialName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$/, 'must be 1-100 letters, digits, ".", "_", "@" or "-" (a person or a system, e.g. alice or prometheus-dc1)');

/** credentials/<id>.yaml — only the hash of the secret is kept. */
export const credentialFile = z.strictObject({
  id: slug,
  name: credentialName,
  role,
  secret_hash: sha256Hash,
  expires_at: timestamp.optional(),
  revoked: z.boolean().default(false),
  created_at: timestamp.optional(),
  /** Who created it (a credential name), so a pull request or `git log` shows who granted what. */
  created_by: credentialName.optional(),
});

export type Credential = z.infer<typeof credentialFile>;
