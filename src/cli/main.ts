import { compile } from './compile.js';
import { diff } from './diff.js';
import { EXIT, type Command, type Io, UsageError } from './command.js';
import { serve } from './serve.js';
import { validate } from './validate.js';

const COMMANDS: Command[] = [serve, validate, diff, compile];

const HELP = `Usage: aami <command> [options]

AAMI Config: Prometheus scrape targets kept as YAML in a Git repo.

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(10)} ${c.summary}`).join('\n')}

Run 'aami <command> --help' for a command's options.`;

export async function main(argv: string[], io: Io): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    io.out(HELP);
    return name ? EXIT.ok : EXIT.usage;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    io.err(`aami: unknown command "${name}"\n\n${HELP}`);
    return EXIT.usage;
  }
  try {
    return await command.run(rest, io);
  } catch (error) {
    if (error instanceof UsageError) {
      io.err(`aami ${command.name}: ${error.message}\nRun 'aami ${command.name} --help' for usage.`);
      return EXIT.usage;
    }
    throw error;
  }
}
