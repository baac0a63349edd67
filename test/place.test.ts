import { describe, expect, it } from 'vitest';
import { Snapshot } from '../src/catalog/live.js';
import { parseFile } from '../src/catalog/parse.js';
import { addressClaimKey, claimKeys, establishedIn, hostKey, placeTargets, type Candidate } from '../src/catalog/place.js';
import type { Settings, Target } from '../src/schema/index.js';
import { random } from './helpers.js';

const settings = (parseFile('aami.yaml', 'exporters:\n  node_exporter: {job: node, port: 9100}\n  dcgm_exporter: {job: dcgm, port: 9400}\n').entity!.value) as Settings;
/** An empty catalog: a full build places every target against it. */
const empty = { settings, targets: new Map<string, Target>(), hostsByIp: new Map<string, string>(), nodeCredentials: new Map<string, string>() };
const creds = [`sha256:${'1'.repeat(64)}`, `sha256:${'2'.repeat(64)}`, `sha256:${'3'.repeat(64)}`];

/** A few files over a few host names, addresses and credentials, with one or two versions each (or none that fit). */
function gen(seed: number) {
  const rng = random(seed * 104729);
  const hosts = ['a', 'b', 'c', 'd', 'e'].slice(0, 2 + Math.floor(rng.next() * 4));
  const ips = ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'].slice(0, 1 + Math.floor(rng.next() * 4));
  const groups = ['db', 'ml', 'web', 'zz'];
  const version = (host: string, primary: string): Target => {
    const ex = rng.pick(['', '', 'exporters: [{type: node_exporter}, {type: dcgm_exporter}]\n', 'exporters: [{type: node_exporter, port: 9101}]\n', 'exporters: [{type: dcgm_exporter}]\n']);
    const cred = rng.next() < 0.35 ? `node_credential_hash: ${rng.pick(creds)}\n` : '';
    const text = `hostname: ${host}\nip_address: ${rng.pick(ips)}\nprimary_group: ${primary}\n${ex}${cred}`;
    const parsed = parseFile(`targets/${primary}/${host}.yaml`, text);
    if (!parsed.entity) throw new Error(JSON.stringify(parsed.problems));
    return parsed.entity.value as Target;
  };
  const candidates: Candidate[] = [];
  const n = 2 + Math.floor(rng.next() * 7);
  const used = new Set<string>();
  for (let i = 0; i < n; i++) {
    const host = rng.pick(hosts);
    const g = rng.pick(groups);
    const path = `targets/${g}/${host}.yaml`;
    if (used.has(path)) continue;
    used.add(path);
    const k = rng.next() < 0.15 ? 0 : rng.next() < 0.6 ? 2 : 1;
    const versions: Target[] = [];
    for (let j = 0; j < k; j++) versions.push(version(host, g));
    candidates.push({ path, versions });
  }
  // Files no other file shares a claim with (most of a real build), placed beside the clashes.
  const solo = Math.floor(rng.next() * 4);
  for (let i = 0; i < solo; i++) {
    const text = (ip: number) => `hostname: solo-${i}\nip_address: 10.9.${i}.${ip}\nprimary_group: zz\nexporters: [{type: node_exporter}]\n`;
    const versions = [1, 2].slice(0, rng.next() < 0.3 ? 2 : 1).map((ip) => parseFile(`targets/zz/solo-${i}.yaml`, text(ip)).entity!.value as Target);
    candidates.push({ path: `targets/zz/solo-${i}.yaml`, versions });
  }
  return { rng, candidates };
}

/** Claim key → the file holding it; no claim is held twice. */
function holdersOf(candidates: Candidate[], accepted: Map<string, Target>) {
  const holders = new Map<string, string>();
  for (const { path } of candidates) {
    const t = accepted.get(path);
    if (t) for (const key of claimKeys(settings, t)) {
      if (holders.has(key)) throw new Error(`double claim ${key}`);
      holders.set(key, path);
    }
  }
  return holders;
}
const shown = (p: ReturnType<typeof placeTargets>) => ({ accepted: [...p.accepted].sort(), problems: [...p.problems].sort(), rejected: [...p.rejected].sort() });

