import { isDeepStrictEqual } from 'node:util';
import { parseDocument } from 'yaml';
import { dumpYaml } from '../catalog/parse.js';

/**
 * The YAML text for an entity. When the file exists and has comments, only the keys whose
 * values changed are rewritten in the parsed document, so what a pull-request author wrote
 * survives an API edit. Keys whose value is undefined are removed.
 */
export function renderYaml(data: Record<string, unknown>, previous?: string): string {
  const kept: Array<[string, unknown]> = [];
  for (const key of Object.keys(data)) if (data[key] !== undefined) kept.push([key, data[key]]);
  const present = Object.fromEntries(kept); // a loop, not a filter's closure made on every call (see sameCuts in compiler.ts)
  // Without comments there is nothing to keep: js-yaml's dump is ~4x cheaper than editing a
  // document, and a registration writes two files.
  if (previous === undefined || !previous.includes('#')) return dumpYaml(present);
  const doc = parseDocument(previous);
  const old = (doc.toJS() ?? {}) as Record<string, unknown>;
  for (const key of Object.keys(old)) if (!(key in present)) doc.delete(key);
  for (const [key, value] of Object.entries(present)) if (!isDeepStrictEqual(old[key], value)) doc.set(key, value);
  return doc.toString({ lineWidth: 0 });
}
