import { z } from 'zod';
import { ERROR_CODES } from '../../errors.js';
import { role } from '../../schema/credential.js';
import { exporter, facts } from '../../schema/target.js';

/**
 * What the API answers, as zod schemas: the OpenAPI document's response bodies. Request
 * bodies are the schemas in src/schema/api.ts, the ones the routes parse with. The tests
 * check every answer they get against the document (test/api-helpers.ts), so these stay
 * what the server really sends.
 */
const stringMap = z.record(z.string(), z.string());
const time = z.string().describe('RFC 3339 time');
const nullableTime = time.nullable();

export const errorEnvelope = z
  .strictObject({
    error: z.strictObject({
      code: z.enum([...ERROR_CODES, 'internal']),
      message: z.string(),
      details: z
        .union([z.array(z.strictObject({ field: z.string(), message: z.string() })), z.record(z.string(), z.unknown())])
        .describe('The fields at fault (a list), or what the error is about (an object such as {"target_id": ...})'),
    }),
  });

export const group = z
  .strictObject({
    id: z.string(),
    name: z.string(),
    namespace: z.string(),
    parent_id: z.string().nullable(),
    description: z.string(),
    labels: stringMap,
  });

export const target = z
  .strictObject({
    id: z.string().describe('The host name'),
    hostname: z.string(),
    ip_address: z.string(),
    primary_group_id: z.string(),
    group_ids: z.array(z.string()),
    exporters: z.array(exporter.extend({ port: z.number().int().optional(), enabled: z.boolean() })),
    labels: stringMap.describe("The admin's labels"),
    node_labels: stringMap.describe("The node's own labels (GPU facts, bootstrap's --label)"),
    token_labels: stringMap.describe('The enrolling token\'s labels, fixed at enrolment'),
    effective_labels: stringMap.describe('The labels Prometheus sees, groups and aami\'s own included'),
    label_sources: stringMap.describe('Where each effective label comes from: admin, node, token:<id>, group:<id>, aami'),
    facts: facts,
    registered_by_token: z.string().nullable(),
    registered_at: nullableTime,
    machine_id: z.string().nullable(),
    ephemeral: z.boolean(),
    last_seen: nullableTime.describe("The node's last heartbeat; null before the first"),
  });

export const token = z
  .strictObject({
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

export const tokenCreated = token.extend({ token: z.string().describe('The secret, shown this once (aami_bootstrap_<id>_<secret>)') });

export const credential = z
  .strictObject({
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

export const credentialCreated = credential.extend({ credential: z.string().describe('The secret, shown this once (aami_cred_<id>_<secret>)') });

export const registrationAnswer = z
  .strictObject({
    outcome: z.enum(['created', 'reenrolled', 'updated', 'unchanged']),
    target,
    ephemeral: z.boolean(),
    node_credential: z.string().optional().describe('Shown once, when issued; only its hash is kept'),
  });

export const deleted = z.strictObject({ deleted: z.string() });

export const historyEntry = z
  .strictObject({
    commit: z.string(),
    author: z.string(),
    email: z.string(),
    date: time,
    message: z.string(),
    source_address: z.string().nullable(),
  });

export const effectiveCheck = z
  .strictObject({
    name: z.string(),
    description: z.string(),
    script: z.string(),
    sha256: z.string(),
    interval_seconds: z.number(),
    timeout_seconds: z.number(),
    args: z.array(z.string()),
  });

export const checkPolicy = z
  .strictObject({
    name: z.string(),
    description: z.string(),
    script: z.string(),
    sha256: z.string(),
    policy: z.record(z.string(), z.unknown()).describe('The check.yaml settings, with their defaults'),
  });

export const nodeChecks = z.strictObject({ hostname: z.string(), checks: z.array(effectiveCheck) });
export const heartbeat = z.strictObject({ hostname: z.string(), last_seen: time });

export const remoteStatus = z
  .strictObject({
    url: z.string(),
    branch: z.string(),
    last_sync_at: nullableTime,
    remote_head: z.string().nullable(),
    error: z.string().nullable(),
    fix: z.string().nullable().describe('What an operator runs to clear error, when it needs one'),
    last_pull: z.strictObject({ at: time, outcome: z.enum(['current', 'pulled', 'failed', 'refused']), reason: z.string().optional() }).nullable(),
    last_push: z.strictObject({ at: time, outcome: z.enum(['pushed', 'rejected', 'failed']), reason: z.string().optional() }).nullable(),
    pushes_rejected: z.number().int(),
  });

const problem = z.strictObject({ file: z.string(), field: z.string(), message: z.string() });

export const health = z
  .strictObject({
    status: z.enum(['healthy', 'degraded', 'unavailable']),
    repo: z.strictObject({
      head: z.string().nullable(),
      branch: z.string(),
      layout: z.string(),
      error: z.string().nullable(),
      warning: z.string().nullable(),
      remote: remoteStatus.nullable(),
    }),
    compiler: z.strictObject({
      last_success_at: nullableTime,
      last_duration_ms: z.number().nullable(),
      last_error: z.string().nullable(),
      invalid_files: z.array(problem).describe('At most 50; the counts are whole'),
      invalid_file_count: z.number().int(),
      problem_count: z.number().int(),
    }),
    nodes: z.strictObject({
      stale_after_seconds: z.number(),
      stale_count: z.number().int(),
      stale: z.array(z.string()).describe('Host names, at most 50'),
    }),
    writer: z.strictObject({
      queue_depth: z.number().int(),
      last_failure: z.strictObject({ at: time, message: z.string() }).nullable(),
    }),
  });

export const sdEntries = z
  .array(z.strictObject({ targets: z.array(z.string()), labels: stringMap }))
  .describe('Prometheus http_sd: the same entries as the file_sd files');
