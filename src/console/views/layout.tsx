import type { Child } from 'hono/jsx';
import { html } from 'hono/html';
import { roleIncludes } from '../../access/principal.js';
import type { Role } from '../../schema/index.js';

/** Who sees the Tokens page, its link and links to it: as GET /api/v1/bootstrap-tokens, a token list being a map of what can enrol. */
export const TOKENS_ROLE: Role = 'editor';
export const seesTokens = (viewer: Viewer | undefined) => viewer !== undefined && roleIncludes(viewer.role, TOKENS_ROLE);

/** Who is looking, for the header and the forms every page carries. */
export interface Viewer {
  name: string;
  role: Role;
  csrf: string;
}

export interface PageFrame {
  title: string;
  viewer?: Viewer;
  /** The nav entry to mark. */
  section?: 'fleet' | 'tokens' | 'problems';
  /** Files with problems, shown beside "Problems". */
  problemCount?: number;
  assets: { css: string; js: string };
}

/** A whole page: the doctype, then the layout. Every value in it is escaped by hono/jsx. */
export function page(frame: PageFrame, body: Child) {
  return html`<!DOCTYPE html>${(<Layout frame={frame}>{body}</Layout>)}`;
}

function Layout({ frame, children }: { frame: PageFrame; children?: Child }) {
  const { viewer, section } = frame;
  const nav = (id: NonNullable<PageFrame['section']>, label: Child) => (
    <a href={`/console/${id}`} class={section === id ? 'current' : undefined}>
      {label}
    </a>
  );
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>{frame.title} · AAMI Config</title>
        <link rel="icon" href="data:," />
        <link rel="stylesheet" href={frame.assets.css} />
        <script src={frame.assets.js} defer></script>
      </head>
      <body>
        <header>
          <strong class="brand">AAMI Config</strong>
          {viewer && (
            <nav>
              {nav('fleet', 'Fleet')}
              {seesTokens(viewer) && nav('tokens', 'Tokens')}
              {nav(
                'problems',
                <>
                  Problems{frame.problemCount ? <span class="badge bad">{frame.problemCount}</span> : null}
                </>,
              )}
            </nav>
          )}
          {viewer && (
            <form method="post" action="/console/sign-out" class="who">
              <span>
                {viewer.name} <span class="role">{viewer.role}</span>
              </span>
              <Csrf viewer={viewer} />
              <button type="submit" class="link">
                Sign out
              </button>
            </form>
          )}
        </header>
        <main>{children}</main>
      </body>
    </html>
  );
}

/** The hidden field every form carries; the server checks it on every POST. */
export function Csrf({ viewer }: { viewer: Viewer }) {
  return <input type="hidden" name="_csrf" value={viewer.csrf} />;
}

/** A table's header row; a column given as false is left out. */
export function TableHead({ columns }: { columns: Array<string | false | undefined> }) {
  return (
    <thead>
      <tr>
        {columns.filter((c) => c !== false && c !== undefined).map((c) => (
          <th>{c}</th>
        ))}
      </tr>
    </thead>
  );
}

export function ErrorBox({ message }: { message?: string }) {
  return message ? (
    <p class="error" role="alert">
      {message}
    </p>
  ) : null;
}

/** A time as "5 min ago", with the exact time on hover. */
export function Ago({ at, now }: { at: string | Date | null | undefined; now: Date }) {
  if (!at) return <span class="muted">never</span>;
  const date = typeof at === 'string' ? new Date(at) : at;
  return (
    <time datetime={date.toISOString()} title={date.toISOString()}>
      {ago(now.getTime() - date.getTime())}
    </time>
  );
}

function ago(ms: number): string {
  const future = ms < 0;
  const s = Math.abs(ms) / 1000;
  const text = s < 10 ? 'just now' : s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min` : s < 129_600 ? `${Math.round(s / 3600)} h` : `${Math.round(s / 86_400)} d`;
  return text === 'just now' ? text : future ? `in ${text}` : `${text} ago`;
}

/** Page links that keep the other query parameters. */
export function Pager({ base, params, page, pages }: { base: string; params: Record<string, string | undefined>; page: number; pages: number }) {
  if (pages <= 1) return null;
  const href = (n: number) => {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) if (value) query.set(key, value);
    query.set('page', String(n));
    return `${base}?${query}`;
  };
  return (
    <nav class="pager" aria-label="pages">
      {page > 1 ? <a href={href(page - 1)}>← previous</a> : <span class="muted">← previous</span>}
      <span>
        page {page} of {pages}
      </span>
      {page < pages ? <a href={href(page + 1)} rel="next">next →</a> : <span class="muted">next →</span>}
    </nav>
  );
}

export function ErrorPage({ status, message }: { status: number; message: string }) {
  return (
    <section>
      <h1>{status === 404 ? 'Not found' : status === 403 ? 'Not allowed' : status >= 500 ? 'Something went wrong' : 'Cannot do that'}</h1>
      <ErrorBox message={message} />
      <p>
        <a href="/console/fleet">Back to the fleet</a>
      </p>
    </section>
  );
}
