import { z } from 'zod';
import { duration, hostname, ipAddress, labelName, labels, labelValue, nodeIpAddress, printable, slug, text, timestamp } from './common.js';
import { credentialName, role } from './credential.js';
import { exporter, facts, machineId } from './target.js';

/** Host names arrive as `hostname` prints them; ids are lowercase. */
const hostnameInput = z.string().transform((value) => value.toLowerCase()).pipe(hostname);

const groupFields = {
  name: printable(200).min(1, 'must not be empty'),
  namespace: slug,
  description: text(2000).optional(),
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

export const tokenCreate = z
  .strictObject({
    name: printable(200).min(1, 'must not be empty'),
    default_group_id: slug,
    max_uses: z.number().int('must be a whole number').min(1, 'must be at least 1').max(1_000_000),
    expires_at: timestamp,
    labels: labels.optional(),
    /** Autoscaling: max_uses counts nodes registered at the same time; silent nodes are removed after the TTL. */
    ephemeral: z.boolean().optional(),
    ttl_after_last_seen: duration.optional(),
    allow_deregister: z.boolean().optional(),
  })
  .refine((t) => !t.ephemeral || t.ttl_after_last_seen !== undefined, { path: ['ttl_after_last_seen'], message: 'is required for an ephemeral token (e.g. "10m")' })
  .refine((t) => t.ephemeral || t.ttl_after_last_seen === undefined, { path: ['ttl_after_last_seen'], message: 'applies to ephemeral tokens only' });

const targetFields = {
  ip_address: ipAddress,
  primary_group_id: slug,
  group_ids: z.array(slug).max(100).optional(),
  exporters: z.array(exporter).min(1, 'must list at least one exporter').max(32).optional(),
  labels: labels.optional(),
};

export const targetCreate = z.strictObject({ hostname: hostnameInput, ...targetFields });
export const targetReplace = z.strictObject({ hostname: hostnameInput.optional(), ...targetFields });
/**
 * PATCH is a JSON merge patch (RFC 7396): fields given replace, a label set to null is
 * removed, labels not named are kept; null for a list restores its default.
 */
export const targetPatch = z.strictObject({
  ip_address: ipAddress.optional(),
  primary_group_id: slug.optional(),
  group_ids: z.array(slug).max(100).nullable().optional(),
  exporters: z.array(exporter).min(1, 'must list at least one exporter').max(32).nullable().optional(),
  labels: z.record(labelName, labelValue.nullable()).nullable().optional(),
});

/**
 * An exporter as a node reports it: its type, port and interval. Where it is scraped (its
 * metrics_path and scheme) is its type's in aami.yaml, or an admin's: a node that chose them
 * could have Prometheus fetch any page of any server it can reach and show what it answers.
 */
const SET_BY_AAMI = 'is set by the exporter type in aami.yaml (or by an admin), not by a node';
const setByAami = () => z.never({ error: SET_BY_AAMI }).optional().describe(`Not sent by a node: ${SET_BY_AAMI}`);
// No default for `enabled`: one a node does not send is the target's as it stands (an admin's `false` stays).
const nodeExporter = exporter.extend({ enabled: z.boolean().optional(), metrics_path: setByAami(), scheme: setByAami() });
const nodeExporters = z.array(nodeExporter).min(1, 'must list at least one exporter').max(32);

export const registration = z.strictObject({
  hostname: hostnameInput,
  ip_address: nodeIpAddress,
  /** A group inside the token's default group; defaults to the token's group. */
  group_id: slug.optional(),
  exporters: nodeExporters.optional(),
  labels: labels.optional(),
  facts: facts.optional(),
  /** Identifies the machine: the same host name from another machine is refused. */
  machine_id: machineId.optional(),
  /** Accepted for older bootstrap scripts; enrolment always issues a new node credential. */
  rotate_credential: z.boolean().optional(),
});

/** PUT /api/v1/nodes/self: what a node owns of its target, sent with its node credential. */
export const nodeUpdate = z.strictObject({
  ip_address: nodeIpAddress.optional(),
  exporters: nodeExporters.optional(),
  /** The node's own labels, replaced whole (admin and token labels are kept). */
  labels: labels.optional(),
  facts: facts.optional(),
  /** Recorded when the target has none yet (enrolled before machine ids); never changed. */
  machine_id: machineId.optional(),
  /** Issue a new node credential; the old one stops working. */
  rotate_credential: z.boolean().optional(),
});

export const credentialCreate = z.strictObject({
  name: credentialName,
  role,
  expires_at: timestamp.optional(),
});

export type GroupCreate = z.infer<typeof groupCreate>;
export type GroupPatch = z.infer<typeof groupPatch>;
export type TokenCreate = z.infer<typeof tokenCreate>;
export type TargetCreate = z.infer<typeof targetCreate>;
export type TargetPatch = z.infer<typeof targetPatch>;
export type TargetReplace = z.infer<typeof targetReplace>;
export type Registration = z.infer<typeof registration>;
export type NodeUpdate = z.infer<typeof nodeUpdate>;
export type CredentialCreate = z.infer<typeof credentialCreate>;
