/**
 * How node was started with a V8 flag: `true` given on (`--name`), `false` given off
 * (`--no-name`, `--noname`), undefined not given. Looked for on its command line and in
 * NODE_OPTIONS (`_` and `-` alike): a flag the server sets for itself while running must not
 * undo one an operator gave.
 */
export function nodeFlag(flag: string, args: readonly string[] = process.execArgv, options = process.env.NODE_OPTIONS ?? ''): boolean | undefined {
  const name = flag.replace(/^--/, '').replace(/_/g, '-');
  let given: boolean | undefined;
  // Node reads NODE_OPTIONS first, then its command line: the command line wins.
  for (const arg of [...options.split(/\s+/), ...args]) {
    const spelled = arg.replace(/_/g, '-').replace(/=.*$/, '');
    if (spelled === `--${name}`) given = true;
    else if (spelled === `--no-${name}` || spelled === `--no${name}`) given = false;
  }
  return given; // the last one given wins, as in V8
}
