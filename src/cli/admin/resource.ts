import type { ParseArgsConfig } from 'node:util';
import { EXIT, parseFlags, UsageError, type Command, type Io } from '../command.js';
import { connect, Refused, segment, Unreachable, type Answer, type Api } from './api.js';
import { refusalLines, rows, table, type Column } from './output.js';

/** Exit status of the admin commands; 0 and 2 are shared with every command. */
const ADMIN_EXIT = { ok: EXIT.ok, refused: 1, usage: EXIT.usage, unreachable: 3 } as const;

type Options = NonNullable<ParseArgsConfig['options']>;

const CONNECTION = {
  server: { type: 'string' },
  json: { type: 'boolean' },
} as const satisfies Options;

type Values<O extends Options> = ReturnType<typeof parseFlags<O & typeof CONNECTION>>['values'];

/** What an action shows: the server's answer, and how to show it as text (--json prints the answer itself). */
export interface Shown {
  answer: Answer;
  lines(json: unknown): string[];
  /** Said on standard error, with or without --json (there are more pages, say). */
  notes?: string[];
}

export interface Action<O extends Options> {
  name: string;
  summary: string;
  /** Positional parameters, e.g. ['HOSTNAME']; with `repeat`, the last one may be given several times. */
  params: string[];
  repeat?: boolean;
  /** The usage line after the parameters, e.g. '--group ID [--label KEY=VALUE]...'. */
  synopsis?: string;
  /** Help text after the usage line: what it does and its own options. */
  help: string;
  options: O;
  run(input: { values: Values<O>; args: string[]; api: Api }): Promise<Shown>;
}

/** Actions of differing option types, in one list. */
type AnyAction = Action<any>;

export const action = <O extends Options>(spec: Action<O>): AnyAction => spec;

/** `list`: the collection, as a table. */
export function listing<O extends Options>(spec: {
  summary: string;
  help: string;
  synopsis?: string;
  options: O;
  path: string;
  query?: (values: Values<O>) => Record<string, string | string[] | undefined>;
  columns: Column[];
  /** What to do about more pages than were asked for (the answer's Link: rel="next"). */
  more?: string;
}): AnyAction {
  const { path, query, columns, more, ...described } = spec;
  return action({
    name: 'list',
    params: [],
    ...described,
    async run({ values, api }) {
      const answer = await api.get(path, query?.(values));
      const paged = /;\s*rel="next"/.test(answer.headers.get('link') ?? '');
      return { answer, lines: (json) => table(rows(json), columns), notes: paged ? [`more match than these${more ? `: ${more}` : ''}`] : [] };
    },
  });
}

/** An action on one item named by its id: show (GET), delete (DELETE) or revoke (POST …/revoke). */
export function onOne(spec: { name: 'show' | 'delete' | 'revoke'; summary: string; help: string; param: string; path: string; lines: (json: unknown) => string[] }): AnyAction {
  return action({
    name: spec.name,
    summary: spec.summary,
    params: [spec.param],
    help: `${spec.help}${HELP_ONLY}`,
    options: {},
    async run({ args: [id], api }) {
      const path = `${spec.path}/${segment(id!, spec.param.toLowerCase())}`;
      const answer = spec.name === 'show' ? await api.get(path) : spec.name === 'delete' ? await api.delete(path) : await api.post(`${path}/revoke`);
      return { answer, lines: spec.lines };
    },
  });
}

export const HELP_ONLY = '\n\nOptions:\n  -h, --help   show this help';

export const CONNECTION_HELP = `Connection:
      --server URL   the aami server [AAMI_SERVER], e.g. http://config-server:8080
      --json         print the server's JSON answer exactly as it came, for scripts
  The credential comes from AAMI_CREDENTIAL (never a flag: flags show in ps), or from the
  file 'aami login' writes: ~/.config/aami/config.json or $AAMI_CONFIG, which must be
  mode 0600 (it is refused otherwise). A saved credential goes only to its saved server.

Exit status: 0 ok, 1 the server refused (its error code and message are printed),
2 usage error, 3 cannot reach the server.`;

/** `aami tokens|targets|groups|credentials <action>`: one command per API resource. */
export function resource(spec: { name: string; summary: string; about: string; actions: AnyAction[] }): Command {
  const usage = (a: AnyAction) => [`aami ${spec.name} ${a.name}`, ...a.params.map((p, i) => (a.repeat && i === a.params.length - 1 ? `${p}...` : p)), a.synopsis ?? '[options]'].filter(Boolean).join(' ');
  const help = `Usage: aami ${spec.name} <command> [options]

${spec.about}

Commands:
${spec.actions.map((a) => `  ${a.name.padEnd(8)} ${a.summary}`).join('\n')}

Run 'aami ${spec.name} <command> --help' for a command's options.

${CONNECTION_HELP}`;

  return {
    name: spec.name,
    summary: spec.summary,
    help,
    async run(argv, io) {
      const [name, ...rest] = argv;
      if (!name || name === '--help' || name === '-h' || name === 'help') {
        io.out(help);
        return name ? EXIT.ok : EXIT.usage;
      }
      const chosen = spec.actions.find((a) => a.name === name);
      if (!chosen) {
        io.err(`aami ${spec.name}: unknown command "${name}"; one of: ${spec.actions.map((a) => a.name).join(', ')}`);
        return EXIT.usage;
      }
      try {
        const { values, positionals } = parseFlags(rest, { ...chosen.options, ...CONNECTION } as typeof CONNECTION);
        if (values.help) return io.out(`Usage: ${usage(chosen)}\n\n${chosen.help}\n\n${CONNECTION_HELP}`), EXIT.ok;
        const count = chosen.params.length;
        if (chosen.repeat ? positionals.length < count : positionals.length !== count) throw new UsageError(`expected ${usage(chosen)}`);
        return await perform(() => chosen.run({ values, args: positionals, api: connect(values.server, io.env) }), values.json === true, io);
      } catch (error) {
        if (!(error instanceof UsageError)) throw error;
        io.err(`aami ${spec.name} ${chosen.name}: ${error.message}\nRun 'aami ${spec.name} ${chosen.name} --help' for usage.`);
        return EXIT.usage;
      }
    },
  };
}

/** Runs one action and prints its answer, or why there is none; the exit status says which. */
async function perform(run: () => Promise<Shown>, json: boolean, io: Io): Promise<number> {
  try {
    const shown = await run();
    if (json) io.out(shown.answer.text);
    else for (const line of shown.lines(shown.answer.json)) io.out(line);
    for (const note of shown.notes ?? []) io.err(note);
    return ADMIN_EXIT.ok;
  } catch (error) {
    return failure(error, io);
  }
}

/** Prints why a request failed and gives its exit status; anything but a refusal or no answer is rethrown. */
export function failure(error: unknown, io: Io): number {
  if (error instanceof Refused) {
    for (const line of refusalLines(error)) io.err(line);
    return ADMIN_EXIT.refused;
  }
  if (error instanceof Unreachable) {
    io.err(`error: ${error.message}`);
    return ADMIN_EXIT.unreachable;
  }
  throw error;
}
