import type { tokenView } from '../../inventory/views.js';
import { Ago, Csrf, ErrorBox, Pager, TableHead, type Viewer } from './layout.js';

export type TokenView = ReturnType<typeof tokenView>;

/** What a token's row shows and the page's script refreshes: enrolled of allowed, and its state. */
export function tokenProgress(token: TokenView) {
  const taken = token.ephemeral ? token.registered : token.uses;
  const state = token.revoked ? 'revoked' : token.expired ? 'expired' : token.active ? 'active' : 'used up';
  return { id: token.id, taken, max: token.max_uses, state };
}

export interface TokenForm {
  name: string;
  default_group_id: string;
  max_uses: string;
  expires: string;
  labels: string;
}

export const EMPTY_FORM: TokenForm = { name: '', default_group_id: '', max_uses: '100', expires: '30d', labels: '' };

export interface TokensProps {
  viewer: Viewer;
  tokens: TokenView[];
  page: number;
  pages: number;
  now: Date;
  groups: Array<{ id: string; name: string }>;
  form: TokenForm;
  formError?: string;
  notice?: string;
}

export function TokensView(props: TokensProps) {
  // Only editors and admins see this page: each may create and revoke.
  const { viewer, now } = props;
  return (
    <section>
      <h1>Bootstrap tokens</h1>
      {props.notice && <p class="notice">{props.notice}</p>}
      <table class="tokens" data-progress={`/console/tokens/progress?page=${props.page}`}>
        <TableHead columns={['Name', 'Group', 'Enrolled', 'State', 'Expires', 'Labels', '']} />
        <tbody>
          {props.tokens.map((token) => {
            const progress = tokenProgress(token);
            return (
              <tr id={`token-${token.id}`} data-token={token.id}>
                <td>
                  {token.name}
                  <br />
                  <code class="muted">{token.id}</code>
                </td>
                <td>{token.default_group_id}</td>
                <td class="progress">
                  <progress value={progress.taken} max={progress.max}></progress>{' '}
                  <span class="taken">{progress.taken}</span> / {progress.max}
                  {token.ephemeral && <span class="muted"> at once</span>}
                </td>
                <td>
                  <span class={`state badge ${progress.state === 'active' ? 'good' : 'bad'}`}>{progress.state}</span>
                </td>
                <td>
                  <Ago at={token.expires_at} now={now} />
                </td>
                <td class="labels">
                  {Object.entries(token.labels).map(([name, value]) => (
                    <span class="label">
                      {name}={value}
                    </span>
                  ))}
                </td>
                <td>
                  {!token.revoked && (
                    <form method="post" action={`/console/tokens/${encodeURIComponent(token.id)}/revoke`} data-confirm={`Revoke ${token.name}? Nodes can no longer enrol with it.`}>
                      <Csrf viewer={viewer} />
                      <button type="submit" class="danger">
                        Revoke
                      </button>
                    </form>
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {props.tokens.length === 0 && <p class="muted">No bootstrap token yet.</p>}
      <Pager base="/console/tokens" params={{}} page={props.page} pages={props.pages} />
      <CreateForm {...props} />
    </section>
  );
}

function CreateForm({ viewer, groups, form, formError }: TokensProps) {
  return (
    <form method="post" action="/console/tokens" class="create">
      <h2>New token</h2>
      <ErrorBox message={formError} />
      <Csrf viewer={viewer} />
      <label>
        Name
        <input type="text" name="name" value={form.name} required maxlength={200} />
      </label>
      <label>
        Default group
        <select name="default_group_id" required>
          {groups.map((g) => (
            <option value={g.id} selected={g.id === form.default_group_id}>
              {g.id === g.name ? g.id : `${g.name} (${g.id})`}
            </option>
          ))}
        </select>
      </label>
      <label>
        Most hosts
        <input type="number" name="max_uses" value={form.max_uses} min={1} required />
      </label>
      <label>
        Expires
        <input type="text" name="expires" value={form.expires} required placeholder="30d, 12h or 2027-01-31T23:59:59Z" />
      </label>
      <label>
        Labels <span class="muted">(one name=value a line; nodes cannot override them)</span>
        <textarea name="labels" rows={3}>
          {form.labels}
        </textarea>
      </label>
      <button type="submit">Create token</button>
    </form>
  );
}

/** The one page that shows a token's secret: the answer to the POST that made it, never stored, never cached. */
export function TokenCreatedView({ token, secret }: { token: TokenView; secret: string }) {
  return (
    <section class="narrow">
      <h1>Token {token.name} created</h1>
      <p class="notice">This is the only time the token is shown: the server keeps only its hash. Copy it now.</p>
      <div class="secret">
        <input type="text" id="secret" readonly value={secret} aria-label="token" />
        <button type="button" data-copy="secret">
          Copy
        </button>
        <span class="copied" hidden>
          copied
        </span>
      </div>
      <p>
        On a node: <code>curl -fsSL $SERVER/bootstrap.sh | bash -s -- --token-file /root/aami-token --server $SERVER</code>
      </p>
      <p>
        Up to {token.max_uses} hosts enrol into <strong>{token.default_group_id}</strong> until {token.expires_at}.
      </p>
      <p>
        <a href={`/console/tokens#token-${token.id}`}>Follow its rollout</a>
      </p>
    </section>
  );
}
