import jsYaml from 'js-yaml';

/** How the server dumps every file it writes (parse.ts): one line a value, never folded, no anchors. */
export const DUMP_OPTIONS: jsYaml.DumpOptions = { lineWidth: -1, noRefs: true };

/**
 * js-yaml's dump with DUMP_OPTIONS, byte for byte, ~3x faster on the files the server
 * writes (a target's: 14 µs against 45): block mappings and sequences of printable-ASCII
 * strings, safe integers, booleans and nulls. js-yaml walks every string character by
 * character and tries each type another reader could take it for; here a few native
 * string searches decide, and only strings that begin as such a type are tried. A
 * document that holds anything else (other text, other numbers, a sequence in a sequence,
 * a key past 1,024 characters) answers undefined: it is js-yaml's to dump (parse.ts).
 * test/emit.test.ts compares both on random documents.
 */
export function emitFast(data: Record<string, unknown>): string | undefined {
  const out: string[] = [];
  try {
    const shape = shapeOf(data);
    if (shape !== MAPPING) return shape === '{}' ? '{}\n' : undefined;
    return mapping(data, 0, true, out) ? `${out.join('')}\n` : '{}\n';
  } catch (error) {
    if (error === NOT_HERE) return undefined;
    throw error;
  }
}

const NOT_HERE = Symbol('not for the fast path');
const SEQUENCE = Symbol('a block sequence');
const MAPPING = Symbol('a block mapping');
const indent = (level: number) => `\n${'  '.repeat(level)}`;

/**
 * The pairs of a block mapping at `level`, each on its own line but the first of a compact
 * one (the document, an item of a sequence). Answers whether it wrote any: js-yaml writes
 * "{}" for a mapping of undefined values only, a case left to it.
 */
function mapping(object: Record<string, unknown>, level: number, compact: boolean, out: string[]): boolean {
  let wrote = false;
  for (const key of Object.keys(object)) {
    const value = object[key];
    if (value === undefined) continue;
    const name = scalar(key);
    if (name.length > 1024) throw NOT_HERE; // js-yaml writes an explicit "? " key
    if (level === 0 && name.startsWith('... ')) throw NOT_HERE; // a document's end: js-yaml writes it, and cannot read it back
    if (!compact || wrote) out.push(indent(level));
    out.push(name);
    const shape = shapeOf(value);
    if (shape === SEQUENCE) out.push(':'), sequence(value as unknown[], level + 1, out);
    else if (shape === MAPPING) {
      out.push(':');
      if (!mapping(value as Record<string, unknown>, level + 1, false, out)) throw NOT_HERE;
    } else out.push(': ', shape);
    wrote = true;
  }
  return wrote;
}

/** The items of a block sequence at `level` (a mapping's value: each on its own line). */
function sequence(items: unknown[], level: number, out: string[]): void {
  for (const item of items) {
    const value = item === undefined ? null : item; // as js-yaml writes it
    out.push(indent(level), '- ');
    const shape = shapeOf(value);
    if (shape === SEQUENCE) throw NOT_HERE;
    if (shape !== MAPPING) out.push(shape);
    else if (!mapping(value as Record<string, unknown>, level + 1, true, out)) throw NOT_HERE;
  }
}

/**
 * How a value is written: over lines (SEQUENCE or MAPPING, with something in it), or the
 * text on the line of its key or dash. Collections are arrays and object literals (or a
 * null prototype's): what JSON.stringify copies as written here (parse.ts keeps that copy).
 * Anything else — a class (it may have a toJSON), a Date (a timestamp to js-yaml), an object
 * with its own Symbol.toStringTag (js-yaml goes by that tag) — is left to js-yaml.
 */
function shapeOf(value: unknown): typeof SEQUENCE | typeof MAPPING | string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
      return scalar(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isSafeInteger(value) || Object.is(value, -0)) throw NOT_HERE; // js-yaml's float forms
      return String(value);
    case 'object': {
      const prototype = Object.getPrototypeOf(value);
      if (Symbol.toStringTag in value) throw NOT_HERE;
      if (prototype === Array.prototype) return (value as unknown[]).length ? SEQUENCE : '[]';
      if (prototype === Object.prototype || prototype === null) return Object.keys(value).length ? MAPPING : '{}';
    }
  }
  throw NOT_HERE;
}

/** Printable ASCII on one line: the only text the fast path writes. */
const ASCII_LINE = /^[\x20-\x7e]*$/;
/** What may not start a plain scalar: a space, or one of YAML's indicators. */
const NOT_FIRST = new Set(' -?:,[]{}#&*!|=>\'"%@`');
/** YAML 1.1 booleans and sexagesimal numbers: quoted for older readers (js-yaml's compat mode). */
const COMPAT_BOOLEANS = new Set(['y', 'Y', 'yes', 'Yes', 'YES', 'on', 'On', 'ON', 'n', 'N', 'no', 'No', 'NO', 'off', 'Off', 'OFF']);
const BASE60 = /^[-+]?[0-9_]+(?::[0-9_]+)+(?:\.[0-9_]*)?$/;
/** What js-yaml's default schema reads as something else than a string: null, bool, int, float, timestamp, merge. */
const IMPLICIT = (jsYaml.DEFAULT_SCHEMA as unknown as { compiledImplicit: Array<{ resolve(data: string): boolean }> }).compiledImplicit;
/** How each of those begins ("~", null, true, false, a sign, a dot, a digit, "<<"): the others are never one (~0.4 µs a string saved). */
const MAYBE_IMPLICIT = /^[~nNtTfF+\-.0-9<]/;

/** A string as js-yaml writes it in block context: plain when nothing else could be read from it, else single-quoted. */
function scalar(text: string): string {
  if (!ASCII_LINE.test(text)) throw NOT_HERE;
  if (text === '') return "''";
  if (COMPAT_BOOLEANS.has(text) || BASE60.test(text)) return `'${text}'`;
  const plain =
    !NOT_FIRST.has(text[0]!) &&
    text[text.length - 1] !== ' ' &&
    text[text.length - 1] !== ':' &&
    !text.includes(' #') &&
    !text.includes(': ') &&
    !(MAYBE_IMPLICIT.test(text) && IMPLICIT.some((type) => type.resolve(text)));
  return plain ? text : `'${text.replaceAll("'", "''")}'`;
}
