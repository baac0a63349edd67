import { expiry, labelSet, required, wholeNumber } from './args.js';
import { fields, row, secretOnce, type Row } from './output.js';
import { action, HELP_ONLY, listing, onOne, resource } from './resource.js';

const PATH = '/api/v1/bootstrap-tokens';

const state = (t: Row) => (t.revoked ? 'revoked' : t.expired ? 'expired' : t.remaining === 0 ? 'used-up' : t.active ? 'active' : '-');

const details = (json: unknown) => {
  const token = row(json);
  return fields({ ...token, state: state(token), uses: `${token.uses ?? '-'} of ${token.max_uses ?? '-'}` }, [
    ['ID', 'id'],
    ['Name', 'name'],
    ['Group', 'default_group_id'],
    ['Uses', 'uses'],
    ['Expires', 'expires_at'],
    ['State', 'state'],
    ['Ephemeral', 'ephemeral'],
    ['TTL after last seen', 'ttl_after_last_seen'],
    ['Registered now', 'registered'],
    ['Nodes may deregister', 'allow_deregister'],
    ['Created', 'created_at'],
    ['Labels', 'labels'],
  ]);
};

export const tokens = resource({
  name: 'tokens',
  summary: 'bootstrap tokens nodes enrol with: create, list, show, revoke',
  about: 'Bootstrap tokens: a node registers itself with one (scripts/bootstrap.sh --token-file).\nOne per environment or batch, always with an expiry and a use limit; revoke it after the rollout.',
  actions: [
    action({
      name: 'create',
      summary: 'create a token; its secret is printed once',
      params: ['NAME'],
      synopsis: '--group ID --max-uses N --expires WHEN [options]',
      help: `Creates a bootstrap token and prints its secret once (with --json: the "token" field).
Only the secret's hash is kept; a lost secret means a new token.

Options:
      --group ID                 the group nodes join (a node may pick a group below it)
      --max-uses N               how many hosts may enrol with it
      --expires WHEN             an RFC 3339 time (2027-12-31T23:59:59Z) or a span from now:
                                 90m, 12h, 30d, 8w
      --label KEY=VALUE          a label every enrolled node gets and cannot override (repeatable)
      --ephemeral                nodes enrolled with it are removed once they stop reporting
      --ttl-after-last-seen D    how long after its last heartbeat an ephemeral node goes (e.g. 10m)
  -h, --help                     show this help`,
      options: {
        group: { type: 'string' },
        'max-uses': { type: 'string' },
        expires: { type: 'string' },
        label: { type: 'string', multiple: true },
        ephemeral: { type: 'boolean' },
        'ttl-after-last-seen': { type: 'string' },
      },
      async run({ values, args: [name], api }) {
        const ttl = values['ttl-after-last-seen'];
        const answer = await api.post(PATH, {
          name,
          default_group_id: required(values.group, '--group'),
          max_uses: wholeNumber(required(values['max-uses'], '--max-uses'), '--max-uses'),
          expires_at: expiry(required(values.expires, '--expires')),
          ...labelSet(values.label),
          // sent only when asked for, so a server without ephemeral tokens still takes the rest
          ...(values.ephemeral ? { ephemeral: true } : {}),
          ...(ttl !== undefined ? { ttl_after_last_seen: ttl } : {}),
        });
        return { answer, lines: (json) => [...details(json), ...secretOnce('Token', row(json).token)] };
      },
    }),
    listing({
      summary: 'list every token with its uses and state',
      help: `Lists every bootstrap token (never a secret).${HELP_ONLY}`,
      options: {},
      path: PATH,
      columns: [
        ['ID', (t) => t.id],
        ['NAME', (t) => t.name],
        ['GROUP', (t) => t.default_group_id],
        ['USES', (t) => `${t.uses ?? '-'}/${t.max_uses ?? '-'}`],
        ['EXPIRES', (t) => t.expires_at],
        ['STATE', state],
      ],
    }),
    onOne({ name: 'show', summary: 'one token: uses, remaining, expiry, state, labels', help: 'Shows one bootstrap token by its id (never its secret).', param: 'ID', path: PATH, lines: details }),
    onOne({ name: 'revoke', summary: 'revoke a token: no node can enrol with it any more', help: 'Revokes a bootstrap token. Nodes it enrolled stay registered.', param: 'ID', path: PATH, lines: details }),
  ],
});
