import jsYaml from 'js-yaml';
import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it, vi } from 'vitest';
import { dumpYaml, parseFile } from '../src/catalog/parse.js';
import { describeZodError, targetFile, type Target } from '../src/schema/index.js';
import { onCleanup, random } from './helpers.js';

const problemsOf = (path: string, text: string) => parseFile(path, text).problems.map((p) => `${p.field}: ${p.message}`);

describe('parseFile', () => {
  it('accepts a complete target and fills in defaults', () => {
    const result = parseFile(
      'targets/ml-training/gpu-01.yaml',
      'hostname: gpu-01\nip_address: 10.0.0.1\nprimary_group: ml-training\nlabels: {gpu_count: 8, spot: true}\n',
    );
    expect(result.problems).toEqual([]);
    expect(result.entity).toMatchObject({
      kind: 'target',
      id: 'gpu-01',
      value: { groups: [], exporters: [{ type: 'node_exporter', enabled: true }], labels: { gpu_count: '8', spot: 'true' } },
    });
  });

  it('shares what targets repeat, frozen, and parses each as it would alone', () => {
    const yaml = (host: string, rack: string) => `hostname: ${host}\nip_address: 10.0.0.1\nprimary_group: gpu\ngroups: [prod]\nexporters: [{type: node_exporter}, {type: dcgm_exporter, port: 9401}]\nlabels: {rack: ${rack}}\nfacts: {gpu_model: H100, interfaces: [eth0]}\n`;
    const a = parseFile('targets/gpu/a.yaml', yaml('a', 'r1')).entity!.value as Target;
    const b = parseFile('targets/gpu/b.yaml', yaml('b', 'r1')).entity!.value as Target;
    const c = parseFile('targets/gpu/c.yaml', yaml('c', 'r2')).entity!.value as Target;
    expect(b.exporters).toBe(a.exporters);
    expect(b.groups).toBe(a.groups);
    expect(b.labels).toBe(a.labels);
    expect(b.node_labels).toBe(a.node_labels);
    expect(b.facts).toBe(a.facts);
    expect(c.labels).not.toBe(a.labels);
    expect(c.labels).toEqual({ rack: 'r2' });
    expect(a).toEqual({ hostname: 'a', ip_address: '10.0.0.1', primary_group: 'gpu', groups: ['prod'], exporters: [{ type: 'node_exporter', enabled: true }, { type: 'dcgm_exporter', port: 9401, enabled: true }], labels: { rack: 'r1' }, node_labels: {}, token_labels: {}, facts: { gpu_model: 'H100', interfaces: ['eth0'] } });
    // A change in place would reach every target sharing the value: it throws instead.
    expect(() => (a.labels as Record<string, string>).rack = 'r9').toThrow(TypeError);
    expect(() => (a.exporters[0] as { port?: number }).port = 1).toThrow(TypeError);
    expect(() => (a.facts!.interfaces as string[]).push('eth1')).toThrow(TypeError);
    expect(b.labels).toEqual({ rack: 'r1' });
    // The same labels in another order are another value: a file keeps the order it was written in.
    const d = parseFile('targets/gpu/d.yaml', 'hostname: d\nip_address: 10.0.0.4\nprimary_group: gpu\nlabels: {x: "1", y: "2"}\n').entity!.value as Target;
    const e = parseFile('targets/gpu/e.yaml', 'hostname: e\nip_address: 10.0.0.5\nprimary_group: gpu\nlabels: {y: "2", x: "1"}\n').entity!.value as Target;
    expect(Object.keys(d.labels)).toEqual(['x', 'y']);
    expect(Object.keys(e.labels)).toEqual(['y', 'x']);
  });

  it('accepts a group, a token and the settings file', () => {
    expect(parseFile('groups/prod.yaml', 'id: prod\nname: Production\nnamespace: environment\n').problems).toEqual([]);
    expect(
      parseFile(
        'tokens/k3j9x2ab.yaml',
        `id: k3j9x2ab\nname: t\nsecret_hash: sha256:${'a'.repeat(64)}\ndefault_group: prod\nmax_uses: 10\nexpires_at: 2026-12-31T23:59:59Z\n`,
      ).entity,
    ).toMatchObject({ kind: 'token', value: { uses: 0, revoked: false, expires_at: '2026-12-31T23:59:59Z' } });
    expect(parseFile('aami.yaml', 'exporters:\n  node_exporter: {job: node, port: 9100}\n').problems).toEqual([]);
  });

  it('names the field and the reason for each schema error', () => {
    expect(
      problemsOf(
        'targets/g/h1.yaml',
        'hostname: h1\nip_address: 10.0.0.300\nprimary_group: g\nexporters: [{type: node_exporter, port: 70000}]\nlabels: {"bad-name": x, __secret: y, aami_group: z}\ncolour: blue\n',
      ),
    ).toEqual([
      'ip_address: must be an IPv4 or IPv6 address (without a zone id)',
      'exporters[0].port: must be 1-65535',
      'labels.bad-name: invalid label name: must match [a-zA-Z_][a-zA-Z0-9_]*',
      'labels.__secret: invalid label name: names starting with "__" are reserved for Prometheus',
      'labels.aami_group: invalid label name: names starting with "aami_" are set by aami itself',
      'colour: is not a known field',
    ]);
  });

  it('reports a missing required field as required', () => {
    expect(problemsOf('groups/prod.yaml', 'id: prod\nnamespace: environment\n')).toEqual(['name: is required']);
  });

  it('refuses a file whose name disagrees with the id inside it', () => {
    expect(problemsOf('groups/prod.yaml', 'id: production\nname: p\nnamespace: e\n')).toEqual([
      'id: is "production" but the file\'s path says "prod"',
    ]);
    expect(problemsOf('targets/g/h1.yaml', 'hostname: h2\nip_address: 10.0.0.1\nprimary_group: other\n')).toEqual([
      'hostname: is "h2" but the file\'s path says "h1"',
      'primary_group: is "other" but the file\'s path says "g"',
    ]);
  });

  it('refuses paths that are not safe ids or not where an entity lives', () => {
    expect(problemsOf('targets/h1.yaml', 'x: 1')).toEqual([': a target lives at targets/<primary_group>/<hostname>.yaml']);
    expect(problemsOf('groups/Prod.yaml', 'x: 1')[0]).toMatch(/file name is not a valid id/);
    expect(problemsOf('groups/prod.yml', 'x: 1')).toEqual([': use the .yaml extension']);
    expect(problemsOf('targets/g/..bad.yaml', 'x: 1')[0]).toMatch(/not a valid id/);
  });

  it('refuses hostnames with path characters or upper case', () => {
    for (const bad of ['../etc', 'a/b', 'GPU-01', '-lead', 'a..b']) {
      expect(problemsOf('targets/g/h1.yaml', `hostname: "${bad}"\nip_address: 10.0.0.1\nprimary_group: g\n`)[0]).toMatch(
        /^hostname: must be a lowercase host name/,
      );
    }
  });

  it('reports broken YAML and empty files with a reason', () => {
    expect(problemsOf('groups/prod.yaml', 'id: prod\n  name: [unclosed\n')[0]).toMatch(/^: not valid YAML: /);
    expect(problemsOf('groups/prod.yaml', 'id: a\nid: b\n')[0]).toMatch(/duplicated mapping key/);
    expect(problemsOf('groups/prod.yaml', '# nothing\n')).toEqual([': the file is empty']);
  });

  it('requires a token to have an RFC 3339 expiry, at least one use and uses within max_uses', () => {
    const token = (extra: string) =>
      `id: t1\nname: t\nsecret_hash: sha256:${'b'.repeat(64)}\ndefault_group: g\n${extra}`;
    expect(problemsOf('tokens/t1.yaml', token('max_uses: 0\nexpires_at: tomorrow\n'))).toEqual([
      'max_uses: must be at least 1',
      'expires_at: must be an RFC 3339 time such as 2026-12-31T23:59:59Z',
    ]);
    expect(problemsOf('tokens/t1.yaml', token('max_uses: 2\nuses: 3\nexpires_at: 2026-12-31T00:00:00Z\n'))).toEqual([
      'uses: must not exceed max_uses',
    ]);
  });

  it('reads a file it dumped itself as YAML would: data of every shape, strings YAML could take for something else', () => {
    // The parse of a file the server just rendered skips the YAML reader (dumpYaml): the data
    // must be what js-yaml's load of that text gives, for anything a file can hold.
    const rng = random(20261127);
    const strings = ['', 'yes', 'No', 'on', 'OFF', 'y', 'n', 'null', 'Null', '~', 'true', 'False', '1e3', '0x1F', '0o17', '08', '1_000', '+1', '-0', '.5', '.inf', '-.Inf', '.NaN',
      '2026-11-26', '2026-11-26T00:00:00Z', '12:30:00', ' lead', 'trail ', 'a: b', 'a #b', '#x', '- x', '? x', ': x', "'q'", '"dq"', "it's", 'multi\nline', 'end\n', '\n\nstart',
      'tab\there', '\u2028', '\u0085', '\ufeffbom', '\ud800', 'emoji 🚀', '한국어 라벨', '<<', '=', '!tag', '&anchor', '*alias', '%d', '@at', '`tick', '{a}', '[b]', 'a,b', '|', '>', '\\', 'x'.repeat(3000), 'NVIDIA H100 80GB HBM3', 'sha256:' + 'ab'.repeat(32)];
    const numbers = [0, 1, 8, 1024, 65535, 2 ** 31, 2 ** 53 - 1, -1, -(2 ** 40), 1.5, 0.1, 1e21, 1e-7, 5e-324, Number.MAX_VALUE];
    const value = (depth: number): unknown => {
      const kind = rng.next();
      if (depth > 2 || kind < 0.45) return rng.pick(strings);
      if (kind < 0.6) return rng.pick(numbers);
      if (kind < 0.67) return rng.next() < 0.5;
      if (kind < 0.7) return null;
      if (kind < 0.85) return Array.from({ length: Math.floor(rng.next() * 4) }, () => value(depth + 1));
      return object(depth + 1);
    };
    const object = (depth: number): Record<string, unknown> =>
      Object.fromEntries(Array.from({ length: Math.floor(rng.next() * 5) }, () => [rng.pick([...strings.filter((s) => s.length < 100), 'gpu_count', 'labels', 'a_b'] as const), value(depth)]));
    for (let i = 0; i < 2000; i++) {
      const data = object(0);
      const text = dumpYaml(data);
      const loaded = jsYaml.load(text, { schema: jsYaml.CORE_SCHEMA });
      expect(isDeepStrictEqual(loaded ?? {}, JSON.parse(JSON.stringify(data))), `${JSON.stringify(data)}\n${text}`).toBe(true);
    }
    // Through parseFile: the first parse of a dumped text takes the kept data, the second reads the YAML; both agree.
    const target = { hostname: 'gpu-01', ip_address: '10.0.0.1', primary_group: 'ml', labels: { rack: 'yes', since: '2026-11-26' }, node_labels: { gpu_count: '8' }, facts: { gpu_count: 8, gpu_model: "it's # a: GPU" } };
    const text = dumpYaml(target);
    const load = vi.spyOn(jsYaml, 'load');
    onCleanup(() => load.mockRestore());
    const kept = parseFile('targets/ml/gpu-01.yaml', text);
    expect(load).not.toHaveBeenCalled();
    expect(kept.problems).toEqual([]);
    expect(parseFile('targets/ml/gpu-01.yaml', text)).toEqual(kept);
    expect(load).toHaveBeenCalledTimes(1);
    // What JSON cannot carry is not kept: NaN fails the schema as it does from the YAML.
    const odd = dumpYaml({ ...target, facts: { gpu_count: Number.NaN } });
    expect(problemsOf('targets/ml/gpu-01.yaml', odd)).toEqual(problemsOf('targets/ml/gpu-01.yaml', odd));
    expect(problemsOf('targets/ml/gpu-01.yaml', odd)[0]).toMatch(/^facts.gpu_count: /);
  });
});

