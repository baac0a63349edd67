import type { z } from 'zod';

export interface FieldError {
  /** Dotted path to the field, e.g. `exporters[0].port`; empty for the document itself. */
  field: string;
  message: string;
}

export function fieldPath(path: ReadonlyArray<PropertyKey>): string {
  return path
    .map((part, i) => (typeof part === 'number' ? `[${part}]` : i === 0 ? String(part) : `.${String(part)}`))
    .join('');
}

/**
 * zod's issues as one line per field, in words an operator can act on. `input` is what was
 * checked: zod keeps no input in its issues, and a field of the wrong type is told from a
 * missing one by what the input holds at its path.
 */
export function describeZodError(error: z.ZodError, input: unknown): FieldError[] {
  return error.issues.flatMap((issue): FieldError[] => {
    const field = fieldPath(issue.path);
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((key) => ({ field: field ? `${field}.${key}` : key, message: 'is not a known field' }));
    }
    if (issue.code === 'invalid_type' && valueAt(input, issue.path) === undefined) {
      return [{ field, message: 'is required' }];
    }
    if (issue.code === 'invalid_key') {
      // a bad label name: the path ends with the name, and zod nests the name's own issues
      return [{ field, message: `invalid label name: ${issue.issues.map((inner) => inner.message).join('; ')}` }];
    }
    return [{ field, message: issue.message }];
  });
}

function valueAt(input: unknown, path: ReadonlyArray<PropertyKey>): unknown {
  let at = input;
  for (const key of path) {
    if (typeof at !== 'object' || at === null || !Object.hasOwn(at, key)) return undefined;
    at = (at as Record<PropertyKey, unknown>)[key];
  }
  return at;
}

interface Visit {
  value: unknown;
  key?: PropertyKey;
  parent?: Visit;
}

/**
 * Every "__proto__" key in parsed YAML or JSON (at most `max`). zod drops such a key from a
 * record without a word, so a label or exporter type named "__proto__" would vanish silently;
 * it is refused before the schema sees the data. Iterative: a deeply nested body cannot
 * exhaust the stack. Each object is looked into once: YAML aliases (`*a`) make a value a
 * graph, a cycle or billions of paths from a few lines, and such a file ran it for ever.
 */
export function protoKeys(data: unknown, max = 10): FieldError[] {
  const found: FieldError[] = [];
  const stack: Visit[] = [{ value: data }];
  const seen = new Set<object>();
  while (stack.length && found.length < max) {
    const visit = stack.pop()!;
    if (typeof visit.value !== 'object' || visit.value === null || seen.has(visit.value)) continue;
    seen.add(visit.value);
    for (const [key, value] of Object.entries(visit.value)) {
      const child: Visit = { value, key: Array.isArray(visit.value) ? Number(key) : key, parent: visit };
      if (key === '__proto__') found.push({ field: fieldPath(pathOf(child)), message: 'is not allowed as a key' });
      else stack.push(child);
    }
  }
  return found;
}

function pathOf(visit: Visit): PropertyKey[] {
  const path: PropertyKey[] = [];
  for (let at: Visit | undefined = visit; at?.parent; at = at.parent) path.push(at.key!);
  return path.reverse();
}
