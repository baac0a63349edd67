import type { RepoHealth } from '../../api/deps.js';
import type { Problem } from '../../catalog/problem.js';
import type { RemoteStatus } from '../../schema/answers.js';
import { Ago, ErrorBox, Pager, TableHead } from './layout.js';

export interface ProblemsProps {
  /** One page of problems, by file. */
  problems: Problem[];
  problemCount: number;
  fileCount: number;
  page: number;
  pages: number;
  head: string | null;
  repo: RepoHealth;
  remote: RemoteStatus | null;
  compiler: { lastSuccessAt?: Date; lastError?: string };
  writerFailure?: { at: Date; message: string };
  stale: string[];
  /** Null on a follower of a primary: the primary counts them. */
  staleCount: number | null;
  staleAfterSeconds: number;
  lastSeen: (hostname: string) => Date | undefined;
  now: Date;
}

export function ProblemsView(props: ProblemsProps) {
  const { repo, remote, now } = props;
  const troubles = [props.fileCount && `${props.fileCount} invalid file${props.fileCount === 1 ? '' : 's'}`, props.compiler.lastError && 'SD output', repo.error && 'repository', remote?.error && 'remote', props.writerFailure && 'writer', props.staleCount && `${props.staleCount} stale node${props.staleCount === 1 ? '' : 's'}`].filter(Boolean);
  return (
    <section>
      <h1>Problems</h1>
      <p class="summary">{troubles.length ? `Needs attention: ${troubles.join(', ')}.` : 'Nothing needs attention.'}</p>

      <h2>Invalid files</h2>
      <p class="muted">A broken file keeps serving its last good version until it is fixed; a broken credential or bootstrap token file lets nobody in until then.</p>
      {props.problemCount ? (
        <>
          <table class="problems">
            <TableHead columns={['File', 'Field', 'Reason']} />
            <tbody>
              {props.problems.map((p) => (
                <tr>
                  <td>
                    <code>{p.file}</code>
                  </td>
                  <td>{p.field}</td>
                  <td>{p.message}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <Pager base="/console/problems" params={{}} page={props.page} pages={props.pages} />
        </>
      ) : (
        <p>None.</p>
      )}

      <h2>Repository</h2>
      <dl class="facts">
        <dt>Branch</dt>
        <dd>
          {repo.branch} at <code>{props.head?.slice(0, 12) ?? 'no commit'}</code>
        </dd>
        <dt>SD output</dt>
        <dd>
          last written <Ago at={props.compiler.lastSuccessAt} now={now} />
        </dd>
      </dl>
      <ErrorBox message={props.compiler.lastError} />
      <ErrorBox message={repo.error ?? undefined} />
      {repo.warning && <p class="notice">{repo.warning}</p>}
      <ErrorBox message={props.writerFailure && `The last write failed (${props.writerFailure.at.toISOString()}): ${props.writerFailure.message}`} />

      <h2>Remote</h2>
      {remote ? (
        <>
          <dl class="facts">
            <dt>Remote</dt>
            <dd>
              {remote.url} ({remote.branch})
            </dd>
            {/* A pull that failed still tells when the remote last answered: two rows, not one "last sync". */}
            <dt>Last pull</dt>
            <dd>
              {remote.last_pull ? (
                <>
                  {remote.last_pull.outcome}, <Ago at={remote.last_pull.at} now={now} />
                </>
              ) : (
                'none yet'
              )}
            </dd>
            <dt>Remote last answered</dt>
            <dd>
              <Ago at={remote.last_sync_at} now={now} />
            </dd>
            <dt>Remote head</dt>
            <dd>
              <code>{remote.remote_head?.slice(0, 12) ?? 'unknown'}</code>
            </dd>
            <dt>Last push</dt>
            <dd>
              {remote.last_push ? (
                <>
                  {remote.last_push.outcome}, <Ago at={remote.last_push.at} now={now} />
                  {remote.last_push.reason ? `: ${remote.last_push.reason}` : ''}
                </>
              ) : (
                'none yet'
              )}
            </dd>
            <dt>Pushes refused</dt>
            <dd>{remote.pushes_rejected}</dd>
          </dl>
          <ErrorBox message={remote.error ?? undefined} />
        </>
      ) : (
        <p class="muted">This server follows no Git remote.</p>
      )}

      <h2>Stale nodes</h2>
      <p class="muted">Nodes that sent heartbeats, but none in the last {Math.round(props.staleAfterSeconds / 60)} min. They are reported, never removed.</p>
      {props.staleCount === null ? (
        <p>Counted on the primary: this server forwards heartbeats there and sees only those that came through it.</p>
      ) : props.staleCount ? (
        <>
          <ul class="stale">
            {props.stale.map((hostname) => (
              <li>
                <a href={`/console/targets/${encodeURIComponent(hostname)}`}>{hostname}</a> <Ago at={props.lastSeen(hostname)} now={now} />
              </li>
            ))}
          </ul>
          {props.staleCount > props.stale.length && <p class="muted">and {props.staleCount - props.stale.length} more</p>}
        </>
      ) : (
        <p>None.</p>
      )}
    </section>
  );
}
