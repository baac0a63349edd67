import jsYaml from 'js-yaml';

/**
 * js-yaml's load with the core schema (what parse.ts reads every file with), for the YAML
 * config files are written in, about twice as fast (a target's file: ~10 µs against ~20):
 * a document that is a block mapping of identifier keys, whose values are block mappings
 * and sequences, one-line flow collections (`[production]`, `{type: node_exporter}`), and
 * scalars on one line (plain, single-quoted, double-quoted without escapes). That covers
 * the files the server writes (emit.ts) and the way people write them by hand. A first
 * start reads every file of the repository: js-yaml took ~2.2 s of one at 100k targets.
 *
 * Anything else answers undefined, and js-yaml reads it: a comment, a tab, a line break
 * inside a value, anchors and tags, block scalars, a key that is not an identifier (or is
 * `__proto__`, or is given twice), text past printable ASCII, an empty document. So every
 * error message is still js-yaml's. A plain scalar is resolved by js-yaml's own core types
 * (null, bool, int, float), in js-yaml's order, so `8` is a number and `no` a string alike.
 * test/read.test.ts compares both on random documents, random changes of them, js-yaml's
 * dumps of random data, and the files the server and people write.
 */
export function readFast(text: string): Record<string, unknown> | undefined {
  if (!PRINTABLE.test(text)) return undefined;
  try {
    const reader = new Reader(text);
    if (reader.at >= reader.lines.length || reader.lines[reader.at]!.indent !== 0) return undefined;
    const document = reader.mapping(0);
    return reader.at === reader.lines.length ? document : undefined;
  } catch (error) {
    if (error === NOT_HERE) return undefined;
    throw error;
  }
}

const NOT_HERE = Symbol('not for the fast path');
const notHere = (): never => {
  throw NOT_HERE;
};

/** Printable ASCII and line feeds, no `#` (a comment) and no `\` (an escape): all the fast path reads. */
const PRINTABLE = /^[\x20-\x22\x24-\x5b\x5d-\x7e\n]*$/;
/** A key: block and flow mappings take only these. */
const NAME = /^[A-Za-z_][A-Za-z0-9_-]*$/;
/** What may not begin a plain scalar: YAML's indicators and a space (and `-`, `?`, `:`, which may, but are left to js-yaml). */
const NOT_FIRST = new Set(' -?:,[]{}#&*!|>\'"%@`');
/** Where a plain scalar in a flow collection ends (`:` is left to js-yaml). */
const FLOW_STOP = new Set([...',[]{}:'].map((c) => c.charCodeAt(0)));
const IMPLICIT = (jsYaml.CORE_SCHEMA as unknown as { compiledImplicit: Array<{ resolve(data: string): boolean; construct(data: string): unknown }> }).compiledImplicit;

/**
 * Collections in collections deeper than config files nest, block and flow alike: left to
 * js-yaml (a file of a million "[" cannot exhaust this reader's stack, and js-yaml refuses
 * documents nested past its own limit of 100).
 */
const MAX_DEPTH = 32;

type Line = { indent: number; content: string };

class Reader {
  /** The document's lines, blank ones left out, each without its trailing spaces. */
  readonly lines: Line[] = [];
  at = 0;
  private depth = 0;

  constructor(text: string) {
    for (let start = 0; start < text.length; ) {
      let end = text.indexOf('\n', start);
      if (end < 0) end = text.length;
      let from = start;
      let to = end;
      while (from < to && text.charCodeAt(from) === 0x20) from++;
      while (to > from && text.charCodeAt(to - 1) === 0x20) to--;
      if (from < to) this.lines.push({ indent: from - start, content: text.slice(from, to) });
      start = end + 1;
    }
  }

  /** One collection deeper than the one being read. */
  private deeper(): void {
    if (++this.depth > MAX_DEPTH) notHere();
  }

  /** A block mapping whose keys are at `indent`, from the current line (which is at `indent`). */
  mapping(indent: number): Record<string, unknown> {
    this.deeper();
    const result: Record<string, unknown> = {};
    while (this.at < this.lines.length) {
      const line = this.lines[this.at]!;
      if (line.indent < indent) break;
      if (line.indent > indent) notHere();
      if (line.content.startsWith('- ')) break; // a sequence at the key's indent ends the mapping (compact sequence)
      const colon = keyEnd(line.content);
      if (colon < 0) notHere();
      const name = line.content.slice(0, colon);
      if (Object.hasOwn(result, name)) notHere();
      const rest = line.content.slice(colon + 1).trimStart();
      this.at++;
      result[name] = rest ? this.inline(rest, indent) : this.nested(indent);
    }
    this.depth--;
    return result;
  }

  /** The value of a key with nothing after its colon: a block collection on the next lines, or null. */
  private nested(indent: number): unknown {
    const next = this.lines[this.at];
    if (next === undefined || next.indent < indent) return null;
    const sequence = next.content.startsWith('- ') || next.content === '-';
    if (next.indent === indent && !sequence) return null;
    return sequence ? this.sequence(next.indent) : this.mapping(next.indent);
  }

