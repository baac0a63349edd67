import { z } from 'zod';
import { hostname, jobName, LABEL_NAME, slug } from '../../schema/index.js';

/**
 * The query parameters each route takes, as zod objects: the OpenAPI document lists them,
 * and the query middleware (api/conventions.ts) checks every request against them before
 * the route runs. A parameter no route declares answers 400.
 */

/** The most targets one page holds. */
export const MAX_PAGE = 10_000;

/** `k=v`, `k!=v`, `k` (has the label) or `!k` (lacks it), matched against the effective labels. */
const SELECTOR = new RegExp(`^(?:(${LABEL_NAME.source.slice(1, -1)})(!=|=)(.*)|(!?)(${LABEL_NAME.source.slice(1, -1)}))$`, 's');

export const labelSelector = z.string().transform((text, ctx) => {
  const match = SELECTOR.exec(text);
  if (!match) {
    ctx.addIssue({ code: 'custom', message: `"${text}" is not a label selector: name=value, name!=value, name or !name, with name matching [a-zA-Z_][a-zA-Z0-9_]*` });
    return z.NEVER;
  }
  const [, name, op, value, not, bare] = match;
  if (name !== undefined) return { name, op: op as '=' | '!=', value: value! };
  return { name: bare!, op: not ? ('absent' as const) : ('exists' as const) };
});
export type Selector = z.output<typeof labelSelector>;

/** A paging cursor: where the previous page ended, opaque to clients. */
export const cursor = z.string().transform((text, ctx) => {
  const decoded = Buffer.from(text, 'base64url').toString('utf8');
  if (!/^[A-Za-z0-9_-]+$/.test(text) || !hostname.safeParse(decoded).success) {
    ctx.addIssue({ code: 'custom', message: 'is not a cursor this server gave out (take the next page from the Link header)' });
    return z.NEVER;
  }
  return decoded;
});

export const encodeCursor = (hostname: string) => Buffer.from(hostname, 'utf8').toString('base64url');

export const targetsQuery = z.strictObject({
  hostname: z
    .string()
    .transform((value) => value.toLowerCase())
    .pipe(hostname)
    .optional()
    .describe('Only this host (case does not matter)'),
  group: slug.optional().describe('Only members of this group or of a group below it'),
  label: z
    .array(labelSelector)
    .optional()
    .describe('Label selector, repeatable (all must match), against the effective labels: name=value, name!=value, name (present) or !name (absent)'),
  limit: z.coerce
    .number()
    .int('must be a whole number')
    .min(1, 'must be at least 1')
    .max(MAX_PAGE, `must be at most ${MAX_PAGE}`)
    .optional()
    .describe('Page size: at most this many targets; a Link header with rel="next" points to the next page when there are more'),
  cursor: cursor.optional().describe('Where the page starts: the cursor from the previous page\'s Link header'),
});

export type TargetsQuery = z.output<typeof targetsQuery>;

export const groupsQuery = z.strictObject({ namespace: slug.optional().describe('Only groups of this namespace') });
export const sdQuery = z.strictObject({ job: jobName.optional().describe('Only this job\'s entries (node, dcgm, ...)') });

export type QuerySchema = z.ZodObject<Record<string, z.ZodType>>;
