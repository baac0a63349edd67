import { UsageError } from '../command.js';

export function required(value: string | undefined, flag: string): string {
  if (value === undefined || value === '') throw new UsageError(`${flag} is required`);
  return value;
}

export function wholeNumber(value: string, flag: string): number {
  if (!/^\d{1,9}$/.test(value)) throw new UsageError(`${flag} must be a whole number, not "${value}"`);
  return Number(value);
}

const UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const;

/**
 * An expiry: an RFC 3339 time, passed on as typed (the server checks it), or a span from
 * now such as 90m, 12h, 30d, 8w.
 */
export function expiry(value: string, now = Date.now()): string {
  const span = /^(\d{1,6})([mhdw])$/.exec(value);
  if (!span) return value;
  const ms = Number(span[1]) * UNIT_MS[span[2] as keyof typeof UNIT_MS];
  return new Date(now + ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * kubectl-style label changes: KEY=VALUE sets (the value may hold "=" and be empty),
 * KEY- removes. Removal becomes null, as in a JSON merge patch (RFC 7396). Names are
 * checked by the server, which says which one is wrong.
 */
export function labelChanges(args: string[], allowRemoval: boolean): Record<string, string | null> {
  const changes = new Map<string, string | null>();
  for (const arg of args) {
    const eq = arg.indexOf('=');
    if (eq > 0) changes.set(arg.slice(0, eq), arg.slice(eq + 1));
    else if (allowRemoval && eq < 0 && arg.length > 1 && arg.endsWith('-')) changes.set(arg.slice(0, -1), null);
    else throw new UsageError(`"${arg}" is not ${allowRemoval ? 'KEY=VALUE or KEY-' : 'KEY=VALUE'}`);
  }
  // fromEntries, not assignment: a key such as "__proto__" stays an ordinary key
  return Object.fromEntries(changes);
}

/** --label KEY=VALUE, repeatable: the labels of something being created. */
export function labelSet(values: string[] | undefined): { labels?: Record<string, string> } {
  if (!values?.length) return {};
  return { labels: labelChanges(values, false) as Record<string, string> };
}
