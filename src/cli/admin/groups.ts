import { labelSet, required } from './args.js';
import { cell, fields, printable, row } from './output.js';
import { action, listing, onOne, resource } from './resource.js';

const PATH = '/api/v1/groups';

const details = (json: unknown) =>
  fields(row(json), [
    ['ID', 'id'],
    ['Name', 'name'],
    ['Namespace', 'namespace'],
    ['Parent', 'parent_id'],
    ['Description', 'description'],
    ['Labels', 'labels'],
  ]);

export const groups = resource({
  name: 'groups',
  summary: 'groups of targets and their labels: create, list, show, delete',
  about: "Groups: targets inherit their labels (the nearest group wins). Three namespaces:\nenvironment, infrastructure, logical; a child stays in its parent's namespace.",
  actions: [
    action({
      name: 'create',
      summary: 'create a group',
      params: ['NAME'],
      synopsis: '--namespace NS [options]',
      help: `Creates a group. Its id is the name made into a slug unless --id gives one.

Options:
      --namespace NS        environment, infrastructure or logical
      --id ID               the id (default: from the name, "ML Training" → ml-training)
      --parent ID           the parent group
      --description TEXT    what it is for
      --label KEY=VALUE     a label its targets inherit (repeatable)
  -h, --help                show this help`,
      options: {
        namespace: { type: 'string' },
        id: { type: 'string' },
        parent: { type: 'string' },
        description: { type: 'string' },
        label: { type: 'string', multiple: true },
      },
      async run({ values, args: [name], api }) {
        const answer = await api.post(PATH, {
          name,
          namespace: required(values.namespace, '--namespace'),
          ...(values.id ? { id: values.id } : {}),
          ...(values.parent ? { parent_id: values.parent } : {}),
          ...(values.description !== undefined ? { description: values.description } : {}),
          ...labelSet(values.label),
        });
        return { answer, lines: details };
      },
    }),
    listing({
      summary: 'list groups, all or of one namespace',
      synopsis: '[--namespace NS]',
      help: 'Lists groups.\n\nOptions:\n      --namespace NS   only this namespace\n  -h, --help           show this help',
      options: { namespace: { type: 'string' } },
      path: PATH,
      query: (values) => ({ namespace: values.namespace }),
      columns: [
        ['ID', (g) => g.id],
        ['NAMESPACE', (g) => g.namespace],
        ['PARENT', (g) => g.parent_id],
        ['LABELS', (g) => g.labels],
        ['NAME', (g) => g.name],
      ],
    }),
    onOne({ name: 'show', summary: 'one group', help: 'Shows one group.', param: 'ID', path: PATH, lines: details }),
    onOne({
      name: 'delete',
      summary: 'delete a group nothing uses any more',
      help: 'Deletes a group. Refused (group_in_use) while targets, child groups or tokens hold it;\nthe error lists them.',
      param: 'ID',
      path: PATH,
      lines: (json) => [`deleted group ${printable(cell(row(json).deleted))}`],
    }),
  ],
});
