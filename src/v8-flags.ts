/**
 * Whether node was started with this V8 flag (`--name`) or its `--no-` form, on its command
 * line or in NODE_OPTIONS (`_` and `-` alike): a flag the server sets for itself while
 * running must not undo one an operator gave.
 */
export function givenToNode(flag: string): boolean {
  const name = flag.replace(/^--(no-)?/, '').replace(/_/g, '-');
  return [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((arg) => {
    const given = arg.replace(/_/g, '-').replace(/=.*$/, '');
    return given === `--${name}` || given === `--no-${name}`;
  });
}
