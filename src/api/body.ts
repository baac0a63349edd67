import type { Context } from 'hono';
import type { z } from 'zod';
import { AamiError } from '../errors.js';
import { describeZodError, protoKeys } from '../schema/describe.js';

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
    const details = result ? describeZodError(result.error) : refused;
    const summary = details.map((d) => (d.field ? `${d.field} ${d.message}` : d.message)).join('; ');
    throw new AamiError('validation_failed', `${what} is invalid: ${summary}`, details);
  }
  return result.data;
}
