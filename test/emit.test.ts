import jsYaml from 'js-yaml';
import { describe, expect, it } from 'vitest';
import { DUMP_OPTIONS, emitFast } from '../src/catalog/emit.js';
import { dumpYaml } from '../src/catalog/parse.js';
import { random } from './helpers.js';

const reference = (data: Record<string, unknown>): string | Error => {
  try {
    return jsYaml.dump(data, DUMP_OPTIONS);
  } catch (error) {
    return error as Error;
  }
};

describe('emitFast', () => {
  it('writes what js-yaml dumps, byte for byte, on random documents of every shape; the fast path takes most of them', () => {
    const rng = random(4242);
    const int = (n: number) => Math.floor(rng.next() * n);
    // Strings YAML could read as something else, and random ones over the characters that matter to it.
    const tricky = ['', 'yes', 'No', 'ON', 'off', 'y', 'N', 'null', 'Null', 'NULL', '~', 'true', 'False', 'TRUE', '1e3', '0x1F', '0o17', '0b1', '08', '1_000', '+1', '-1', '-0', '.5', '1.', '.inf', '-.Inf', '.NaN', '.nan',
      '2026-11-26', '2026-11-26T00:00:00Z', '2026-11-27T15:00:00.000Z', '2026-1-2', '12:30', '1:2:3', '190:20:30.15', ' lead', 'trail ', 'a: b', 'a:b', 'a:', ':a', 'a #b', 'a#b', '#x', '- x', '-x', '? x', '?x',
      "'q'", '"dq"', "it's", 'multi\nline', 'tab\there', '\u2028', 'é', '한국어', '\ud800', 'emoji 🚀', '<<', '=', '!tag', '&anchor', '*alias', '%d', '@at', '`tick', '{a}', '[b]', 'a,b', '|', '>', '\\', ',x', 'x,', '{', '}x',
      'x'.repeat(1100), 'NVIDIA H100 80GB HBM3', `sha256:${'ab'.repeat(32)}`, 'gpu-node-01.example.com', '10.0.0.1', '::1', 'fe80::1', '... x', '...', '--- x', '---', 'sequence', 'mapping'];
    const alphabet = 'aZ09eE.+-_: #\'"?!,[]{}&*|>%@`=~/\\xnult';
    const randomString = () => Array.from({ length: int(9) }, () => alphabet[int(alphabet.length)]).join('');
    const string = () => (rng.next() < 0.5 ? rng.pick(tricky) : randomString());
    const numbers = [0, 1, 8, 1024, 65535, 2 ** 31, 2 ** 53 - 1, 2 ** 53, -1, -(2 ** 40), -0, 1.5, 0.1, -2.5, 1e21, 1e-7, 5e-324, Number.NaN, Number.POSITIVE_INFINITY];
    const value = (depth: number): unknown => {
      const kind = rng.next();
      if (depth > 3 || kind < 0.4) return string();
      if (kind < 0.5) return rng.pick(numbers);
      if (kind < 0.55) return rng.next() < 0.5;
      if (kind < 0.58) return null;
      if (kind < 0.62) return undefined;
      if (kind < 0.63) return rng.pick([new Date(0), new (class { a = 1; toJSON() { return { b: 2 }; } })(), Object.assign(Object.create(null) as object, { k: 'v' }), Object.assign([1], { [Symbol.toStringTag]: 'Object' })]);
      if (kind < 0.8) return Array.from({ length: int(4) }, () => value(depth + 1));
      return mapping(depth + 1);
    };
    const mapping = (depth: number): Record<string, unknown> => Object.fromEntries(Array.from({ length: int(5) }, () => [string(), value(depth)]));
    let fast = 0;
    const documents = 20_000;
    for (let i = 0; i < documents; i++) {
      const data = mapping(0);
      const expected = reference(data);
      const emitted = emitFast(data);
      if (emitted !== undefined) {
        fast++;
        expect(emitted, JSON.stringify(data)).toBe(expected);
      }
      if (typeof expected === 'string') expect(dumpYaml(data)).toBe(expected);
      else expect(() => dumpYaml(data)).toThrow();
    }
    expect(fast).toBeGreaterThan(documents * 0.2);
  });

  it('takes the fast path for the files a registration writes', () => {
    const target = {
      hostname: 'gpu-node-01',
      ip_address: '10.0.1.21',
      primary_group: 'ml-training',
      groups: [],
      exporters: [{ type: 'node_exporter', enabled: true }, { type: 'dcgm_exporter', port: 9400, enabled: true, metrics_path: '/metrics' }],
      labels: { rack: 'r12', spot: 'yes' },
      node_labels: { gpu_count: '8', gpu_model: 'NVIDIA H100 80GB HBM3', gpu_vendor: 'nvidia' },
      token_labels: { environment: 'production' },
      facts: { cpu_cores: 192, memory_bytes: 2_163_884_015_616, gpu_vendor: 'nvidia', gpu_model: 'NVIDIA H100 80GB HBM3', gpu_count: 8, os: 'Ubuntu 22.04.4 LTS', kernel: '5.15.0-105-generic', interfaces: ['eth0', 'ib0'] },
      registered_by_token: 'ml-cluster-token',
      registered_at: '2026-11-27T15:00:00.000Z',
      machine_id: 'ab'.repeat(32),
      node_credential_hash: `sha256:${'cd'.repeat(32)}`,
    };
    const token = { id: 'ml-cluster-token', name: 'ml cluster', secret_hash: `sha256:${'ef'.repeat(32)}`, default_group: 'ml-training', max_uses: 100, uses: 7, expires_at: '2027-12-31T23:59:59Z', labels: { environment: 'production' }, created_at: '2026-11-27T15:00:00.000Z' };
    for (const data of [target, token]) {
      expect(emitFast(data)).toBeDefined();
      expect(emitFast(data)).toBe(jsYaml.dump(data, DUMP_OPTIONS));
    }
  });
});
