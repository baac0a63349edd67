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
function* layers(catalog: Pick<Catalog, 'groups'>, target: Target): Generator<[LabelSource, Readonly<Record<string, string>>]> {
  for (const id of [...target.groups].reverse().concat(target.primary_group)) {
    for (const group of groupChain(catalog.groups, id).reverse()) yield [`group:${group.id}`, group.labels];
  }
  yield ['node', target.node_labels];
  yield [target.registered_by_token ? `token:${target.registered_by_token}` : 'token', target.token_labels];
  yield ['admin', target.labels];
}

/** The labels aami sets itself, last: they say where the target belongs. */
function systemLabels(catalog: Pick<Catalog, 'groups'>, target: Target): Record<string, string> {
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

/**
 * Labels shared by every target of the same groups: the group layers and aami's own group
 * labels. A compile of 100k targets in 1,000 groups works them out 1,000 times, not 100k.
 */
export class GroupLabels {
  private readonly cache = new Map<string, SharedLabels>();
  /** The same by the target's list of groups itself, when it is a parse's (shared, frozen): no key to make (~2 µs a target). */
  private readonly byList = new WeakMap<readonly string[], Map<string, SharedLabels>>();

  /** The catalog's groups, all these labels come from: the same while they are (a reader may keep this for as long). */
  readonly groups: ReadonlyMap<string, Group>;

  constructor(catalog: Pick<Catalog, 'groups'>) {
    this.groups = catalog.groups;
  }

  of(target: Target): SharedLabels {
    const list = Object.isFrozen(target.groups) ? target.groups : undefined;
    let byPrimary = list && this.byList.get(list);
    const known = byPrimary?.get(target.primary_group);
    if (known) return known;
    const key = target.groups.length ? `${target.primary_group}|${target.groups.join(',')}` : target.primary_group;
    let found = this.cache.get(key);
    if (!found) {
      const groups: Record<string, string> = {};
      for (const [source, labels] of layers(this, target)) if (source.startsWith('group:')) Object.assign(groups, labels);
      const { hostname: _, ...system } = systemLabels(this, target);
      found = { groups, system };
      this.cache.set(key, found);
    }
    if (list) {
      if (!byPrimary) this.byList.set(list, (byPrimary = new Map()));
      byPrimary.set(target.primary_group, found);
    }
    return found;
  }

  /** The target's groups with their parents (primary first): one array for every target of the same groups. */
  chain(target: Target): Group[] {
    const found = this.of(target);
    return (found.chain ??= [target.primary_group, ...target.groups].flatMap((id) => groupChain(this.groups, id)));
  }
}

interface SharedLabels {
  groups: Record<string, string>;
  system: Record<string, string>;
  chain?: Group[];
}

/** A target's labels as Prometheus will see them (exporter fields add the __ ones). */
export function targetLabels(catalog: Catalog, target: Target, shared = new GroupLabels(catalog)): Record<string, string> {
  return Object.fromEntries(mergedLabels(target, shared));
}

/** Orders [name, value] pairs by name, as the SD files list labels. */
export const byName = ([a]: [string, string], [b]: [string, string]) => (a < b ? -1 : a > b ? 1 : 0);

/** The same labels sorted by name. */
export function sortedLabels(target: Target, shared: GroupLabels): Array<[string, string]> {
  return [...mergedLabels(target, shared)].sort(byName);
}

/**
 * The same precedence as layers(): groups, node, token, admin; then aami's own. Merged in a
 * Map: spreading the six objects into one costs ~5x as much, and a compile of 100k targets
 * does it for each.
 */
function mergedLabels(target: Target, shared: GroupLabels): Map<string, string> {
  const merged = new Map<string, string>();
  for (const source of labelMaps(target, shared)) for (const name of Object.keys(source)) merged.set(name, source[name]!);
  return merged;
}

/** The maps merged, lowest precedence first: the groups', the node's, the token's, the admin's, then the host name and aami's own. */
function labelMaps(target: Target, shared: GroupLabels): Array<Readonly<Record<string, string>>> {
  const { groups, system } = shared.of(target);
  return [groups, target.node_labels, target.token_labels, target.labels, { hostname: target.hostname }, system];
}

/** One effective label's value, looked up from the top without merging them all (a label selector asks for one or two of each target's). */
export function targetLabel(target: Target, name: string, shared: GroupLabels): string | undefined {
  const maps = labelMaps(target, shared);
  for (let i = maps.length - 1; i >= 0; i--) if (Object.hasOwn(maps[i]!, name)) return maps[i]![name];
  return undefined;
}

/** For each effective label, where its value comes from (the target view shows it). */
export function labelSources(catalog: Catalog, target: Target): Record<string, LabelSource> {
  const sources: Record<string, LabelSource> = {};
  for (const [source, labels] of layers(catalog, target)) for (const name of Object.keys(labels)) sources[name] = source;
  for (const name of Object.keys(systemLabels(catalog, target))) sources[name] = 'aami';
  return sources;
}
