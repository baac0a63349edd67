import jsYaml from 'js-yaml';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { DUMP_OPTIONS } from '../src/catalog/emit.js';
import { dumpYaml, parseFile } from '../src/catalog/parse.js';
import { readFast } from '../src/catalog/read.js';
import { random } from './helpers.js';
import { targetFile } from '../bench/synthetic.js';

/** js-yaml's load as parse.ts calls it, or the error it throws. */
const reference = (text: string): unknown => {
  try {
    return jsYaml.load(text, { schema: jsYaml.CORE_SCHEMA });
  } catch (error) {
    return error as Error;
  }
};
/** Key order, -0, NaN and the type of every value count. */
const same = (a: unknown, b: unknown) => inspect(a, { depth: null, sorted: false }) === inspect(b, { depth: null, sorted: false });

/** Checks the fast reader against js-yaml on `text`: whatever it reads, js-yaml reads the same; answers whether it read it. */
function check(text: string): boolean {
  const fast = readFast(text);
  if (fast === undefined) return false;
  const expected = reference(text);
  if (expected instanceof Error || !same(fast, expected)) {
    throw new Error(`the fast reader read ${inspect(fast, { depth: null })} where js-yaml gives ${expected instanceof Error ? expected.message : inspect(expected, { depth: null })}, from:\n${text}`);
  }
  return true;
}

