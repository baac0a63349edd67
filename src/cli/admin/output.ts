import type { Refused } from './api.js';

export type Row = Record<string, unknown>;
export type Column = [header: string, value: (row: Row) => unknown];

/**
 * Values come from the server and, before that, from anyone who registered a node: a label
 * value may hold escape sequences that would drive the terminal. Control characters (C0,
 * DEL, C1) and bidi overrides are shown escaped instead.
 */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** One value as table text: lists joined by commas, maps as k=v, nothing as "-". */
export function cell(value: unknown): string {
  if (value === null || value === undefined || value === '') return '-';
  if (Array.isArray(value)) return value.length ? value.map(cell).join(',') : '-';
  if (typeof value === 'object') {
    const entries = Object.entries(value);
    return entries.length ? entries.map(([k, v]) => `${k}=${typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}`).join(',') : '-';
  }
  return String(value);
}

export function rows(json: unknown): Row[] {
  if (!Array.isArray(json)) return [];
  return json.filter((item): item is Row => typeof item === 'object' && item !== null);
}

export function row(json: unknown): Row {
  return typeof json === 'object' && json !== null && !Array.isArray(json) ? (json as Row) : {};
}

/** A list as aligned columns under upper-case headers, kubectl style. */
export function table(items: Row[], columns: Column[]): string[] {
  const grid = [columns.map(([header]) => header), ...items.map((item) => columns.map(([, value]) => printable(cell(value(item)))))];
  const widths = columns.map((_, i) => Math.max(...grid.map((line) => line[i]!.length)));
  return grid.map((line) => line.map((text, i) => (i === line.length - 1 ? text : text.padEnd(widths[i]!))).join('  ').trimEnd());
}

/**
 * One object as "Name:  value" lines; a map value gets one indented line per entry. A field
 * the answer lacks is left out (an older server), one it has as null shows as "-".
 */
export function fields(item: Row, spec: Array<[name: string, key: string]>): string[] {
  const present = spec.filter(([, key]) => item[key] !== undefined);
  const width = Math.max(0, ...present.map(([name]) => name.length)) + 2;
  return present.flatMap(([name, key]) => {
    const value = item[key];
    const label = `${name}:`.padEnd(width);
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
      const entries = Object.entries(value);
      if (entries.length) return [label.trimEnd(), ...entries.map(([k, v]) => `  ${printable(k)}=${printable(cell(v))}`)];
    }
    return [`${label}${printable(cell(value))}`];
  });
}

/** The secret a create returns once, on its own line so it is easy to copy. */
export function secretOnce(what: string, secret: unknown): string[] {
  return ['', `${what} (shown only this once; the server keeps only its hash, so store it now):`, `  ${printable(cell(secret))}`];
}

/** The server's error envelope: code and message on one line, then one line per field at fault. */
export function refusalLines(error: Refused): string[] {
  const details = error.details;
  const lines = [`error: ${printable(error.code)}: ${printable(error.message)} (HTTP ${error.status})`];
  if (Array.isArray(details)) {
    for (const d of rows(details)) lines.push(`  ${printable(cell(d.field) === '-' ? '(body)' : cell(d.field))}: ${printable(cell(d.message))}`);
  } else if (typeof details === 'object' && details !== null) {
    for (const [key, value] of Object.entries(details)) lines.push(`  ${printable(key)}: ${printable(cell(value))}`);
  }
  return lines;
}
