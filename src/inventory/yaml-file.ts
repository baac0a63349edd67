import { isDeepStrictEqual } from 'node:util';
import { parseDocument, stringify } from 'yaml';

/**
 * The YAML text for an entity. When the file exists, only the keys whose values changed are
 * rewritten in the parsed document, so comments and layout that a pull-request author
 * wrote survive an API edit. Keys whose value is undefined are removed.
 */
export function renderYaml(data: Record<string, unknown>, previous?: string): string {
  const present = Object.fromEntries(Object.entries(data).filter(([, value]) => value !== undefined));
  if (previous === undefined) return stringify(present, { lineWidth: 0 });
  const doc = parseDocument(previous);
  const old = (doc.toJS() ?? {}) as Record<string, unknown>;
  for (const key of Object.keys(old)) if (!(key in present)) doc.delete(key);
  for (const [key, value] of Object.entries(present)) if (!isDeepStrictEqual(old[key], value)) doc.set(key, value);
  return doc.toString({ lineWidth: 0 });
}
