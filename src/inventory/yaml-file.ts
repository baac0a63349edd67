import { isDeepStrictEqual } from 'node:util';
import { parseDocument, visit, type Node } from 'yaml';
import { dumpYaml, loadYaml } from '../catalog/parse.js';

/**
 * The YAML text for an entity. When the file exists and has comments, only the keys whose
 * values changed are rewritten in the parsed document, so what a pull-request author wrote
 * survives an API edit. Keys whose value is undefined are removed.
 *
 * The document is written by the `yaml` library, by YAML 1.2's core schema, and read back by
 * js-yaml, which takes a few more plain scalars for numbers: a label "0b11" written plain
 * was committed as "3". So a string the reader would not read back as itself is quoted; and
 * an edit whose text still does not read back as its data is written whole by dumpYaml
 * instead (the comments go, the data stays).
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
  for (const [key, value] of Object.entries(present)) if (!isDeepStrictEqual(old[key], value)) doc.set(key, quoted(doc.createNode(value)));
  const text = doc.toString({ lineWidth: 0 });
  // Compared with what YAML can hold of it: an undefined inside a value is not written at all.
  return readsBack(text, JSON.parse(JSON.stringify(present))) ? text : dumpYaml(present);
}

/** The node with each string that js-yaml would read otherwise written plain (`0b11`, `+0b1`) set to be quoted. */
function quoted(node: Node): Node {
  visit(node, {
    Scalar(_, scalar) {
      if (typeof scalar.value === 'string' && !readsBack(scalar.value, scalar.value)) scalar.type = 'QUOTE_DOUBLE';
    },
  });
  return node;
}

function readsBack(text: string, data: unknown): boolean {
  try {
    return isDeepStrictEqual(loadYaml(text), data);
  } catch {
    return false;
  }
}