// SEEDS=40000 npx vitest run test/place.test.ts searches further.
const seeds = Number(process.env.SEEDS ?? 2000);
describe('placeTargets on random clashes', () => {
  it('decides the same in any order and after a restart, keeps established files, and leaves no file below a version it could have', { timeout: 120_000 }, () => {
    for (let seed = 1; seed <= seeds; seed++) {
      const { rng, candidates } = gen(seed);
      // A previous placement gives the established holders.
      const prevCands = candidates.map((c) => ({ path: c.path, versions: rng.next() < 0.5 ? c.versions.slice(1) : rng.next() < 0.5 ? c.versions : [...c.versions].reverse() }));
      const prev = placeTargets(prevCands, empty, { established: () => undefined, settings });
      const prevHolders = holdersOf(prevCands, prev.accepted);
      const established = (key: string) => prevHolders.get(key);
      const placed = placeTargets(candidates, empty, { established, settings });
      const where = `seed ${seed} ${JSON.stringify(candidates.map((c) => [c.path, c.versions.map((v) => [v.ip_address, v.exporters.map((e) => `${e.type}:${e.port ?? ''}`), v.node_credential_hash?.slice(7, 8)])]))} prev ${JSON.stringify([...prevHolders])}`;
      const holders = holdersOf(candidates, placed.accepted);
      // Order does not matter.
      const shuffled = [...candidates].reverse();
      expect(shown(placeTargets(shuffled, empty, { established, settings })), `order ${where}`).toEqual(shown(placed));
      // A restart decides the same.
      const restarted = placeTargets(candidates, empty, { established: (k) => holders.get(k), settings });
      expect(shown(restarted), `restart ${where}`).toEqual(shown(placed));
      for (const c of candidates) {
        const t = placed.accepted.get(c.path);
        const at = t ? c.versions.indexOf(t) : c.versions.length;
        // Never lose: each better version has a claim someone else holds.
        for (const v of c.versions.slice(0, at)) {
          const blocked = claimKeys(settings, v).some((k) => holders.has(k) && holders.get(k) !== c.path);
          expect(blocked, `could serve better ${c.path} ${where} => ${JSON.stringify([...holders])}`).toBe(true);
        }
        // Established not displaced: a version whose every claim it held before stays or better.
        c.versions.forEach((v, i) => {
          if (claimKeys(settings, v).every((k) => prevHolders.get(k) === c.path)) expect(at, `displaced ${c.path} ${where} => ${JSON.stringify([...holders])}`).toBeLessThanOrEqual(i);
        });
      }
      // Host name not left unserved when a version for it could serve with no clash.
      const servedHosts = new Set([...placed.accepted.values()].map((t) => t.hostname));
      for (const c of candidates) for (const v of c.versions) {
        if (servedHosts.has(v.hostname)) continue;
        const free = claimKeys(settings, v).every((k) => !holders.has(k));
        expect(free, `host ${v.hostname} unserved ${where} => ${JSON.stringify([...holders])}`).toBe(false);
      }
    }
  });
});

describe('establishedIn', () => {
  const settingsOf = (text: string) => parseFile('aami.yaml', text).entity!.value as Settings;
  const catalogOf = (files: Record<string, string>) => Snapshot.build(new Map(Object.entries(files).map(([path, text]) => [path, { oid: path, parsed: parseFile(path, text) }])), null).catalog;
  const group = (id: string) => `id: ${id}\nname: ${id}\nnamespace: logical\n`;
  // x on the job's port, z on 9101 of its own: one IP address, no clash while the job is on 9100.
  const catalog = catalogOf({
    'aami.yaml': 'exporters:\n  node_exporter: {job: node, port: 9100}\n',
    'groups/db.yaml': group('db'),
    'groups/ml.yaml': group('ml'),
    'targets/db/x.yaml': 'hostname: x\nip_address: 10.0.0.1\nprimary_group: db\n',
    'targets/ml/z.yaml': 'hostname: z\nip_address: 10.0.0.1\nprimary_group: ml\nexporters: [{type: node_exporter, port: 9101}]\n',
  });

  it('finds the holders by the keys of the catalog\'s own aami.yaml', () => {
    const held = establishedIn(catalog);
    expect(held(addressClaimKey('node 10.0.0.1:9100'))).toBe('targets/db/x.yaml');
    expect(held(addressClaimKey('node 10.0.0.1:9101'))).toBe('targets/ml/z.yaml');
    expect(held(hostKey('x'))).toBe('targets/db/x.yaml');
    expect(held(hostKey('nobody'))).toBeUndefined();
  });

  it('gives a served target its addresses as the next aami.yaml moves them; where two move onto one, the one scraped there already', () => {
    // x moves onto z's address, and comes first by path: z keeps it.
    const held = establishedIn(catalog, settingsOf('exporters:\n  node_exporter: {job: node, port: 9101}\n'));
    expect(held(addressClaimKey('node 10.0.0.1:9101'))).toBe('targets/ml/z.yaml');
    // Nobody is scraped at 9100 any more: x's old address is nobody's.
    expect(held(addressClaimKey('node 10.0.0.1:9100'))).toBeUndefined();
    expect(held(hostKey('x'))).toBe('targets/db/x.yaml');
  });

  it('gives an address two served targets move onto, neither scraped there before, to the first by path', () => {
    // The job is renamed as well: neither held "node2 10.0.0.1:9101" before.
    const held = establishedIn(catalog, settingsOf('exporters:\n  node_exporter: {job: node2, port: 9101}\n'));
    expect(held(addressClaimKey('node2 10.0.0.1:9101'))).toBe('targets/db/x.yaml');
    expect(held(addressClaimKey('node 10.0.0.1:9101'))).toBeUndefined();
  });
});
