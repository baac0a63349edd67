import type { EffectiveCheck, HistoryEntry } from '../../schema/answers.js';
import type { targetView } from '../../inventory/views.js';
import type { ScrapeState, UpStates } from '../prometheus.js';
import { Scrape } from './fleet.js';
import { Ago, ErrorBox, seesTokens, TableHead, type Viewer } from './layout.js';

export interface TargetProps {
  target: ReturnType<typeof targetView>;
  checks: EffectiveCheck[];
  /** Null: not read now (too many history reads at once, or git failed: the log says). */
  history: HistoryEntry[] | null;
  stale: boolean;
  up?: UpStates;
  now: Date;
  viewer: Viewer;
}

export function TargetView({ target, checks, history, stale, up, now, viewer }: TargetProps) {
  const scrape: ScrapeState | undefined = up && 'byHost' in up ? up.byHost.get(target.hostname) : undefined;
  return (
    <section>
      <p>
        <a href="/console/fleet">← Fleet</a>
      </p>
      <h1>{target.hostname}</h1>
      <dl class="facts">
        <dt>Address</dt>
        <dd>{target.ip_address}</dd>
        <dt>Primary group</dt>
        <dd>
          <a href={`/console/fleet?group=${encodeURIComponent(target.primary_group_id)}`}>{target.primary_group_id}</a>
        </dd>
        {target.group_ids.length > 0 && (
          <>
            <dt>Also in</dt>
            <dd>{target.group_ids.join(', ')}</dd>
          </>
        )}
        <dt>Last heartbeat</dt>
        <dd>
          <Ago at={target.last_seen} now={now} />
          {stale && <span class="badge bad">stale</span>}
        </dd>
        {up && (
          <>
            <dt>Prometheus</dt>
            <dd>
              <Scrape state={scrape} known={'byHost' in up} />
            </dd>
          </>
        )}
        <dt>Registered</dt>
        <dd>
          {target.registered_by_token ? (
            <>
              by token <TokenLink id={target.registered_by_token} viewer={viewer} />, <Ago at={target.registered_at} now={now} />
            </>
          ) : (
            'by an admin or a pull request'
          )}
          {target.ephemeral && <span class="badge">ephemeral</span>}
        </dd>
      </dl>
      {up && 'error' in up && <ErrorBox message={up.error} />}

      <h2>Labels</h2>
      <table>
        <TableHead columns={['Label', 'Value', 'From']} />
        <tbody>
          {Object.entries(target.effective_labels).map(([name, value]) => (
            <tr>
              <td>{name}</td>
              <td class="value">{value}</td>
              <td>
                <Source source={target.label_sources[name] ?? ''} viewer={viewer} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>

      <h2>Exporters</h2>
      <table>
        <TableHead columns={['Type', 'Port', 'Enabled', 'Path', 'Scheme']} />
        <tbody>
          {target.exporters.map((e) => (
            <tr>
              <td>{e.type}</td>
              <td>{e.port ?? ''}</td>
              <td>{e.enabled ? 'yes' : 'no'}</td>
              <td>{e.metrics_path ?? ''}</td>
              <td>{e.scheme ?? ''}</td>
            </tr>
          ))}
        </tbody>
      </table>

      <h2>Checks</h2>
      {checks.length ? (
        <table>
          <TableHead columns={['Check', 'Every', 'Timeout', 'Arguments']} />
          <tbody>
            {checks.map((check) => (
              <tr>
                <td title={check.description}>{check.name}</td>
                <td>{check.interval_seconds} s</td>
                <td>{check.timeout_seconds} s</td>
                <td class="value">{check.args.join(' ')}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : (
        <p class="muted">No check applies.</p>
      )}

      <h2>History</h2>
      {history === null ? (
        <p class="muted">Not read now (many history reads are under way, or git failed: the server log says). Reload the page in a moment.</p>
      ) : (
        <table>
          <TableHead columns={['When', 'Who', 'What', 'Commit']} />
          <tbody>
            {history.map((entry) => (
              <tr>
                <td>
                  <Ago at={entry.date} now={now} />
                </td>
                <td>
                  {entry.author}
                  {entry.source_address && <span class="muted"> from {entry.source_address}</span>}
                </td>
                <td>{entry.message}</td>
                <td>
                  <code>{entry.commit.slice(0, 12)}</code>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

/** group:<id> and token:<id> link to what set the label (a token, for those who see the Tokens page). */
function Source({ source, viewer }: { source: string; viewer: Viewer }) {
  const [kind, id] = source.split(':', 2);
  if (kind === 'group' && id) return <a href={`/console/fleet?group=${encodeURIComponent(id)}`}>group {id}</a>;
  if (kind === 'token' && id) {
    return (
      <>
        token <TokenLink id={id} viewer={viewer} />
      </>
    );
  }
  return <span>{source}</span>;
}

/** A token's id, linked to its row on the Tokens page for those who may see it. */
function TokenLink({ id, viewer }: { id: string; viewer: Viewer }) {
  return seesTokens(viewer) ? <a href={`/console/tokens#token-${encodeURIComponent(id)}`}>{id}</a> : <span>{id}</span>;
}
