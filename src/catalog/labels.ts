import type { Group, Target } from '../schema/index.js';
import type { Catalog } from './build.js';

/** The group and its ancestors, nearest first. The catalog guarantees the chain resolves. */
export function groupChain(groups: Map<string, Group>, id: string): Group[] {
  const chain: Group[] = [];
  for (let group = groups.get(id); group; group = group.parent ? groups.get(group.parent) : undefined) chain.push(group);
  return chain;
}

/**
 * A target's labels as Prometheus will see them. Lowest precedence first: further groups
 * (the first listed wins among them), then the primary group's chain (nearest group wins),
 * then the target's own labels, then the labels aami sets to say where the target belongs.
 */
export function targetLabels(catalog: Catalog, target: Target): Record<string, string> {
  const merged: Record<string, string> = {};
  const memberOf = new Set<string>();
  for (const id of [...target.groups].reverse().concat(target.primary_group)) {
    const chain = groupChain(catalog.groups, id);
    for (const group of chain.reverse()) {
      Object.assign(merged, group.labels);
      memberOf.add(group.id);
    }
  }
  Object.assign(merged, target.labels);
  merged.hostname = target.hostname;
  merged.aami_group = target.primary_group;
  merged.aami_namespace = catalog.groups.get(target.primary_group)?.namespace ?? '';
  // Leading and trailing commas let a relabel rule or a query match one group: aami_groups=~".*,gpu,.*"
  merged.aami_groups = `,${[...memberOf].sort().join(',')},`;
  return merged;
}
