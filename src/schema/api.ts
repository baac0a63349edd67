import { z } from 'zod';
import { hostname, ipAddress, labels, slug, timestamp } from './common.js';
import { exporter, facts } from './target.js';

/** Host names arrive as `hostname` prints them; ids are lowercase. */
const hostnameInput = z.string().transform((value) => value.toLowerCase()).pipe(hostname);

const groupFields = {
  name: z.string().min(1, 'must not be empty').max(200),
  namespace: slug,
  description: z.string().max(2000).optional(),
  parent_id: slug.nullish(),
  labels: labels.optional(),
};

export const groupCreate = z.strictObject({
  /** Defaults to the name made into an id ("ML Training" → "ml-training"). */
  id: slug.optional(),
  ...groupFields,
});
export const groupReplace = z.strictObject({ id: slug.optional(), ...groupFields });
export const groupPatch = z.strictObject(groupFields).partial();

export const tokenCreate = z.strictObject({
  name: z.string().min(1, 'must not be empty').max(200),
  default_group_id: slug,
  max_uses: z.number().int('must be a whole number').min(1, 'must be at least 1').max(1_000_000),
  expires_at: timestamp,
  labels: labels.optional(),
});

const targetFields = {
  ip_address: ipAddress,
  primary_group_id: slug,
  group_ids: z.array(slug).max(100).optional(),
  exporters: z.array(exporter).min(1, 'must list at least one exporter').max(32).optional(),
  labels: labels.optional(),
};

export const targetCreate = z.strictObject({ hostname: hostnameInput, ...targetFields });
export const targetReplace = z.strictObject({ hostname: hostnameInput.optional(), ...targetFields });
export const targetPatch = z.strictObject(targetFields).partial();

export const registration = z.strictObject({
  hostname: hostnameInput,
  ip_address: ipAddress,
  /** A group inside the token's default group; defaults to the token's group. */
  group_id: slug.optional(),
  exporters: z.array(exporter).min(1, 'must list at least one exporter').max(32).optional(),
  labels: labels.optional(),
  facts: facts.optional(),
  /** Issue a new node credential even if nothing else changed (the node lost its own). */
  rotate_credential: z.boolean().optional(),
});

export type GroupCreate = z.infer<typeof groupCreate>;
export type GroupPatch = z.infer<typeof groupPatch>;
export type TokenCreate = z.infer<typeof tokenCreate>;
export type TargetCreate = z.infer<typeof targetCreate>;
export type TargetPatch = z.infer<typeof targetPatch>;
export type Registration = z.infer<typeof registration>;
