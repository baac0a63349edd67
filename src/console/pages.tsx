import { Hono } from 'hono';
import { z } from 'zod';
import { parseValue } from '../api/body.js';
import type { AppDeps } from '../api/deps.js';
import { effectiveChecks } from '../catalog/checks.js';
import { targetHistoryPathspec } from '../catalog/parse.js';
import { AamiError } from '../errors.js';
import { countedStaleTargets, countsSilentNodes } from '../inventory/nodes.js';
import { requireTarget } from '../inventory/targets.js';
import { slug } from '../schema/index.js';
import { targetView } from '../inventory/views.js';
import { fleetPage, groupTree, type FleetFilter } from './fleet.js';
import type { ConsoleEnv } from './guard.js';
import { paged, pageNumber } from './paging.js';
import type { PrometheusUp } from './prometheus.js';
import type { Render } from './render.js';
import { FleetView } from './views/fleet.js';
import { ProblemsView } from './views/problems.js';
import { TargetView } from './views/target.js';

const blankIsAbsent = <T extends z.ZodType>(schema: T) => z.preprocess((v) => (typeof v === 'string' && v.trim() === '' ? undefined : v), schema);

const fleetQuery = z.object({
  q: blankIsAbsent(z.string().trim().max(200, 'must be at most 200 characters').optional()),
  label: blankIsAbsent(
    z
      .string()
      .trim()
      .max(1200)
      .regex(/^[a-zA-Z_][a-zA-Z0-9_]*(=[\s\S]*)?$/, 'must be a label name, or name=value')
      .optional(),
  ),
  group: blankIsAbsent(slug.optional()),
  page: pageNumber,
});

/** Fleet, one target, problems: read-only pages for every role. */
export function readPages(deps: AppDeps, render: Render, prometheus: PrometheusUp | undefined) {
  const app = new Hono<ConsoleEnv>();
  const lastSeen = (hostname: string) => deps.heartbeats.lastSeen(hostname);
  // None on a follower of a primary: it does not count them (countsSilentNodes).
  const stale = () => countedStaleTargets(deps);

  app.get('/fleet', async (c) => {
    const query = parseValue(fleetQuery, c.req.query(), 'the filter');
    const filter: FleetFilter = { text: query.q, group: query.group };
    if (query.label) {
      const eq = query.label.indexOf('=');
      filter.label = eq < 0 ? { name: query.label } : { name: query.label.slice(0, eq), value: query.label.slice(eq + 1) };
    }
    const catalog = deps.catalog();
    const props = {
      query: { q: query.q, label: query.label, group: query.group },
      result: fleetPage(catalog, filter, query.page),
      tree: groupTree(catalog),
      lastSeen,
      stale: new Set(stale() ?? []),
      up: await prometheus?.states(),
      now: deps.clock(),
    };
    return render(c, { title: 'Fleet', section: 'fleet' }, <FleetView {...props} />);
  });

  app.get('/targets/:id', async (c) => {
    const catalog = deps.catalog();
    const target = requireTarget(catalog, c.req.param('id'));
    const seen = lastSeen(target.hostname);
    const props = {
      target: targetView(catalog, target, seen),
      checks: effectiveChecks(catalog, target),
      // Many history reads at once (each a git log), or a git that failed or hung: the page still shows, without its history.
      history: await deps.history([targetHistoryPathspec(target.hostname)]).catch((error: unknown) => {
        if (!(error instanceof AamiError && error.code === 'rate_limited')) deps.logger.warn('reading a target\'s history failed', { hostname: target.hostname, error: error instanceof Error ? error.message : String(error) });
        return null;
      }),
      stale: countsSilentNodes(deps) && seen !== undefined && deps.clock().getTime() - seen.getTime() > deps.staleAfterMs,
      up: await prometheus?.states(),
      now: deps.clock(),
      viewer: c.get('signedIn').viewer,
    };
    return render(c, { title: target.hostname, section: 'fleet' }, <TargetView {...props} />);
  });

  app.get('/problems', (c) => {
    const { page } = parseValue(z.object({ page: pageNumber }), c.req.query(), 'the query');
    const snapshot = deps.live.snapshot();
    const problems = paged(snapshot.problems, page);
    const staleHosts = stale();
    const { status } = deps.sd;
    const props = {
      problems: problems.items,
      problemCount: snapshot.problems.length,
      fileCount: snapshot.problemsByFile.size,
      page: problems.page,
      pages: problems.pages,
      head: snapshot.head,
      repo: deps.repo(),
      remote: deps.remote?.status ?? null,
      compiler: { lastSuccessAt: status.lastSuccessAt, lastError: status.lastError },
      writerFailure: deps.writer.lastFailure,
      stale: staleHosts?.slice(0, 100) ?? [],
      staleCount: staleHosts?.length ?? null,
      staleAfterSeconds: deps.staleAfterMs / 1000,
      lastSeen,
      now: deps.clock(),
    };
    return render(c, { title: 'Problems', section: 'problems' }, <ProblemsView {...props} />);
  });

  return app;
}
