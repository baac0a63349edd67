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

/**
 * The server's own faults, said to a caller who may not see host names (seesNames: a node,
 * a bootstrap token, anyone without a credential): what happened and what to do. Their
 * messages can name what such a caller may not read — a remote hook's refusal naming another
 * host's file (a batch shares one message), the remote's or the primary's address, the
 * repository's path — as health withholds them. The whole message is in the request's log
 * line, and health gives it to a credential.
 */
const FAULT_TEXT: Partial<Record<ErrorCode, string>> = {
  remote_unavailable: 'the Git remote cannot be reached: nothing was acknowledged; try again later',
  remote_refused: 'the Git remote refused the write: nothing was acknowledged; try again later (an operator sees why in health)',
  remote_locked: 'the Git remote\'s branch is locked: nothing was acknowledged; try again later (an operator sees why in health)',
  remote_diverged: 'the Git remote\'s history was rewritten: writes wait for an operator; try again later',
  primary_unavailable: 'this server is a follower and cannot reach its primary: reads keep working here; try the write again later',
  repo_unavailable: 'the config repository cannot be read or written: nothing was written; try again later',
  storage_unavailable: 'the config repository could not be written: nothing was committed; try again later',
  repo_locked: 'the config repository\'s branch is locked: nothing was written; try again later',
};
const WITHHELD = ' (the whole message is for a credential)';

const ERROR_CODE = 'aami.error';
const ERROR_MESSAGE = 'aami.error-message';

/** The error code the request was answered with, for the request log. */
export const errorCodeOf = (c: Context): string | undefined => c.get(ERROR_CODE as never);

/** The whole message of a server fault (5xx), or of an error the caller was told less of, or why an answer was cut short: for the request log. */
export const faultMessageOf = (c: Context): string | undefined => c.get(ERROR_MESSAGE as never);

/** `seesNames`: whether the caller may read a message that can name other hosts as it is (FAULT_TEXT, AamiError.toAnyone); unless told, it may not. */
export function sendError(c: Context, error: AamiError, seesNames: () => boolean = () => false): Response {
  c.set(ERROR_CODE as never, error.code as never);
  if (error.code === 'unauthorized') c.header('WWW-Authenticate', 'Bearer');
  const retryAfter = (error.details as { retry_after_seconds?: unknown }).retry_after_seconds;
  if (typeof retryAfter === 'number') c.header('Retry-After', String(retryAfter));
  const text = FAULT_TEXT[error.code];
  const anyone = text !== undefined ? { message: text + WITHHELD, details: error.details } : error.toAnyone;
  const told = anyone && !seesNames() ? new AamiError(error.code, anyone.message, anyone.details) : error;
  if (STATUS[error.code] >= 500 || told !== error) c.set(ERROR_MESSAGE as never, error.message as never);
  return c.json(errorBody(told), STATUS[error.code]);
}

/** An answer this server ended part way, not for a fault of its own (a client too slow to take it): its log line says why. */
export function cutShort(c: Context, why: string): void {
  c.set(ERROR_MESSAGE as never, why as never);
}

/** A fault once an answer's head was sent (a streamed list): the client sees its connection end early; the request's log line says why. */
export function faultAfterHead(c: Context, error: unknown): void {
  c.set(ERROR_CODE as never, 'internal' as never);
  c.set(ERROR_MESSAGE as never, (error instanceof Error ? error.message : String(error)) as never);
}

/** Hono's onError: coded errors as our envelope; anything else is a bug, logged without the request body. */
export function onError(logger: Logger, seesNames: (c: Context) => boolean) {
  return (error: Error, c: Context): Response => {
    if (error instanceof AamiError) return sendError(c, error, () => seesNames(c));
    logger.error('request failed', { method: c.req.method, path: c.req.path, error: error.message });
    c.set(ERROR_CODE as never, 'internal' as never);
    return c.json({ error: { code: 'internal', message: 'internal error; see the server log', details: [] } }, 500);
  };
}
