import * as fs from 'node:fs';
import { resolve } from 'node:path';
import { Snapshot } from '../catalog/live.js';
import { readCheckout } from '../catalog/load.js';
import { formatProblem } from '../catalog/problem.js';
import { EXIT, parseFlags, UsageError, type Command, type Io } from './command.js';

/** A checkout (a pull request's tree) built as the server builds its repository. */
export function loadDirectory(dir: string): Snapshot {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new UsageError(`${dir}: no such directory`);
  return Snapshot.build(readCheckout(fs, dir), null);
}

/** Print the problems, at most `max` of them, then how many there were in how many files. */
export function printProblems(snapshot: Snapshot, io: Io, max: number): void {
  const { problems } = snapshot;
  for (const problem of problems.slice(0, max)) io.err(formatProblem(problem));
  if (problems.length > max) io.err(`… and ${problems.length - max} more (--max-problems N shows more)`);
  if (problems.length) {
    const files = snapshot.problemsByFile.size;
    io.err(`${problems.length} problem${problems.length === 1 ? '' : 's'} found${files > 1 ? ` in ${files} files` : ''}`);
  }
}

export const validate: Command = {
  name: 'validate',
  summary: 'check a config repo checkout (for pull-request CI)',
  help: `Usage: aami validate [DIR] [--quiet] [--max-problems N]

Checks every file of the config repo in DIR (default: the current directory): YAML syntax,
each file against its schema, file names against the ids inside, references between
files (groups, parents, token groups), duplicate addresses and label names. Symbolic
links, submodules and files over 1 MiB are refused unread.

Exit status: 0 valid, 1 invalid (problems are listed as FILE: FIELD: REASON), 2 usage error.

Options:
  -q, --quiet            print nothing when the repo is valid
      --max-problems N   list at most N problems (default 200); the count is always whole
  -h, --help             show this help`,
  async run(argv, io) {
    const { values, positionals } = parseFlags(argv, { quiet: { type: 'boolean', short: 'q' }, 'max-problems': { type: 'string' } });
    if (values.help) return io.out(this.help), EXIT.ok;
    if (positionals.length > 1) throw new UsageError('validate takes at most one directory');
    const max = Number(values['max-problems'] ?? 200);
    if (!Number.isInteger(max) || max < 0) throw new UsageError('--max-problems takes a whole number');
    const snapshot = loadDirectory(resolve(positionals[0] ?? '.'));
    printProblems(snapshot, io, max);
    if (snapshot.problems.length) return EXIT.invalid;
    const { catalog } = snapshot;
    if (!values.quiet) io.out(`valid: ${catalog.groups.size} groups, ${catalog.targets.size} targets, ${catalog.tokens.size} tokens, ${catalog.apiCredentials.size} credentials, ${catalog.checks.size} checks`);
    return EXIT.ok;
  },
};
