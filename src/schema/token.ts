import { z } from 'zod';
import { duration, labels, printable, sha256Hash, slug, timestamp } from './common.js';

/** tokens/<id>.yaml — the secret itself is never stored, only its hash. */
export const tokenFile = z
  .strictObject({
    id: slug,
    name: printable(200).min(1, 'must not be empty'),
    secret_hash: sha256Hash,
    default_group: slug,
    /** New hosts it may enrol; for an ephemeral token, hosts registered at the same time. */
    max_uses: z.number().int('must be a whole number').min(1, 'must be at least 1'),
    /** Hosts enrolled so far (for an ephemeral token: ever, for information). */
    uses: z.number().int('must be a whole number').min(0, 'must not be negative').default(0),
    expires_at: timestamp,
    labels: labels.default({}),
    revoked: z.boolean().default(false),
    created_at: timestamp.optional(),
    /**
     * Nodes of an autoscaling group: they deregister on shutdown, and the server removes
     * those whose last heartbeat is older than ttl_after_last_seen.
     */
    ephemeral: z.boolean().default(false),
    ttl_after_last_seen: duration.optional(),
    /** Whether its nodes may deregister themselves (DELETE /api/v1/nodes/self). */
    allow_deregister: z.boolean().default(true),
  })
  .refine((token) => token.ephemeral || token.uses <= token.max_uses, { path: ['uses'], message: 'must not exceed max_uses' })
  .refine((token) => !token.ephemeral || token.ttl_after_last_seen !== undefined, { path: ['ttl_after_last_seen'], message: 'is required for an ephemeral token' });

export type Token = z.infer<typeof tokenFile>;
