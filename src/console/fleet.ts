import type { Catalog } from '../catalog/build.js';
import { targetLabels } from '../catalog/labels.js';
import type { Group, Target } from '../schema/index.js';
import { paged } from './paging.js';

/**
 * What the fleet page needs of a catalog, computed once per published snapshot (a snapshot
 * is immutable, so its catalog object is the cache key): targets in host-name order, their
 * effective labels, and how many targets each group and namespace holds. A request then
 * filters and renders one page, never the whole fleet.
 */
interface FleetIndex {
  hostnames: string[];
  labels: Map<string, Record<string, string>>;
  groupCounts: Map<string, number>;
  namespaceCounts: Map<string, number>;
}

const indexes = new WeakMap<Catalog, FleetIndex>();

function fleetIndex(catalog: Catalog): FleetIndex {
  let index = indexes.get(catalog);
  if (index) return index;
  const labels = new Map<string, Record<string, string>>();
  const groupCounts = new Map<string, number>();
  const namespaceCounts = new Map<string, number>();
  for (const target of catalog.targets.values()) {
    const effective = targetLabels(catalog, target);
    labels.set(target.hostname, effective);
    const namespaces = new Set<string>();
    for (const id of memberships(effective)) {
      groupCounts.set(id, (groupCounts.get(id) ?? 0) + 1);
      const namespace = catalog.groups.get(id)?.namespace;
      if (namespace) namespaces.add(namespace);
    }
    for (const namespace of namespaces) namespaceCounts.set(namespace, (namespaceCounts.get(namespace) ?? 0) + 1);
  }
  index = { hostnames: [...catalog.targets.keys()].sort(), labels, groupCounts, namespaceCounts };
  indexes.set(catalog, index);
  return index;
}

/** The groups a target is in, parents included: aami's own `aami_groups` label (",a,b,"). */
function memberships(labels: Record<string, string>): string[] {
  return (labels.aami_groups ?? '').split(',').filter(Boolean);
}

export interface FleetFilter {
  /** Matches the host name, the address or any label value, ignoring case. */
  text?: string;
  /** A label that must be set, to this value when one is given. */
  label?: { name: string; value?: string };
  /** Member of this group, directly or through a child group. */
  group?: string;
}

export interface FleetPage {
  targets: Array<{ target: Target; labels: Record<string, string> }>;
  /** Targets that match the filter (all pages). */
  matched: number;
  total: number;
  page: number;
  pages: number;
}

export function fleetPage(catalog: Catalog, filter: FleetFilter, page: number): FleetPage {
  const index = fleetIndex(catalog);
  const text = filter.text?.toLowerCase();
  const groupMark = filter.group && `,${filter.group},`;
  const matches = (hostname: string): boolean => {
    const labels = index.labels.get(hostname)!;
    if (groupMark && !labels.aami_groups?.includes(groupMark)) return false;
    if (filter.label) {
      const value = Object.hasOwn(labels, filter.label.name) ? labels[filter.label.name] : undefined;
      if (value === undefined || (filter.label.value !== undefined && value !== filter.label.value)) return false;
    }
    if (text) {
      const target = catalog.targets.get(hostname)!;
      if (!target.hostname.includes(text) && !target.ip_address.toLowerCase().includes(text) && !Object.values(labels).some((v) => v.toLowerCase().includes(text))) return false;
    }
    return true;
  };
  const filtered = groupMark || filter.label || text ? index.hostnames.filter(matches) : index.hostnames;
  const { items, ...position } = paged(filtered, page);
  return {
    targets: items.map((hostname) => ({ target: catalog.targets.get(hostname)!, labels: index.labels.get(hostname)! })),
    matched: filtered.length,
    total: index.hostnames.length,
    ...position,
  };
}

export interface GroupNode {
  group: Group;
  count: number;
  children: GroupNode[];
}

/** Groups as a tree per namespace, each with the number of targets in it or below it. */
export function groupTree(catalog: Catalog): Array<{ namespace: string; count: number; roots: GroupNode[] }> {
  const index = fleetIndex(catalog);
  const children = new Map<string | undefined, Group[]>();
  for (const group of catalog.groups.values()) {
    const parent = group.parent && catalog.groups.has(group.parent) ? group.parent : undefined;
    const siblings = children.get(parent);
    if (siblings) siblings.push(group);
    else children.set(parent, [group]);
  }
  const node = (group: Group): GroupNode => ({
    group,
    count: index.groupCounts.get(group.id) ?? 0,
    children: (children.get(group.id) ?? []).sort(byId).map(node),
  });
  const roots = (children.get(undefined) ?? []).sort(byId);
  const namespaces = [...new Set(roots.map((g) => g.namespace))].sort();
  return namespaces.map((namespace) => ({
    namespace,
    count: index.namespaceCounts.get(namespace) ?? 0,
    roots: roots.filter((g) => g.namespace === namespace).map(node),
  }));
}

const byId = (a: Group, b: Group) => (a.id < b.id ? -1 : 1);