describe('the check of a target file', () => {
  it('answers a file of YAML aliases with its problems, at once: a cycle, a chain deeper than JSON can write, billions of paths', () => {
    const path = 'targets/ml/h.yaml';
    const head = 'hostname: h\nip_address: 10.0.0.1\nprimary_group: ml\n';
    expect(problemsOf(path, `${head}labels: &a {x: *a}\n`)).toEqual(['labels.x: Invalid input']);
    // A chain of nested lists, each holding the one before: ~4,500 levels from 50 lines.
    let chain = `${head}groups:\n  - &a0 ${'['.repeat(90)}x${']'.repeat(90)}\n`;
    for (let i = 1; i < 50; i++) chain += `  - &a${i} ${'['.repeat(90)}*a${i - 1}${']'.repeat(90)}\n`;
    expect(problemsOf(path, chain)).toContain('groups[0]: Invalid input: expected string, received array');
    // Twelve lines, 10^12 paths through the value.
    let laughs = `${head}facts:\n  interfaces: &a0 [a, a, a, a, a, a, a, a, a, a]\n`;
    for (let i = 1; i < 12; i++) laughs += `x${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(', ')}]\n`;
    expect(problemsOf(path, laughs)).toContain('x11: is not a known field');
    expect(problemsOf(path, laughs.replace('x11: &a11', 'labels: {y: *a10}\nx11: &a11'))).toContain('labels.y: Invalid input');
  });

  it('says a field is required only when it is missing, and what is wrong with one of another type', () => {
    expect(problemsOf('targets/ml/h.yaml', 'hostname: h\nip_address: 10.0.0.1\ngroups: [1]\n')).toEqual(['primary_group: is required', 'groups[0]: Invalid input: expected string, received number']);
    // A field whose schema words its own message: required when missing, its message when of another type.
    expect(problemsOf('tokens/t.yaml', 'id: t\nmax_uses: 1\nuses: 0\n')).toContain('expires_at: is required');
    expect(problemsOf('tokens/t.yaml', 'id: t\nmax_uses: 1\nuses: 0\nexpires_at: 5\n')).toContain('expires_at: must be an RFC 3339 time such as 2026-12-31T23:59:59Z');
  });

  it('gives what the whole schema gives, value and field order, valid or not, whatever checks came before', () => {
    // parseFile checks a target's repeated fields once per distinct value (checkedTarget):
    // random targets, many sharing values and some breaking them, against targetFile alone.
    const rng = random(6021);
    // For each field: values the schema takes, then (after the bar) values it refuses.
    const BAR = Symbol('refused from here');
    const labelSets = [undefined, {}, { rack: 'r1' }, { rack: 'r1', gpu_count: 8 }, { gpu_count: 8, rack: 'r1' }, { gpu_count: '8', rack: 'r1' }, { spot: true }, { x: 1.5 }, { x: 0 }, BAR, { job: 'x' }, { 'a-b': 'x' }, { x: null }, []];
    const pools: Record<string, unknown[]> = {
      hostname: ['gpu-01', BAR, 'BAD', 5],
      ip_address: ['10.0.0.1', '::ffff:10.0.0.1', '::0001', BAR, '300.1.1.1', 7],
      primary_group: ['ml', BAR, 'ML', null],
      groups: [undefined, [], ['prod'], ['prod', 'h100'], BAR, ['BAD'], 'prod', [1], null],
      exporters: [undefined, [], [{ type: 'node_exporter' }], [{ type: 'node_exporter', port: 9100 }], [{ type: 'dcgm_exporter', enabled: false, metrics_path: '/m', scheme: 'https', interval: '15s' }],
        [{ port: 9100, type: 'node_exporter' }], BAR, [{ type: 'x' }], [{ type: 'node_exporter', extra: 1 }], [{ type: 'node_exporter', port: 0 }], {}],
      labels: labelSets,
      node_labels: labelSets,
      token_labels: labelSets,
      facts: [undefined, { cpu_cores: 128 }, { cpu_cores: 0 }, { gpu_model: 'H100', interfaces: ['eth0'] }, { interfaces: ['eth0'], gpu_model: 'H100' }, BAR, { cpu_cores: -1 }, { unknown: 1 }, null],
      registered_by_token: [undefined, 'bulk', BAR, 'BAD'],
      node_credential_hash: [undefined, `sha256:${'a'.repeat(64)}`, BAR, 'a'.repeat(64)],
      machine_id_hash: [undefined, `sha256:${'b'.repeat(64)}`, BAR, 'sha256:B'],
      registered_at: [undefined, '2026-11-26T00:00:00Z', BAR, 'yesterday'],
      machine_id: [undefined, 'ab'.repeat(32), BAR, 'AB'],
    };
    const pickFrom = (pool: unknown[]) => {
      const bar = pool.indexOf(BAR);
      return rng.next() < 0.03 ? rng.pick(pool.slice(bar + 1)) : rng.pick(pool.slice(0, bar));
    };
    let valid = 0;
    for (let i = 0; i < 3000; i++) {
      const entries = Object.entries(pools).map(([key, pool]) => [key, pickFrom(pool)] as const).filter(([, value]) => value !== undefined);
      if (rng.next() < 0.05) entries.push(['unknown', 1]);
      if (rng.next() < 0.3) entries.sort(() => rng.next() - 0.5);
      const data = Object.fromEntries(entries);
      const text = jsYaml.dump(data, { lineWidth: -1 });
      const parsed = parseFile('targets/ml/gpu-01.yaml', text);
      const loaded = jsYaml.load(text, { schema: jsYaml.CORE_SCHEMA });
      const expected = targetFile.safeParse(loaded);
      if (!expected.success) {
        expect(parsed.problems, text).toEqual(describeZodError(expected.error, loaded).map((e) => ({ file: 'targets/ml/gpu-01.yaml', ...e })));
        continue;
      }
      expect(parsed.problems, text).toEqual([]);
      valid++;
      // JSON: the order of the fields and the type of every value count.
      expect(JSON.stringify(parsed.entity!.value), text).toBe(JSON.stringify(expected.data));
    }
    expect(valid).toBeGreaterThan(1000);
  });
});
