import { expiry, required } from './args.js';
import { fields, row, secretOnce } from './output.js';
import { action, HELP_ONLY, listing, onOne, resource } from './resource.js';

const PATH = '/api/v1/credentials';

const details = (json: unknown) =>
  fields(row(json), [
    ['ID', 'id'],
    ['Name', 'name'],
    ['Role', 'role'],
    ['Expires', 'expires_at'],
    ['Expired', 'expired'],
    ['Revoked', 'revoked'],
    ['Created', 'created_at'],
    ['Created by', 'created_by'],
  ]);

export const credentials = resource({
  name: 'credentials',
  summary: 'API credentials for people and scripts: create, list, show, revoke',
  about: 'API credentials: one per person or script, with a role (admin, editor, reader), so the\nadmin credential need not be shared.',
  actions: [
    action({
      name: 'create',
      summary: 'create a credential; its secret is printed once',
      params: ['NAME'],
      synopsis: '--role admin|editor|reader [--expires WHEN]',
      help: `Creates an API credential and prints its secret once (with --json: the "credential"
field). Hand it over as AAMI_CREDENTIAL or with 'aami login'.

Options:
      --role ROLE      admin, editor or reader
      --expires WHEN   an RFC 3339 time or a span from now: 90m, 12h, 30d, 8w (default: never)
  -h, --help           show this help`,
      options: { role: { type: 'string' }, expires: { type: 'string' } },
      async run({ values, args: [name], api }) {
        const answer = await api.post(PATH, {
          name,
          role: required(values.role, '--role'),
          ...(values.expires ? { expires_at: expiry(values.expires) } : {}),
        });
        return { answer, lines: (json) => [...details(json), ...secretOnce('Credential', row(json).credential)] };
      },
    }),
    listing({
      summary: 'list credentials (never their secrets)',
      help: `Lists every API credential.${HELP_ONLY}`,
      options: {},
      path: PATH,
      columns: [
        ['ID', (c) => c.id],
        ['NAME', (c) => c.name],
        ['ROLE', (c) => c.role],
        ['EXPIRES', (c) => c.expires_at ?? 'never'],
        ['REVOKED', (c) => (c.revoked ? 'yes' : 'no')],
        ['CREATED', (c) => c.created_at],
      ],
    }),
    onOne({ name: 'show', summary: 'one credential: role, expiry, whether it still works, who made it', help: 'Shows one API credential by its id (never its secret).', param: 'ID', path: PATH, lines: details }),
    onOne({ name: 'revoke', summary: 'revoke a credential at once', help: 'Revokes an API credential; requests carrying it are refused from now on.', param: 'ID', path: PATH, lines: details }),
  ],
});
