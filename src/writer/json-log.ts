import * as fs from 'node:fs';
import { SHARED_TARGET_FIELDS, sharedValue } from '../catalog/parse.js';
import type { Target } from '../schema/index.js';

/** Most values a dictionary numbers; past it, values are written in full (a fleet of ever new label sets cannot grow it without end). */
const DICTIONARY_LIMIT = 50_000;

/**
 * The numbers a log of JSON lines (the parse cache, the restart image) gives the values of
 * SHARED_TARGET_FIELDS: a value is written once, as `["=", n, value]`, before the first line
 * that refers to it by n. Keyed by the shared copy itself (parses share one copy of each
 * value), so a lookup costs no JSON. A target's line was ~440 bytes in full, ~220 by number,
 * and reading it back costs no sharing of its values again.
 */
export class Dictionary {
  private readonly numbers = new Map<unknown, number>();

  constructor(public next = 0) {}

  /** A value defined by the log as it is read: a later definition of a number replaces an earlier one. */
  learn(n: number, value: unknown, previous: unknown): void {
    if (previous !== undefined && this.numbers.get(previous) === n) this.numbers.delete(previous);
    if (this.numbers.size < DICTIONARY_LIMIT) this.numbers.set(value, n);
    this.next = Math.max(this.next, n + 1);
  }

  /** The target's value with its shared fields as numbers; the lines defining the values it is the first to use are added to `lines`. */
  refer(target: Target, lines: string[]): Record<string, unknown> {
    const value: Record<string, unknown> = { ...target };
    for (const field of SHARED_TARGET_FIELDS) {
      const shared = value[field];
      if (shared === undefined) continue;
      let n = this.numbers.get(shared);
      if (n === undefined) {
        if (this.numbers.size >= DICTIONARY_LIMIT) continue; // written in full
        this.numbers.set(shared, (n = this.next++));
        lines.push(`${JSON.stringify(['=', n, shared])}\n`);
      }
      value[field] = n;
    }
    return value;
  }
}

/** How a definition's line starts: `["=", n, value]` as JSON.stringify writes it. */
export const DEFINITION = '["=",';

/** The values a log defined so far, as it is read line by line. */
export class Definitions {
  private readonly values = new Map<number, unknown>();

  constructor(private readonly dictionary?: Dictionary) {}

  /** Reads the line when it is a definition (`["=", n, value]`); false when it is not one. */
  read(line: unknown[]): boolean {
    if (line[0] !== '=' || line.length !== 3) return false;
    const [, n, value] = line;
    if (!Number.isSafeInteger(n) || (n as number) < 0 || value === undefined) return true;
    const shared = sharedValue(value, '');
    this.dictionary?.learn(n as number, shared, this.values.get(n as number));
    this.values.set(n as number, shared);
    return true;
  }

  /** A target's value from its line: each shared field a number defined before it, or the value itself. Undefined when a number is not defined. */
  target(body: unknown): Target | undefined {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
    const value = body as Record<string, unknown>;
    for (const field of SHARED_TARGET_FIELDS) {
      const ref = value[field];
      if (ref === undefined) continue;
      const shared = typeof ref === 'number' ? this.values.get(ref) : sharedValue(ref, field);
      if (shared === undefined) return undefined;
      value[field] = shared;
    }
    return value as Target;
  }
}

/**
 * A file's lines, read a chunk at a time and each decoded on its own. The whole log as one
 * string (46 MB at 100k targets), and the buffer it was decoded from, were garbage the GC
 * took its time to return: the server's memory stayed that much higher after start-up.
 * With `only`, the first line and those that start with it are decoded, and every other one
 * is given as '' (counted, not read: a log read for its dictionary alone).
 */
export function* readLines(file: string | number, only?: string): Generator<string> {
  const prefix = only === undefined ? undefined : Buffer.from(only);
  let first = true;
  // A descriptor given is the caller's to close.
  const fd = typeof file === 'number' ? file : fs.openSync(file, 'r');
  try {
    let buffer = Buffer.allocUnsafe(1 << 20);
    let start = 0;
    let end = 0;
    for (let eof = false; ; ) {
      const newline = buffer.indexOf(10, start);
      if (newline !== -1 && newline < end) {
        const skipped = prefix && !first && buffer.compare(prefix, 0, prefix.length, start, Math.min(start + prefix.length, newline)) !== 0;
        yield skipped ? '' : buffer.toString('utf8', start, newline);
        first = false;
        start = newline + 1;
        continue;
      }
      if (eof) {
        if (start < end) yield buffer.toString('utf8', start, end);
        return;
      }
      // Move the part of a line left to the front (a line longer than the buffer doubles it), then read on.
      if (start === 0 && end === buffer.length) buffer = Buffer.concat([buffer, Buffer.allocUnsafe(buffer.length)]);
      buffer.copy(buffer, 0, start, end);
      end -= start;
      start = 0;
      const read = fs.readSync(fd, buffer, end, buffer.length - end, null);
      if (read === 0) eof = true;
      end += read;
    }
  } finally {
    if (fd !== file) fs.closeSync(fd);
  }
}
