import { describe, expect, it } from 'vitest';
import { CatalogState } from '../src/catalog/state.js';
import { formatProblem } from '../src/catalog/problem.js';

const group = (id: string, namespace = 'logical', parent?: string) =>
  `id: ${id}\nname: ${id}\nnamespace: ${namespace}\n${parent ? `parent: ${parent}\n` : ''}`;
const target = (host: string, ip: string, primary = 'ml', extra = '') => `hostname: ${host}\nip_address: ${ip}\nprimary_group: ${primary}\n${extra}`;

function stateOf(files: Record<string, string>): CatalogState {
  const state = new CatalogState();
  for (const [path, text] of Object.entries(files)) state.set(path, text);
  return state;
}
const problems = (state: CatalogState) => state.snapshot().problems.map(formatProblem);

describe('catalog references', () => {
  it('resolves groups, targets and tokens that refer to each other', () => {
    const state = stateOf({
      'groups/ml.yaml': group('ml'),
      'groups/prod.yaml': group('prod', 'environment'),
      'groups/prod-critical.yaml': group('prod-critical', 'environment', 'prod'),
      'targets/ml/a.yaml': target('a', '10.0.0.1', 'ml', 'groups: [prod-critical]\n'),
    });
    expect(problems(state)).toEqual([]);
    expect([...state.snapshot().catalog.targets.keys()]).toEqual(['a']);
  });

  it('rejects a target whose groups do not exist, naming the field', () => {
    const state = stateOf({
      'groups/ml.yaml': group('ml'),
      'targets/ghost/a.yaml': target('a', '10.0.0.1', 'ghost'),
      'targets/ml/b.yaml': target('b', '10.0.0.2', 'ml', 'groups: [nope, ml]\n'),
    });
    expect(problems(state)).toEqual([
      'targets/ghost/a.yaml: primary_group: group "ghost" does not exist',
      'targets/ml/b.yaml: groups[0]: group "nope" does not exist',
      'targets/ml/b.yaml: groups[1]: group "ml" is listed twice',
    ]);
    expect(state.snapshot().catalog.targets.size).toBe(0);
  });

  it('rejects a missing parent, a cycle, and a parent in another namespace', () => {
    const state = stateOf({
      'groups/orphan.yaml': group('orphan', 'logical', 'nowhere'),
      'groups/a.yaml': group('a', 'logical', 'b'),
      'groups/b.yaml': group('b', 'logical', 'a'),
      'groups/env.yaml': group('env', 'environment'),
      'groups/mixed.yaml': group('mixed', 'logical', 'env'),
      'groups/child-of-orphan.yaml': group('child-of-orphan', 'logical', 'orphan'),
    });
    expect(problems(state)).toEqual([
      'groups/a.yaml: parent: parent group "b" is invalid',
      'groups/b.yaml: parent: groups form a cycle: a → b → a',
      'groups/child-of-orphan.yaml: parent: parent group "orphan" is invalid',
      'groups/mixed.yaml: parent: group "env" is in namespace "environment", not "logical"',
      'groups/orphan.yaml: parent: group "nowhere" does not exist',
    ]);
    expect([...state.snapshot().catalog.groups.keys()]).toEqual(['env']);
  });

  it('rejects the second target on an address a job already scrapes, and a hostname registered twice', () => {
    const state = stateOf({
      'groups/ml.yaml': group('ml'),
      'groups/db.yaml': group('db'),
      'targets/ml/a.yaml': target('a', '10.0.0.1'),
      'targets/ml/b.yaml': target('b', '10.0.0.1'),
      'targets/ml/c.yaml': target('c', '10.0.0.1', 'ml', 'exporters: [{type: node_exporter, port: 9101}]\n'),
      'targets/db/x.yaml': target('x', '10.0.0.9', 'db'),
      'targets/ml/x.yaml': target('x', '10.0.0.8'),
    });
    expect(problems(state)).toEqual([
      'targets/ml/b.yaml: exporters[0].port: address 10.0.0.1:9100 of job "node" is already used by targets/ml/a.yaml',
      'targets/ml/x.yaml: hostname: "x" is already registered by targets/db/x.yaml',
    ]);
  });

  it('checks exporter types against aami.yaml and token groups against the groups', () => {
    const state = stateOf({
      'aami.yaml': 'exporters:\n  node_exporter: {job: node, port: 9100}\n',
      'groups/ml.yaml': group('ml'),
      'targets/ml/a.yaml': target('a', '10.0.0.1', 'ml', 'exporters: [{type: dcgm_exporter}]\n'),
      'tokens/t1.yaml': `id: t1\nname: t\nsecret_hash: sha256:${'c'.repeat(64)}\ndefault_group: gone\nmax_uses: 1\nexpires_at: 2030-01-01T00:00:00Z\n`,
    });
    expect(problems(state)).toEqual([
      'targets/ml/a.yaml: exporters[0].type: unknown exporter type "dcgm_exporter" (aami.yaml defines node_exporter)',
      'tokens/t1.yaml: default_group: group "gone" does not exist',
    ]);
  });

  it('refuses two exporter types feeding the same job', () => {
    const state = stateOf({ 'aami.yaml': 'exporters:\n  a: {job: node, port: 1}\n  b: {job: node, port: 2}\n' });
    expect(problems(state)).toEqual(['aami.yaml: exporters.b.job: job "node" is already used by exporter type "a"']);
  });
});

describe('keep last good', () => {
  const base = { 'groups/ml.yaml': group('ml'), 'targets/ml/a.yaml': target('a', '10.0.0.1') };

  it('keeps the last good version of a file that stops parsing, and reports it', () => {
    const state = stateOf(base);
    expect(state.snapshot().catalog.targets.get('a')?.ip_address).toBe('10.0.0.1');
    state.set('targets/ml/a.yaml', 'hostname: a\nip_address: [oops\n');
    expect(state.snapshot().catalog.targets.get('a')?.ip_address).toBe('10.0.0.1');
    expect(problems(state)[0]).toMatch(/^targets\/ml\/a.yaml: not valid YAML/);
  });

  it('keeps the last good version when an edit breaks a reference', () => {
    const state = stateOf(base);
    state.snapshot();
    state.set('targets/ml/a.yaml', target('a', '10.0.0.2', 'ml', 'groups: [typo]\n'));
    expect(state.snapshot().catalog.targets.get('a')?.ip_address).toBe('10.0.0.1');
    expect(problems(state)).toEqual(['targets/ml/a.yaml: groups[0]: group "typo" does not exist']);
    state.set('targets/ml/a.yaml', target('a', '10.0.0.2'));
    expect(state.snapshot().catalog.targets.get('a')?.ip_address).toBe('10.0.0.2');
    expect(problems(state)).toEqual([]);
  });

  it('leaves out a file that was never good', () => {
    const state = stateOf({ ...base, 'targets/ml/b.yaml': 'hostname: b\n' });
    expect([...state.snapshot().catalog.targets.keys()]).toEqual(['a']);
    expect(problems(state)).toEqual(['targets/ml/b.yaml: ip_address: is required', 'targets/ml/b.yaml: primary_group: is required']);
  });

  it('drops a deleted file at once: deleting is not breaking', () => {
    const state = stateOf(base);
    state.snapshot();
    expect(state.set('targets/ml/a.yaml', null)).toBe(true);
    expect(state.snapshot().catalog.targets.size).toBe(0);
    expect(state.set('targets/ml/a.yaml', null)).toBe(false);
  });

  it('reports an unchanged text as no change', () => {
    const state = stateOf(base);
    expect(state.set('groups/ml.yaml', group('ml'))).toBe(false);
  });
});
