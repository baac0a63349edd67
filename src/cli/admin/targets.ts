import { UsageError } from '../command.js';
import { segment } from './api.js';
import { labelChanges, labelSet, required, wholeNumber } from './args.js';
import { cell, fields, printable, row, rows, type Row } from './output.js';
import { action, HELP_ONLY, listing, onOne, resource } from './resource.js';

const PATH = '/api/v1/targets';

const exporters = (t: Row) => rows(t.exporters).map((e) => `${e.type}:${e.port ?? '-'}${e.enabled === false ? '(off)' : ''}`);

const details = (json: unknown) => {
  const target = row(json);
  return fields({ ...target, exporter_list: exporters(target) }, [
    ['Hostname', 'hostname'],
    ['IP address', 'ip_address'],
    ['Group', 'primary_group_id'],
    ['Other groups', 'group_ids'],
    ['Exporters', 'exporter_list'],
    ['Registered by token', 'registered_by_token'],
    ['Registered at', 'registered_at'],
    ['Last seen', 'last_seen'],
    ['Labels', 'labels'],
    ['Effective labels', 'effective_labels'],
  ]);
};

/** --exporter TYPE[:PORT]; without a port the server uses the type's default from aami.yaml. */
function exporter(value: string) {
  const match = /^([^:]+)(?::(.*))?$/.exec(value);
  if (!match) throw new UsageError(`--exporter "${value}" is not TYPE or TYPE:PORT`);
  const [, type, port] = match;
  return { type, enabled: true, ...(port === undefined ? {} : { port: wholeNumber(port, '--exporter port') }) };
}

export const targets = resource({
  name: 'targets',
  summary: 'scrape targets (one per host): create, list, show, label, delete',
  about: 'Scrape targets: one per host, its id is the host name. Nodes usually register themselves\nwith a bootstrap token; these commands are for the rest and for fixing things.',
  actions: [
    action({
      name: 'create',
      summary: 'register a host by hand',
      params: ['HOSTNAME'],
      synopsis: '--ip ADDRESS --group ID [options]',
      help: `Registers a host as a scrape target.

Options:
      --ip ADDRESS            the address Prometheus scrapes (IPv4 or IPv6)
      --group ID              its primary group (where its file lives)
      --also-group ID         a further group (repeatable)
      --exporter TYPE[:PORT]  node_exporter, dcgm_exporter, ... (repeatable; default
                              node_exporter on its usual port)
      --label KEY=VALUE       a label of its own (repeatable)
  -h, --help                  show this help`,
      options: {
        ip: { type: 'string' },
        group: { type: 'string' },
        'also-group': { type: 'string', multiple: true },
        exporter: { type: 'string', multiple: true },
        label: { type: 'string', multiple: true },
      },
      async run({ values, args: [hostname], api }) {
        const answer = await api.post(PATH, {
          hostname,
          ip_address: required(values.ip, '--ip'),
          primary_group_id: required(values.group, '--group'),
          ...(values['also-group'] ? { group_ids: values['also-group'] } : {}),
          ...(values.exporter ? { exporters: values.exporter.map(exporter) } : {}),
          ...labelSet(values.label),
        });
        return { answer, lines: details };
      },
    }),
    listing({
      summary: 'list targets, all or by host name, group or label',
      synopsis: '[--hostname NAME] [--group ID] [--label SELECTOR]... [--limit N]',
      help: `Lists targets, sorted by host name.

Options:
      --hostname NAME      only this host
      --group ID           only members of this group or a group below it
      --label SELECTOR     by effective label (repeatable, all must match): rack=r1,
                           rack!=r1, gpu_model (has it) or !gpu_model (lacks it)
      --limit N            at most N targets (the first N by host name); says so on
                           standard error when more match
  -h, --help               show this help`,
      options: { hostname: { type: 'string' }, group: { type: 'string' }, label: { type: 'string', multiple: true }, limit: { type: 'string' } },
      path: PATH,
      query: (values) => ({ hostname: values.hostname, group: values.group, label: values.label, limit: values.limit === undefined ? undefined : String(wholeNumber(values.limit, '--limit')) }),
      more: 'raise --limit, or narrow with --label, --group or --hostname',
      columns: [
        ['HOSTNAME', (t) => t.hostname],
        ['IP', (t) => t.ip_address],
        ['GROUP', (t) => t.primary_group_id],
        ['EXPORTERS', exporters],
        ['LAST SEEN', (t) => t.last_seen],
      ],
    }),
    onOne({ name: 'show', summary: 'one target with its effective labels and last heartbeat', help: 'Shows one target: its own labels and the labels Prometheus sees.', param: 'HOSTNAME', path: PATH, lines: details }),
    action({
      name: 'label',
      summary: 'set or remove labels: rack=r2 old-',
      params: ['HOSTNAME', 'KEY=VALUE|KEY-'],
      repeat: true,
      synopsis: '',
      help: `Sets labels (KEY=VALUE) and removes them (KEY-) in one change, leaving the target's other
labels as they are (a JSON merge patch of its labels). Example:
  aami targets label gpu-node-01 rack=r2 old-${HELP_ONLY}`,
      options: {},
      async run({ args: [id, ...changes], api }) {
        const answer = await api.patch(`${PATH}/${segment(id!, 'hostname')}`, { labels: labelChanges(changes, true) }, 'application/merge-patch+json');
        return { answer, lines: details };
      },
    }),
    onOne({
      name: 'delete',
      summary: 'remove a target (Prometheus stops scraping it)',
      help: 'Removes a target. A node that runs bootstrap.sh again registers itself again.',
      param: 'HOSTNAME',
      path: PATH,
      lines: (json) => [`deleted target ${printable(cell(row(json).deleted))}`],
    }),
  ],
});
