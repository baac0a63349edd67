import { z } from 'zod';
import { role } from './credential.js';
import { exporter, facts } from './target.js';

/**
 * The answers the layers below the API build: the inventory's views, the writer's remote
 * status, a file's history, a node's checks and the config repo's problems. Their builders
 * are typed by these schemas' output types, so a field added to one and not the other is a
 * compile error. The API's answer schemas (api/spec/schemas.ts) reuse these and add the
 * answers only the HTTP layer builds.
 */
export const stringMap = z.record(z.string(), z.string());
export const time = z.string().describe('RFC 3339 time');
export const nullableTime = time.nullable();

export const groupAnswer = z.strictObject({
  id: z.string(),
  name: z.string(),
  namespace: z.string(),
  parent_id: z.string().nullable(),
  description: z.string(),
  labels: stringMap,
});
export type GroupAnswer = z.output<typeof groupAnswer>;

export const targetAnswer = z.strictObject({
  id: z.string().describe('The host name'),
  hostname: z.string(),
  ip_address: z.string(),
  primary_group_id: z.string(),
  group_ids: z.array(z.string()),
  exporters: z.array(exporter.extend({ port: z.number().int().optional(), enabled: z.boolean() })),
  labels: stringMap.describe("The admin's labels"),
  node_labels: stringMap.describe("The node's own labels (GPU facts, bootstrap's --label)"),
  token_labels: stringMap.describe("The enrolling token's labels, fixed at enrolment"),
  effective_labels: stringMap.describe("The labels Prometheus sees, groups and aami's own included"),
  label_sources: stringMap.describe('Where each effective label comes from: admin, node, token:<id>, group:<id>, aami'),
  facts: facts,
  registered_by_token: z.string().nullable(),
  registered_at: nullableTime,
  machine_id: z.string().nullable().describe('A hash of the machine identity the node sent ("sha256:…"), never the value it sends: null when the server keeps none'),
  ephemeral: z.boolean(),
  last_seen: nullableTime.describe("The node's last heartbeat; null before the first"),
});
export type TargetAnswer = z.output<typeof targetAnswer>;

export const tokenAnswer = z.strictObject({
  id: z.string(),
  name: z.string(),
  default_group_id: z.string(),
  max_uses: z.number().int(),
  uses: z.number().int(),
  remaining: z.number().int(),
  expires_at: time,
  expired: z.boolean(),
  revoked: z.boolean(),
  active: z.boolean(),
  labels: stringMap,
  created_at: nullableTime,
  ephemeral: z.boolean(),
  ttl_after_last_seen: z.string().nullable(),
  registered: z.number().int(),
  allow_deregister: z.boolean(),
});
export type TokenAnswer = z.output<typeof tokenAnswer>;

export const credentialAnswer = z.strictObject({
  id: z.string(),
  name: z.string(),
  role,
  expires_at: nullableTime,
  expired: z.boolean(),
  revoked: z.boolean(),
  active: z.boolean(),
  created_at: nullableTime,
  created_by: z.string().nullable(),
});
export type CredentialAnswer = z.output<typeof credentialAnswer>;

export const remoteStatus = z.strictObject({
  url: z.string(),
  branch: z.string(),
  last_sync_at: nullableTime,
  remote_head: z.string().nullable(),
  error: z.string().nullable(),
  fix: z.string().nullable().describe('What an operator runs to clear `error`, when it needs one'),
  last_pull: z.strictObject({ at: time, outcome: z.enum(['current', 'pulled', 'failed', 'refused']), reason: z.string().optional() }).nullable(),
  last_push: z.strictObject({ at: time, outcome: z.enum(['pushed', 'rejected', 'failed']), reason: z.string().optional() }).nullable(),
  pushes_rejected: z.number().int(),
});
export type RemoteStatus = z.output<typeof remoteStatus>;

export const historyEntry = z.strictObject({
  commit: z.string(),
  author: z.string(),
  email: z.string(),
  date: time,
  message: z.string(),
  source_address: z.string().nullable(),
});
export type HistoryEntry = z.output<typeof historyEntry>;

export const effectiveCheck = z.strictObject({
  name: z.string(),
  description: z.string(),
  script: z.string(),
  sha256: z.string(),
  interval_seconds: z.number(),
  timeout_seconds: z.number(),
  args: z.array(z.string()),
});
export type EffectiveCheck = z.output<typeof effectiveCheck>;

/** Something wrong with one file of the config repo; `field` is the dotted path to the field, empty when the whole file is at fault. */
export const problem = z.strictObject({ file: z.string(), field: z.string(), message: z.string() });
export type Problem = z.output<typeof problem>;
