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

/** zod's issues as one line per field, in words an operator can act on. */
export function describeZodError(error: z.ZodError): FieldError[] {
  return error.issues.flatMap((issue): FieldError[] => {
    const field = fieldPath(issue.path);
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((key) => ({ field: field ? `${field}.${key}` : key, message: 'is not a known field' }));
    }
    if (issue.code === 'invalid_type' && issue.input === undefined) {
      return [{ field, message: 'is required' }];
    }
    if (issue.code === 'invalid_key') {
      // a bad label name: the path ends with the name, and zod nests the name's own issues
      return [{ field, message: `invalid label name: ${issue.issues.map((inner) => inner.message).join('; ')}` }];
    }
    return [{ field, message: issue.message }];
  });
}
