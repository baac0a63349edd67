import type { Problem } from '../schema/answers.js';

export type { Problem };

export function formatProblem({ file, field, message }: Problem): string {
  return field ? `${file}: ${field}: ${message}` : `${file}: ${message}`;
}

/** Append one list to another without spreading it into arguments: a file can have 100k problems, past the call stack's limit. */
export function appendAll<T>(to: T[], items: Iterable<T>): T[] {
  for (const item of items) to.push(item);
  return to;
}
