import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { AamiError, type ErrorCode } from '../errors.js';
import type { Logger } from '../log.js';

/** The one place an error code becomes an HTTP status. */
export const STATUS: Record<ErrorCode, ContentfulStatusCode> = {
  validation_failed: 400,
  invalid_json: 400,
  unauthorized: 401,
  forbidden: 403,
  token_expired: 403,
  token_revoked: 403,
  token_exhausted: 403,
  not_found: 404,
  method_not_allowed: 405,
  target_not_found: 404,
  token_not_found: 404,
  conflict: 409,
  hostname_taken: 409,
  group_in_use: 409,
  payload_too_large: 413,
  group_not_found: 422,
  invalid_config: 422,
  rate_limited: 429,
  not_ready: 503,
  read_only: 403,
  remote_unavailable: 503,
  repo_unavailable: 503,
  storage_unavailable: 503,
  repo_locked: 503,
  remote_conflict: 409,
  remote_diverged: 503,
  remote_locked: 503,
  remote_refused: 503,
  primary_unavailable: 503,
};

export function errorBody(error: AamiError) {
  return { error: { code: error.code, message: error.message, details: error.details } };
}

const ERROR_CODE = 'aami.error';

/** The error code the request was answered with, for the request log. */
export const errorCodeOf = (c: Context): string | undefined => c.get(ERROR_CODE as never);

export function sendError(c: Context, error: AamiError): Response {
  c.set(ERROR_CODE as never, error.code as never);
  if (error.code === 'unauthorized') c.header('WWW-Authenticate', 'Bearer');
  const retryAfter = (error.details as { retry_after_seconds?: unknown }).retry_after_seconds;
  if (typeof retryAfter === 'number') c.header('Retry-After', String(retryAfter));
  return c.json(errorBody(error), STATUS[error.code]);
}

/** Hono's onError: coded errors as our envelope; anything else is a bug, logged without the request body. */
export function onError(logger: Logger) {
  return (error: Error, c: Context): Response => {
    if (error instanceof AamiError) return sendError(c, error);
    logger.error('request failed', { method: c.req.method, path: c.req.path, error: error.message });
    c.set(ERROR_CODE as never, 'internal' as never);
    return c.json({ error: { code: 'internal', message: 'internal error; see the server log', details: [] } }, 500);
  };
}
