import { z } from 'zod';
import { ERROR_CODES } from '../../errors.js';
import { credentialAnswer, effectiveCheck, nullableTime, problem, remoteStatus, stringMap, targetAnswer, time, tokenAnswer } from '../../schema/answers.js';

/**
 * What the API answers, as zod schemas: the OpenAPI document's response bodies. Request
 * bodies are the schemas in src/schema/api.ts, the ones the routes parse with. The answers
 * the layers below build (views, the remote status, history, checks) are the schemas in
 * src/schema/answers.ts, which type their builders. The tests check every answer they get
 * against the document (test/api-helpers.ts), so these stay what the server really sends.
 */
export { groupAnswer as group, targetAnswer as target, tokenAnswer as token, credentialAnswer as credential, remoteStatus, historyEntry, effectiveCheck } from '../../schema/answers.js';

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

export const tokenCreated = tokenAnswer.extend({ token: z.string().describe('The secret, shown this once (aami_bootstrap_<id>_<secret>)') });

export const credentialCreated = credentialAnswer.extend({ credential: z.string().describe('The secret, shown this once (aami_cred_<id>_<secret>)') });

export const registrationAnswer = z
  .strictObject({
    outcome: z.enum(['created', 'reenrolled', 'updated', 'unchanged']),
    target: targetAnswer,
    ephemeral: z.boolean(),
    node_credential: z.string().optional().describe('Shown once, when issued; only its hash is kept'),
  });

export const deleted = z.strictObject({ deleted: z.string() });

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

export const health = z
  .strictObject({
    status: z.enum(['healthy', 'degraded', 'unavailable']),
    repo: z.strictObject({
      head: z.string().nullable(),
      branch: z.string(),
      layout: z.string(),
      error: z.string().nullable().describe('Set while the repository cannot be read (moved away, unreadable): the last good state keeps serving'),
      warning: z.string().nullable().describe('Something an operator should change (an old layout, say)'),
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
      stale_count: z.number().int().nullable().describe("null on a follower of a primary: heartbeats go on to the primary, which counts them (this server sees only those that came through it)"),
      stale: z.array(z.string()).describe('Host names, at most 50'),
    }),
    writer: z.strictObject({
      queue_depth: z.number().int(),
      last_failure: z.strictObject({ at: time, message: z.string() }).nullable(),
    }),
    withheld: z.string().nullable().describe('Set for a caller without a credential (and without --open-reads): the lists that name hosts are left empty, and each message (and the remote\'s address) only says that there is one'),
  });

export const sdEntries = z
  .array(z.strictObject({ targets: z.array(z.string()), labels: stringMap }))
  .describe('Prometheus http_sd: the same entries as the file_sd files');
