import { credentials } from './admin/credentials.js';
import { groups } from './admin/groups.js';
import { login } from './admin/login.js';
import { targets } from './admin/targets.js';
import { tokens } from './admin/tokens.js';
import { VERSION } from '../package/files.js';
import { EXIT, type Command, type Io, UsageError } from './command.js';

const ADMIN: Command[] = [login, groups, targets, tokens, credentials];

/**
 * serve, validate, diff and compile pull in the server, Git and the catalog: loaded only
 * when one of them (or the command list) is asked for. An admin command, a client of the
 * HTTP API, then starts in a third of the time.
 */
async function allCommands(): Promise<Command[]> {
  const [{ serve }, { validate }, { diff }, { compile }] = await Promise.all([import('./serve.js'), import('./validate.js'), import('./diff.js'), import('./compile.js')]);
  return [serve, validate, diff, compile, ...ADMIN];
}

const help = (commands: Command[]) => `Usage: aami <command> [options]

AAMI Config: Prometheus scrape targets kept as YAML in a Git repo.

Commands:
${commands.map((c) => `  ${c.name.padEnd(12)} ${c.summary}`).join('\n')}

Run 'aami <command> --help' for a command's options; 'aami --version' for the version.`;

export async function main(argv: string[], io: Io): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    io.out(help(await allCommands()));
    return name ? EXIT.ok : EXIT.usage;
  }
  if (name === '--version' || name === '-V') {
    io.out(VERSION);
    return EXIT.ok;
  }
  const commands = ADMIN.some((c) => c.name === name) ? ADMIN : await allCommands();
  const command = commands.find((c) => c.name === name);
  if (!command) {
    io.err(`aami: unknown command "${name}"\n\n${help(commands)}`);
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
