import type { FleetPage, GroupNode } from '../fleet.js';
import type { ScrapeState, UpStates } from '../prometheus.js';
import { Ago, ErrorBox, Pager, TableHead } from './layout.js';

export interface FleetProps {
  /** The filter as typed, to refill the form and the page links. */
  query: { q?: string; label?: string; group?: string };
  result: FleetPage;
  tree: Array<{ namespace: string; count: number; roots: GroupNode[] }>;
  lastSeen: (hostname: string) => Date | undefined;
  stale: ReadonlySet<string>;
  /** Absent when the server has no Prometheus URL. */
  up?: UpStates;
  now: Date;
}

/** aami's own labels and the host name are in columns already. */
const SHOWN_ELSEWHERE = new Set(['hostname', 'aami_group', 'aami_namespace', 'aami_groups']);
const LABELS_PER_ROW = 6;

export function FleetView(props: FleetProps) {
  const { query, result, up } = props;
  return (
    <div class="columns">
      <aside>
        <h2>Groups</h2>
        <p>
          <a href="/console/fleet" class={query.group ? undefined : 'current'}>
            All targets
          </a>{' '}
          <span class="count">{result.total}</span>
        </p>
        {props.tree.map(({ namespace, count, roots }) => (
          <details open>
            <summary>
              {namespace} <span class="count">{count}</span>
            </summary>
            <GroupList nodes={roots} current={query.group} />
          </details>
        ))}
      </aside>
      <section>
        <h1>Fleet</h1>
        <form method="get" action="/console/fleet" class="filter">
          <input type="search" name="q" value={query.q ?? ''} placeholder="host name, address or label value" aria-label="text" />
          <input type="text" name="label" value={query.label ?? ''} placeholder="label=value" aria-label="label" />
          {query.group && <input type="hidden" name="group" value={query.group} />}
          <button type="submit">Filter</button>
        </form>
        <p class="summary">
          {result.matched === result.total ? `${result.total} targets` : `${result.matched} of ${result.total} targets match`}
          {query.group && (
            <>
              {' '}
              in group <strong>{query.group}</strong>
            </>
          )}
        </p>
        {up && 'error' in up && <ErrorBox message={up.error} />}
        <table class="targets">
          <TableHead columns={['Host', 'Address', 'Group', 'Labels', 'Last heartbeat', up && 'Prometheus']} />
          <tbody>
            {result.targets.map(({ target, labels }) => {
              const shown = Object.entries(labels).filter(([name]) => !SHOWN_ELSEWHERE.has(name));
              const seen = props.lastSeen(target.hostname);
              return (
                <tr data-host={target.hostname}>
                  <td>
                    <a href={`/console/targets/${encodeURIComponent(target.hostname)}`}>{target.hostname}</a>
                  </td>
                  <td>{target.ip_address}</td>
                  <td>{target.primary_group}</td>
                  <td class="labels">
                    {shown.slice(0, LABELS_PER_ROW).map(([name, value]) => (
                      <span class="label">
                        {name}={value}
                      </span>
                    ))}
                    {shown.length > LABELS_PER_ROW && <span class="muted">+{shown.length - LABELS_PER_ROW}</span>}
                  </td>
                  <td class="heartbeat">
                    <Ago at={seen} now={props.now} />
                    {props.stale.has(target.hostname) && <span class="badge bad">stale</span>}
                  </td>
                  {up && (
                    <td class="scrape">
                      <Scrape state={'byHost' in up ? up.byHost.get(target.hostname) : undefined} known={'byHost' in up} />
                    </td>
                  )}
                </tr>
              );
            })}
          </tbody>
        </table>
        {result.targets.length === 0 && <p class="muted">No target matches.</p>}
        <Pager base="/console/fleet" params={query} page={result.page} pages={result.pages} />
      </section>
    </div>
  );
}

function GroupList({ nodes, current }: { nodes: GroupNode[]; current?: string }) {
  if (!nodes.length) return null;
  return (
    <ul class="tree">
      {nodes.map((node) => (
        <li>
          <a href={`/console/fleet?group=${encodeURIComponent(node.group.id)}`} class={current === node.group.id ? 'current' : undefined} title={node.group.description ?? ''}>
            {node.group.name}
          </a>{' '}
          <span class="count">{node.count}</span>
          <GroupList nodes={node.children} current={current} />
        </li>
      ))}
    </ul>
  );
}

/** "up", "down (dcgm)", or "not scraped" when Prometheus has no series for the host. */
export function Scrape({ state, known }: { state?: ScrapeState; known: boolean }) {
  if (!known) return <span class="muted">unknown</span>;
  if (!state) return <span class="muted">not scraped</span>;
  if (!state.down.length) return <span class="badge good">up</span>;
  return <span class="badge bad">down ({state.down.join(', ')})</span>;
}
