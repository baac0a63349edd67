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
