import type { Catalog } from '../catalog/build.js';
import { groupPath } from '../catalog/parse.js';
import { AamiError } from '../errors.js';
import type { Writer } from '../writer/writer.js';
import { slug, type Group, type GroupCreate, type GroupPatch } from '../schema/index.js';
import { commitMeta, type Actor } from './actor.js';
import { groupView } from './views.js';
import { renderYaml } from './yaml-file.js';

export function listGroups(catalog: Catalog, filter: { namespace?: string } = {}) {
  return [...catalog.groups.values()]
    .filter((g) => !filter.namespace || g.namespace === filter.namespace)
    .sort((a, b) => (a.id < b.id ? -1 : 1))
    .map(groupView);
}

export function getGroup(catalog: Catalog, id: string) {
  return groupView(requireGroup(catalog, id, 'not_found'));
}

export function requireGroup(catalog: Catalog, id: string, code: 'not_found' | 'group_not_found' = 'group_not_found'): Group {
  const group = catalog.groups.get(id);
  if (!group) throw new AamiError(code, `group "${id}" does not exist`, { group_id: id });
  return group;
}

/** "ML Training" → "ml-training": an id people can type in a pull request. */
export function idFromName(name: string): string {
  const id = name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 63).replace(/-+$/, '');
  if (!slug.safeParse(id).success) {
    throw new AamiError('validation_failed', 'cannot make an id from this name: give an "id"', [{ field: 'id', message: 'is required for this name' }]);
  }
  return id;
}

function groupFileData(group: Group) {
  return {
    id: group.id,
    name: group.name,
    namespace: group.namespace,
    parent: group.parent ?? undefined,
    description: group.description || undefined,
    labels: Object.keys(group.labels).length ? group.labels : undefined,
  };
}

function checkParent(catalog: Catalog, group: Group): void {
  if (!group.parent) return;
  const parent = requireGroup(catalog, group.parent);
  if (parent.namespace !== group.namespace) {
    throw new AamiError('validation_failed', `parent group "${parent.id}" is in namespace "${parent.namespace}"`, [
      { field: 'parent_id', message: `must be a group of namespace "${group.namespace}"` },
    ]);
  }
  for (let id: string | undefined = group.parent; id; id = catalog.groups.get(id)?.parent ?? undefined) {
    if (id === group.id) throw new AamiError('validation_failed', 'a group cannot be its own ancestor', [{ field: 'parent_id', message: 'would form a cycle' }]);
  }
}

export async function createGroup(writer: Writer, actor: Actor, input: GroupCreate) {
  const id = input.id ?? idFromName(input.name);
  return writer.update(commitMeta(actor, `Create group ${id}`), ({ catalog }) => {
    if (catalog.groups.has(id)) throw new AamiError('conflict', `group "${id}" already exists`, { group_id: id });
    const group: Group = {
      id,
      name: input.name,
      namespace: input.namespace,
      parent: input.parent_id ?? undefined,
      description: input.description,
      labels: input.labels ?? {},
    };
    checkParent(catalog, group);
    return { changes: [{ path: groupPath(id), content: renderYaml(groupFileData(group)) }], result: { group: groupView(group) } };
  });
}

/** PUT replaces every field (omitted optional ones are cleared); PATCH changes the fields given. */
export function updateGroup(writer: Writer, actor: Actor, id: string, input: GroupPatch, mode: 'replace' | 'patch') {
  return writer.update(commitMeta(actor, `Update group ${id}`), ({ catalog }, state) => {
    const current = requireGroup(catalog, id, 'not_found');
    const has = (key: keyof GroupPatch) => mode === 'replace' || key in input;
    const group: Group = {
      id,
      name: input.name ?? current.name,
      namespace: input.namespace ?? current.namespace,
      parent: has('parent_id') ? (input.parent_id ?? undefined) : current.parent,
      description: has('description') ? input.description : current.description,
      labels: has('labels') ? (input.labels ?? {}) : current.labels,
    };
    checkParent(catalog, group);
    if (group.namespace !== current.namespace) {
      const child = [...catalog.groups.values()].find((g) => g.parent === id);
      if (child) throw new AamiError('group_in_use', `group "${child.id}" is a child of "${id}" and stays in namespace "${current.namespace}"`, { children: [child.id] });
    }
    const path = groupPath(id);
    return { changes: [{ path, content: renderYaml(groupFileData(group), state.text(path)) }], result: { group: groupView(group) } };
  });
}

/** What still refers to a group: it cannot be deleted while anything does. */
export function groupHolders(catalog: Catalog, id: string) {
  const targets = [...catalog.targets.values()].filter((t) => t.primary_group === id || t.groups.includes(id)).map((t) => t.hostname);
  const children = [...catalog.groups.values()].filter((g) => g.parent === id).map((g) => g.id);
  const tokens = [...catalog.tokens.values()].filter((t) => t.default_group === id).map((t) => t.id);
  return { targets, children, tokens };
}

export function deleteGroup(writer: Writer, actor: Actor, id: string) {
  return writer.update(commitMeta(actor, `Delete group ${id}`), ({ catalog }) => {
    requireGroup(catalog, id, 'not_found');
    const holders = groupHolders(catalog, id);
    const held = Object.entries(holders).filter(([, ids]) => ids.length);
    if (held.length) {
      const what = held.map(([kind, ids]) => `${ids.length} ${kind} (${ids.slice(0, 5).join(', ')}${ids.length > 5 ? ', …' : ''})`).join(', ');
      throw new AamiError('group_in_use', `group "${id}" is still used by ${what}`, holders);
    }
    return { changes: [{ path: groupPath(id), content: null }], result: { deleted: id } };
  });
}