  /** A block sequence whose dashes are at `indent`. */
  private sequence(indent: number): unknown[] {
    this.deeper();
    const items: unknown[] = [];
    while (this.at < this.lines.length) {
      const line = this.lines[this.at]!;
      if (line.indent < indent) break;
      if (line.indent > indent) notHere();
      if (!line.content.startsWith('- ')) {
        if (line.content === '-') notHere();
        break;
      }
      const text = line.content.slice(2).trimStart();
      const column = indent + line.content.length - text.length;
      if (keyEnd(text) > 0) {
        // A compact mapping: its first key on the dash's line, the others below it.
        this.lines[this.at] = { indent: column, content: text };
        items.push(this.mapping(column));
      } else {
        this.at++;
        items.push(this.inline(text, indent));
      }
    }
    this.depth--;
    return items;
  }

  /** A value on the rest of a line whose key or dash is at `indent`: a flow collection, a quoted or a plain scalar. Nothing may follow it below. */
  private inline(text: string, indent: number): unknown {
    const next = this.lines[this.at];
    if (next !== undefined && next.indent > indent) notHere(); // a value over lines
    if (text[0] === '[' || text[0] === '{' || text[0] === "'" || text[0] === '"') {
      const flow = new Flow(text, this.depth);
      const value = flow.value();
      if (flow.at !== text.length) notHere();
      return value;
    }
    if (NOT_FIRST.has(text[0]!) || text.includes(': ') || text.endsWith(':')) notHere();
    return plain(text);
  }
}

/** One line's flow collection or quoted scalar, read from `at`. */
class Flow {
  at = 0;
  /** `depth`: the collections the line's value is in. */
  constructor(
    private readonly text: string,
    private depth: number,
  ) {}

  value(): unknown {
    const first = this.text[this.at];
    if (first === '[' || first === '{') {
      if (++this.depth > MAX_DEPTH) notHere();
      const value = first === '[' ? this.sequence() : this.mapping();
      this.depth--;
      return value;
    }
    if (first === "'") return this.singleQuoted();
    if (first === '"') return this.doubleQuoted();
    return this.plain();
  }

  private sequence(): unknown[] {
    const items: unknown[] = [];
    this.at++;
    this.spaces();
    if (this.text[this.at] === ']') return this.at++, items;
    for (;;) {
      items.push(this.value());
      this.spaces();
      const after = this.text[this.at++];
      if (after === ']') return items;
      if (after !== ',') notHere();
      this.spaces();
      if (this.text[this.at] === ']') notHere(); // a trailing comma
    }
  }

  private mapping(): Record<string, unknown> {
    const result: Record<string, unknown> = {};
    this.at++;
    this.spaces();
    if (this.text[this.at] === '}') return this.at++, result;
    for (;;) {
      const colon = this.text.indexOf(':', this.at);
      if (colon < 0 || this.text.charCodeAt(colon + 1) !== 0x20) notHere();
      const name = this.text.slice(this.at, colon);
      if (!isKey(name) || Object.hasOwn(result, name)) notHere();
      this.at = colon + 2;
      this.spaces();
      result[name] = this.value();
      this.spaces();
      const after = this.text[this.at++];
      if (after === '}') return result;
      if (after !== ',') notHere();
      this.spaces();
      if (this.text[this.at] === '}') notHere();
    }
  }

  /** `''` is a quote. */
  private singleQuoted(): string {
    let end = this.text.indexOf("'", this.at + 1);
    while (end >= 0 && this.text[end + 1] === "'") end = this.text.indexOf("'", end + 2);
    if (end < 0) notHere();
    const value = this.text.slice(this.at + 1, end).replaceAll("''", "'");
    this.at = end + 1;
    return value;
  }

  /** Without escapes: PRINTABLE let no `\` through. */
  private doubleQuoted(): string {
    const quote = this.text.indexOf('"', this.at + 1);
    if (quote < 0) notHere();
    const value = this.text.slice(this.at + 1, quote);
    this.at = quote + 1;
    return value;
  }

  private plain(): unknown {
    let end = this.at;
    while (end < this.text.length && !FLOW_STOP.has(this.text.charCodeAt(end))) end++;
    if (this.text[end] === ':') notHere();
    const text = this.text.slice(this.at, end).trimEnd();
    if (text === '' || NOT_FIRST.has(text[0]!)) notHere();
    this.at = end;
    return plain(text);
  }

  private spaces(): void {
    while (this.text[this.at] === ' ') this.at++;
  }
}

/**
 * Where the key of a block mapping's line ends (its colon, then a space or the line's end),
 * or -1 when the line does not begin with a key the fast path takes.
 */
function keyEnd(line: string): number {
  const colon = line.indexOf(':');
  if (colon < 1 || (colon + 1 < line.length && line.charCodeAt(colon + 1) !== 0x20)) return -1;
  return isKey(line.slice(0, colon)) ? colon : -1;
}

/** Whether a key is one the fast path takes: an identifier that js-yaml reads as its text (not `true` or `null`), not `__proto__`. */
function isKey(name: string): boolean {
  return NAME.test(name) && name !== '__proto__' && plain(name) === name;
}

/** How each core type's text begins (null `~`, bool, int, float: a sign, a dot, a digit); a scalar that begins otherwise is a string (~0.5 µs a value saved). */
const MAYBE_IMPLICIT = /^[~nNtTfF+\-.0-9]/;

/** A plain scalar as js-yaml's core schema takes it: the first implicit type that resolves it, else the string. */
function plain(text: string): unknown {
  if (!MAYBE_IMPLICIT.test(text)) return text;
  for (const type of IMPLICIT) if (type.resolve(text)) return type.construct(text);
  return text;
}
