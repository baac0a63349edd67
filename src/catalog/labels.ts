import type { Group, Target } from '../schema/index.js';
import type { Catalog } from './build.js';

/** The group and its ancestors, nearest first. The catalog guarantees the chain resolves. */
export function groupChain(groups: ReadonlyMap<string, Group>, id: string): Group[] {
  const chain: Group[] = [];
  for (let group = groups.get(id); group; group = group.parent ? groups.get(group.parent) : undefined) chain.push(group);
  return chain;
}

/** Where an effective label comes from: `group:<id>`, `node`, `token:<id>`, `admin` or `aami`. */
export type LabelSource = string;

/**
 * A target's label maps in precedence order, lowest first: its further groups (the first
 * listed wins among them), its primary group's chain (the nearest group wins), the node's
 * own labels (GPU facts, bootstrap --label), the enrolling token's labels (the node cannot
 * override them), the admin's labels (API or the file: they win over everything). The one
 * place the precedence is written down; Prometheus labels and the view's sources both fold it.
 */
function* layers(catalog: Catalog, target: Target): Generator<[LabelSource, Readonly<Record<string, string>>]> {
  for (const id of [...target.groups].reverse().concat(target.primary_group)) {
    for (const group of groupChain(catalog.groups, id).reverse()) yield [`group:${group.id}`, group.labels];
  }
  yield ['node', target.node_labels];
  yield [target.registered_by_token ? `token:${target.registered_by_token}` : 'token', target.token_labels];
  yield ['admin', target.labels];
}

/** The labels aami sets itself, last: they say where the target belongs. */
function systemLabels(catalog: Catalog, target: Target): Record<string, string> {
  const memberOf = new Set<string>();
  for (const id of [target.primary_group, ...target.groups]) for (const group of groupChain(catalog.groups, id)) memberOf.add(group.id);
  return {
    hostname: target.hostname,
    aami_group: target.primary_group,
    aami_namespace: catalog.groups.get(target.primary_group)?.namespace ?? '',
    // Leading and trailing commas let a relabel rule or a query match one group: aami_groups=~".*,gpu,.*"
    aami_groups: `,${[...memberOf].sort().join(',')},`,
  };
}

/** A target's labels as Prometheus will see them (exporter fields add the __ ones). */
export function targetLabels(catalog: Catalog, target: Target): Record<string, string> {
  const merged: Record<string, string> = {};
  for (const [, labels] of layers(catalog, target)) Object.assign(merged, labels);
  return Object.assign(merged, systemLabels(catalog, target));
}

/** For each effective label, where its value comes from (the target view shows it). */
export function labelSources(catalog: Catalog, target: Target): Record<string, LabelSource> {
  const sources: Record<string, LabelSource> = {};
  for (const [source, labels] of layers(catalog, target)) for (const name of Object.keys(labels)) sources[name] = source;
  for (const name of Object.keys(systemLabels(catalog, target))) sources[name] = 'aami';
  return sources;
}
