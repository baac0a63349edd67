import * as fs from 'node:fs';
import { resolve } from 'node:path';
import { Compiler } from '../compile/compiler.js';
import { SdOutput } from '../compile/output.js';
import { EXIT, parseFlags, UsageError, type Command } from './command.js';
import { loadDirectory, printProblems } from './validate.js';

export const compile: Command = {
  name: 'compile',
  summary: 'write Prometheus file_sd JSON for a config repo once',
  help: `Usage: aami compile [DIR] --out SD_DIR [--allow-invalid]

Compiles the config repo in DIR (default: the current directory) into one file_sd JSON
file per job in SD_DIR. Files whose content is unchanged are not rewritten; *.json files
in SD_DIR and its subdirectories one level down (the group layout's) that no job produces
any more are removed: give SD_DIR to the SD files alone.

An invalid repo is refused (exit 1, nothing written) unless --allow-invalid is given, in
which case the invalid files are left out and the problems are printed.

Options:
  -o, --out SD_DIR     where to write the JSON files (required)
      --allow-invalid  compile the valid part of an invalid repo
  -h, --help           show this help`,
  async run(argv, io) {
    const { values, positionals } = parseFlags(argv, {
      out: { type: 'string', short: 'o' },
      'allow-invalid': { type: 'boolean' },
    });
    if (values.help) return io.out(this.help), EXIT.ok;
    if (!values.out) throw new UsageError('compile needs --out SD_DIR');
    if (positionals.length > 1) throw new UsageError('compile takes at most one directory');
    const snapshot = loadDirectory(resolve(positionals[0] ?? '.'));
    const { catalog, problems } = snapshot;
    printProblems(snapshot, io, 200);
    if (problems.length && !values['allow-invalid']) {
      io.err('nothing written (use --allow-invalid to compile the valid part)');
      return EXIT.invalid;
    }
    const { written, removed } = await new SdOutput(fs, resolve(values.out)).write(new Compiler().compile(catalog));
    io.out(`${catalog.targets.size} targets; wrote ${written.length} file(s), removed ${removed.length}, ${resolve(values.out)}`);
    return EXIT.ok;
  },
};
