import { z } from 'zod';
import { labels, sha256Hash, slug, timestamp } from './common.js';

/** tokens/<id>.yaml — the secret itself is never stored, only its hash. */
export const tokenFile = z
  .strictObject({
    id: slug,
    name: z.string().min(1, 'must not be empty').max(200),
    secret_hash: sha256Hash,
    default_group: slug,
    max_uses: z.number().int('must be a whole number').min(1, 'must be at least 1'),
    uses: z.number().int('must be a whole number').min(0, 'must not be negative').default(0),
    expires_at: timestamp,
    labels: labels.default({}),
    revoked: z.boolean().default(false),
    created_at: timestamp.optional(),
  })
  .refine((token) => token.uses <= token.max_uses, { path: ['uses'], message: 'must not exceed max_uses' });

export type Token = z.infer<typeof tokenFile>;
