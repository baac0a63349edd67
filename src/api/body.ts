import type { IncomingMessage } from 'node:http';
import type { Context, MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { z } from 'zod';
import { AamiError } from '../errors.js';
import { describeZodError, protoKeys } from '../schema/describe.js';

/**
 * Reads a request's body once, up to `maxBytes` (more: `tooLarge` answers, 413), before any
 * route sees it. Over a Node socket the bytes are read straight from the `IncomingMessage`
 * and handed to the request's body cache: the WHATWG `Request` and web streams that hono's
 * own limit reads through cost a quarter of a registration's server CPU in a storm.
 * Elsewhere (`app.request()` in tests) hono's limit does the same job.
 */
export function readBody(maxBytes: number, tooLarge: (c: Context) => Response | Promise<Response>): MiddlewareHandler {
  const fallback = bodyLimit({ maxSize: maxBytes, onError: tooLarge });
  return async (c, next) => {
    const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
    if (!incoming || typeof incoming.on !== 'function') return fallback(c, next);
    if (c.req.method === 'GET' || c.req.method === 'HEAD') return next();
    const declared = incoming.headers['content-length'];
    if (declared !== undefined && !incoming.headers['transfer-encoding'] && Number(declared) > maxBytes) return tooLarge(c);
    const bytes = await readLimited(incoming, maxBytes);
    if (!bytes) return tooLarge(c);
    // hono's body cache holds promises (its type says values): c.req.text(), .json(),
    // .arrayBuffer() and .parseBody() read from it. The text is what Request.text() gives:
    // UTF-8, a leading BOM dropped, bad bytes replaced.
    const cache = c.req.bodyCache as Record<string, Promise<unknown>>;
    cache.arrayBuffer = Promise.resolve(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
    cache.text = Promise.resolve(new TextDecoder().decode(bytes));
    return next();
  };
}

/** The whole body, or undefined once it passes `maxBytes` (the rest is left unread: node-server drains it after the answer). */
function readLimited(incoming: IncomingMessage, maxBytes: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const settle = (settled: () => void) => {
      incoming.off('data', onData).off('end', onEnd).off('error', onError).off('close', onError);
      settled();
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= maxBytes) return void chunks.push(chunk);
      incoming.pause();
      settle(() => resolve(undefined));
    };
    const onEnd = () => settle(() => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)));
    // A client gone mid-body hears nothing; its answer is a 4xx in the logs, not a 500.
    const onError = () => settle(() => reject(new AamiError('invalid_json', 'the request body was cut off: the client closed the connection before sending all of it')));
    incoming.on('data', onData).on('end', onEnd).on('error', onError).on('close', onError);
  });
}

/**
 * The request body as JSON, whatever the Content-Type: the guide's examples send JSON with
 * a bare `curl -d`, which says application/x-www-form-urlencoded. Then checked by `schema`.
 */
export async function parseBody<S extends z.ZodType>(c: Context, schema: S): Promise<z.infer<S>> {
  const text = await c.req.text();
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    const reason = text.trim() === '' ? 'the request body is empty' : `the request body is not JSON: ${(error as Error).message}`;
    throw new AamiError('invalid_json', reason);
  }
  return parseValue(schema, data, 'the request body');
}

export function parseValue<S extends z.ZodType>(schema: S, data: unknown, what: string): z.infer<S> {
  const refused = protoKeys(data);
  const result = refused.length ? undefined : schema.safeParse(data);
  if (!result?.success) {
    const details = result ? describeZodError(result.error, data) : refused;
    const summary = details.map((d) => (d.field ? `${d.field} ${d.message}` : d.message)).join('; ');
    throw new AamiError('validation_failed', `${what} is invalid: ${summary}`, details);
  }
  return result.data;
}