describe('readFast', () => {
  const rng = random(2718);
  const int = (n: number) => Math.floor(rng.next() * n);
  // Texts YAML may read as something else than a string, or not at all, as a value and as a key.
  const scalars = ['a', 'gpu-01', 'H100', 'NVIDIA H100 80GB HBM3', 'a  b', '8', '08', '0', '-1', '+1', '1_000', '0x1F', '0o17', '0b101', '1e3', '1.5', '.5', '1.', '.inf', '-.Inf', '.NaN', 'NaN',
    '~', 'null', 'Null', 'NULL', 'nULL', 'true', 'True', 'TRUE', 'tRUE', 'false', 'FALSE', 'yes', 'no', 'on', 'off', 'y', 'n', '2026-11-26', '2026-11-26T00:00:00Z', '10.0.0.1', 'fe80::1', '::1', 'a:b', 'a: b',
    'a:', ':a', 'a #b', '#x', 'x#y', "it's", "'q'", '"dq"', 'a"b', '-', '- a', '-a', '?', '? a', '?a', '[a]', '{a}', 'a,b', 'a]', '&a', '*a', '!x', '!!str x', '|', '>', '%x', '@x', '`x', '<<', '=', '\\', 'a\\nb',
    '\t', 'tab\tin', 'é', '한국어', '', ' ', 'trail ', ' lead', '__proto__', 'constructor', 'toString', '---', '...', '... x', 'x'.repeat(300), `sha256:${'ab'.repeat(32)}`, 'http://x:80/y'];
  const keys = ['hostname', 'ip_address', 'labels', 'exporters', 'a', 'b', 'x-y', '_k', 'k1', 'true', 'True', 'null', 'NULL', 'no', '__proto__', 'constructor', '1a', 'a b', "'q'", '"d"', 'k:', '-k', 'é', 'a#'];
  const pick = <T>(list: readonly T[]) => list[int(list.length)]!;
  const quoted = (text: string) => (rng.next() < 0.5 ? `'${text.replaceAll("'", "''")}'` : `"${text}"`);
  // What files mostly hold: without them few documents would be left to the fast path.
  const plain = ['a', 'gpu-01', 'H100', 'NVIDIA H100 80GB HBM3', '8', '0', '1.5', 'true', 'null', 'no', '10.0.0.1', 'fe80::1', 'a:b', 'x_y.z/w'];
  const scalar = () => (rng.next() < 0.8 ? pick(plain) : rng.next() < 0.75 ? pick(scalars) : quoted(pick(scalars)));
  const key = () => (rng.next() < 0.85 ? pick(keys.slice(0, 7)) : pick(keys));
  const space = () => (rng.next() < 0.9 ? '' : pick([' ', '  ', '\t']));
  const flow = (depth: number): string => {
    const items = Array.from({ length: int(4) }, () => (depth < 2 && rng.next() < 0.2 ? flow(depth + 1) : scalar()));
    const glue = pick([', ', ',', ' , ', ',  ']);
    if (rng.next() < 0.5) return `[${space()}${items.join(glue)}${space()}${rng.next() < 0.03 ? ',' : ''}]`;
    const pairs = items.map((item) => `${key()}${pick([': ', ':  ', ':', ' : '])}${item}`);
    return `{${space()}${pairs.join(glue)}${space()}}`;
  };
  /** The lines of a block mapping (or, in a sequence, of a compact one) at `indent`. */
  const block = (indent: number, depth: number): string[] => {
    const lines: string[] = [];
    const pad = ' '.repeat(indent);
    for (let i = 0, n = 1 + int(4); i < n; i++) {
      const name = key();
      const kind = rng.next();
      if (depth > 2 || kind < 0.45) lines.push(`${pad}${name}:${pick([' ', ' ', '  '])}${scalar()}${space()}`);
      else if (kind < 0.6) lines.push(`${pad}${name}: ${flow(0)}${space()}`);
      else if (kind < 0.65) lines.push(`${pad}${name}:${space()}`);
      else if (kind < 0.8) lines.push(`${pad}${name}:`, ...block(indent + 1 + int(4), depth + 1));
      else {
        lines.push(`${pad}${name}:`);
        const at = indent + (rng.next() < 0.3 ? 0 : 1 + int(3));
        for (let j = 0, m = 1 + int(3); j < m; j++) {
          const item = rng.next();
          const dash = `${' '.repeat(at)}-${pick([' ', ' ', '  '])}`;
          if (item < 0.4) lines.push(`${dash}${scalar()}`);
          else if (item < 0.6) lines.push(`${dash}${flow(0)}`);
          else {
            const inner = block(dash.length, depth + 1);
            lines.push(dash + inner[0]!.trimStart(), ...inner.slice(1));
          }
        }
      }
      if (rng.next() < 0.05) lines.push(pick(['', '   ', `${pad}# a comment`, `${pad}  continued`, '---', `${pad}- stray`, `${' '.repeat(indent + 1)}odd: 1`]));
    }
    return lines;
  };
  /** A random change of one character, among those that matter to YAML. */
  const mutate = (text: string) => {
    const at = int(text.length + 1);
    const char = pick([...' -:#\'"[]{},\n\tx1?&*!|>']);
    const how = rng.next();
    return how < 0.4 ? text.slice(0, at) + char + text.slice(at) : how < 0.7 ? text.slice(0, at) + text.slice(at + 1) : text.slice(0, at) + char + text.slice(at + 1);
  };

  it('reads what js-yaml reads, value for value, on random documents and on random changes of them; the fast path takes many of them', () => {
    let fast = 0;
    let mutants = 0;
    const documents = 6_000;
    for (let i = 0; i < documents; i++) {
      const text = `${block(0, 0).join('\n')}${rng.next() < 0.9 ? '\n' : ''}`;
      if (check(text)) fast++;
      for (let j = 0; j < 3; j++) if (check(mutate(text))) mutants++;
    }
    // Many documents hold something the fast path leaves to js-yaml (the lists above are mostly
    // traps): still, a good share take it, so the comparison is not vacuous.
    expect(fast).toBeGreaterThan(documents * 0.15);
    expect(mutants).toBeGreaterThan(documents * 0.2);
  });

  it('reads every document js-yaml dumps from random data, block and flow alike', () => {
    const values = ['a', 'gpu-01', 'NVIDIA H100', "it's", 'yes', 'null', '8', '1.5', '', 'a: b', '- x', '[x]', 8, 0, -3, 2 ** 40, 1.5, true, false, null];
    const data = (depth: number): unknown => {
      const kind = rng.next();
      if (depth > 3 || kind < 0.5) return pick(values);
      if (kind < 0.75) return Array.from({ length: int(4) }, () => data(depth + 1));
      return Object.fromEntries(Array.from({ length: int(4) }, () => [pick(['a', 'b', 'labels', 'x-y', '_z']), data(depth + 1)]));
    };
    let fast = 0;
    for (let i = 0; i < 3_000; i++) {
      const document = Object.fromEntries(Array.from({ length: 1 + int(5) }, () => [pick(['hostname', 'groups', 'exporters', 'labels', 'k']), data(0)]));
      const text = jsYaml.dump(document, { ...DUMP_OPTIONS, ...(rng.next() < 0.3 ? { flowLevel: int(3) } : {}) });
      if (check(text)) fast++;
    }
    expect(fast).toBeGreaterThan(1_500);
  });

  it('takes the fast path for the files the server writes and the files people write by hand', () => {
    const target = {
      hostname: 'gpu-node-01',
      ip_address: '10.0.1.21',
      primary_group: 'ml-training',
      groups: ['production', 'h100'],
      exporters: [{ type: 'node_exporter', enabled: true }, { type: 'dcgm_exporter', port: 9400, enabled: false, metrics_path: '/metrics' }],
      labels: { rack: 'r12', gpu_count: '8' },
      node_labels: {},
      token_labels: { site: 'seoul' },
      facts: { cpu_cores: 128, memory_bytes: 2 ** 40, gpu_model: 'NVIDIA H100 80GB HBM3', interfaces: ['eth0', 'ib0'] },
      registered_by_token: 'bulk',
      node_credential_hash: `sha256:${'ab'.repeat(32)}`,
      registered_at: '2026-11-26T00:00:00Z',
    };
    const files = [
      dumpYaml(target),
      jsYaml.dump(target, DUMP_OPTIONS),
      targetFile(7, 'cluster-0').content!,
      'exporters:\n  node_exporter: {job: node, port: 9100}\n  dcgm_exporter: {job: dcgm, port: 9400}\n',
      'id: production\nname: "Production"\nnamespace: environment\nlabels: {environment: production}\n',
      'hostname: gpu-01\nip_address: 10.0.0.1\nprimary_group: ml\nexporters:\n- type: node_exporter\n  port: 9100\n- {type: dcgm_exporter}\nlabels:\n    rack: r1   \n\n    gpu_count: 8\n',
    ];
    for (const text of files) expect(check(text), text).toBe(true);
  });

  it('leaves to js-yaml what it does not read, so that js-yaml says what is wrong', () => {
    const leftToJsYaml = [
      '', '\n', '# only a comment\n', 'a: 1 # a comment\n', '---\na: 1\n', 'a: 1\n...\n', 'a: &x 1\nb: *x\n', 'a: !!str 1\n', 'a: |\n  text\n', 'a: >\n  text\n', 'a: "line\\nbreak"\n',
      'a: b\n  c\n', 'a: [1,\n  2]\n', 'a: 1\na: 2\n', '__proto__: 1\n', 'a: {__proto__: 1}\n', 'true: 1\n', 'a b: 1\n', '"a": 1\n', '? a\n: 1\n', '- a\n', '[a]\n', 'a\n', ' a: 1\n', 'a:\tb\n', 'a: b\r\n',
      'a: é\n', 'a: [b,]\n', 'a: {b}\n', 'a: {b:c}\n', 'a: [b: c]\n', 'a: -1\n', 'a: b: c\n', 'a:\n  - - b\n', 'a:\n  -\n', 'a: b\n - c\n', 'a:\n    b: 1\n  c: 2\n',
      `a: ${'['.repeat(100_000)}\n`, `a: ${'{b: '.repeat(50)}1${'}'.repeat(50)}\n`,
      Array.from({ length: 40 }, (_, i) => `${' '.repeat(i)}k${i}:`).join('\n'),
    ];
    for (const text of leftToJsYaml) expect(readFast(text), JSON.stringify(text)).toBeUndefined();
  });

  it('counts every collection a value is in, block and flow, towards one limit of depth', () => {
    // Each "- k:" opens a sequence and a mapping; the line's flow collections count on.
    const nested = (levels: number, flow: number) =>
      `k:\n${Array.from({ length: levels }, (_, i) => `${'  '.repeat(i)}- k:`).join('\n')}\n${'  '.repeat(levels)}- ${'['.repeat(flow)}x${']'.repeat(flow)}\n`;
    expect(check(nested(10, 4))).toBe(true); // 1 + 2 x 10 + 1 + 4 collections
    expect(readFast(nested(10, 11))).toBeUndefined(); // 1 + 2 x 10 + 1 + 11
    expect(readFast(nested(16, 0))).toBeUndefined(); // 1 + 2 x 16 + 1
    expect(check(`k: ${'['.repeat(31)}x${']'.repeat(31)}\n`)).toBe(true);
    expect(readFast(`k: ${'['.repeat(32)}x${']'.repeat(32)}\n`)).toBeUndefined();
  });

  it('gives parseFile the same parse whether the fast path or js-yaml read the file', () => {
    const text = targetFile(42, 'cluster-1').content!;
    const fast = parseFile('targets/cluster-1/gpu-000042.yaml', text);
    // A comment leaves the file to js-yaml; the data is the same.
    const slow = parseFile('targets/cluster-1/gpu-000042.yaml', `# hand-written\n${text}`);
    expect(fast.problems).toEqual([]);
    expect(same(fast, slow)).toBe(true);
    // The errors are js-yaml's and zod's as before.
    expect(parseFile('targets/cluster-1/gpu-000042.yaml', 'hostname: [a,\n').problems[0]!.message).toMatch(/^not valid YAML: /);
    expect(parseFile('targets/cluster-1/gpu-000042.yaml', text.replace('gpu_count: 8', 'gpu_count: 8\n  x y: 1')).problems[0]!.message).toMatch(/^not valid YAML: /);
    expect(parseFile('groups/a.yaml', 'id: a\n__proto__: {x: 1}\n').problems).toEqual([{ file: 'groups/a.yaml', field: '__proto__', message: 'is not allowed as a key' }]);
    expect(parseFile('groups/a.yaml', 'id: a\nname: a\nnamespace: environment\nlabels: {job: x}\n').problems.map((p) => p.field)).toEqual(['labels.job']);
  });
});
