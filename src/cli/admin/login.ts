import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { EXIT, parseFlags, UsageError, type Command } from '../command.js';
import { Api, checkCredential, serverUrl } from './api.js';
import { configPath, writeConfig } from './config.js';
import { failure } from './resource.js';

/** The credential from stdin: typed at a prompt that does not echo it, or piped in (one line). */
async function readCredential(prompt: string, err: (line: string) => void): Promise<string> {
  const stdin = process.stdin;
  if (stdin.isTTY) {
    // readline turns the terminal's echo off as it is created: the prompt goes up only after
    // that, or a credential typed at once would be echoed by the terminal itself.
    const silent = new Writable({ write: (_chunk, _encoding, done) => done() });
    const rl = createInterface({ input: stdin, output: silent, terminal: true });
    process.stderr.write(prompt);
    const line = await new Promise<string>((resolve, reject) => {
      rl.question('', resolve);
      // Ctrl-C or Ctrl-D at the prompt: nothing typed, nothing saved
      const cancel = () => reject(new UsageError('cancelled at the prompt'));
      rl.once('SIGINT', cancel).once('close', cancel);
    }).finally(() => {
      rl.close();
      err(''); // the Enter the terminal did not echo
    });
    return line.trim();
  }
  let text = '';
  for await (const chunk of stdin) text += String(chunk);
  return text.trim();
}

export const login: Command = {
  name: 'login',
  summary: 'save a server and credential for the admin commands (file mode 0600)',
  help: `Usage: aami login --server URL

Saves the server and a credential to ~/.config/aami/config.json (or $AAMI_CONFIG),
mode 0600, after checking that the server answers and accepts the credential for a
read (a server started with --open-reads accepts any credential for reads). The
credential is read from AAMI_CREDENTIAL, or else from standard input: typed at a
prompt that does not echo it, or piped (aami login --server URL < file). It is never a
flag, since flags show in ps.

Options:
      --server URL   the aami server [AAMI_SERVER], e.g. http://config-server:8080
  -h, --help         show this help

Exit status: 0 saved, 1 the server refused the credential, 2 usage error, 3 cannot reach
the server. Nothing is saved unless the exit status is 0.`,
  async run(argv, io) {
    const { values } = parseFlags(argv, { server: { type: 'string' } }, false);
    if (values.help) return io.out(this.help), EXIT.ok;
    const given = values.server || io.env.AAMI_SERVER;
    if (!given) throw new UsageError('--server URL is required (or AAMI_SERVER)');
    const server = serverUrl(given);
    const credential = checkCredential(io.env.AAMI_CREDENTIAL || (await readCredential(`Credential for ${server.href}: `, io.err)));
    if (!credential) throw new UsageError('no credential given (set AAMI_CREDENTIAL or type it at the prompt)');
    try {
      // Groups are the one read every role may make: enough to tell a wrong credential.
      await new Api(server, credential).get('/api/v1/groups');
    } catch (error) {
      return failure(error, io);
    }
    const path = configPath(io.env);
    writeConfig(path, { server: server.href, credential });
    io.out(`saved ${server.href} and its credential to ${path} (mode 0600)`);
    return EXIT.ok;
  },
};
