import type { FieldError } from './schema/describe.js';

/**
 * Everything a caller can get wrong, as a code. Domain code throws AamiError with one of
 * these and never thinks about HTTP; api/errors.ts maps each code to a status, once.
 */
export const ERROR_CODES = [
  'validation_failed',
  'invalid_json',
  'payload_too_large',
  'unauthorized',
  'forbidden',
  'rate_limited',
  'not_found',
  'method_not_allowed',
  'group_not_found',
  'target_not_found',
  'token_not_found',
  'conflict',
  'hostname_taken',
  'group_in_use',
  'token_expired',
  'token_revoked',
  'token_exhausted',
  'invalid_config',
  'not_ready',
  'read_only',
  'remote_unavailable',
  'repo_unavailable',
  'storage_unavailable',
  'repo_locked',
  'remote_conflict',
  'remote_diverged',
  'remote_locked',
  'remote_refused',
  'primary_unavailable',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export class AamiError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: FieldError[] | Record<string, unknown> = [],
    /** What a caller who may not read host names is told instead, where the message names another host's file. */
    readonly toAnyone?: { message: string; details: FieldError[] | Record<string, unknown> },
  ) {
    super(message);
    this.name = 'AamiError';
  }
}
