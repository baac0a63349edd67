/** Something wrong with one file of the config repo. */
export interface Problem {
  file: string;
  /** Dotted path to the field; empty when the whole file is at fault. */
  field: string;
  message: string;
}

export function formatProblem({ file, field, message }: Problem): string {
  return field ? `${file}: ${field}: ${message}` : `${file}: ${message}`;
}

/** Append one list to another without spreading it into arguments: a file can have 100k problems, past the call stack's limit. */
export function appendAll<T>(to: T[], items: Iterable<T>): T[] {
  for (const item of items) to.push(item);
  return to;
}
