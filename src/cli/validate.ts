import * as fs from 'node:fs';
import { resolve } from 'node:path';
import { readConfigFiles } from '../catalog/load.js';
import { formatProblem } from '../catalog/problem.js';
import { CatalogState } from '../catalog/state.js';
import { EXIT, parseFlags, UsageError, type Command } from './command.js';

export async function loadDirectory(dir: string): Promise<CatalogState> {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new UsageError(`${dir}: no such directory`);
  const state = new CatalogState();
  for (const [path, text] of readConfigFiles(fs, dir)) state.set(path, text);
  return state;
}

export const validate: Command = {
  name: 'validate',
  summary: 'check a config repo checkout (for pull-request CI)',
  help: `Usage: aami validate [DIR] [--quiet]

Checks every file of the config repo in DIR (default: the current directory): YAML syntax,
each file against its schema, file names against the ids inside, references between
files (groups, parents, token groups), duplicate addresses and label names.

Exit status: 0 valid, 1 invalid (every problem is listed as FILE: FIELD: REASON), 2 usage error.

Options:
  -q, --quiet   print nothing when the repo is valid
  -h, --help    show this help`,
  async run(argv, io) {
    const { values, positionals } = parseFlags(argv, { quiet: { type: 'boolean', short: 'q' } });
    if (values.help) return io.out(this.help), EXIT.ok;
    if (positionals.length > 1) throw new UsageError('validate takes at most one directory');
    const dir = resolve(positionals[0] ?? '.');
    const { catalog, problems } = (await loadDirectory(dir)).snapshot();
    for (const problem of problems) io.err(formatProblem(problem));
    if (problems.length) {
      io.err(`${problems.length} problem${problems.length === 1 ? '' : 's'} found`);
      return EXIT.invalid;
    }
    if (!values.quiet) io.out(`valid: ${catalog.groups.size} groups, ${catalog.targets.size} targets, ${catalog.tokens.size} tokens, ${catalog.checks.size} checks`);
    return EXIT.ok;
  },
};
