import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Volume, createFsFromVolume } from 'memfs';
import { describe, expect, it, vi } from 'vitest';
import { Draft, LiveCatalog, Snapshot } from '../src/catalog/live.js';
import { PMap } from '../src/catalog/pmap.js';
import { readCheckout } from '../src/catalog/load.js';
import { parseFile, targetPath } from '../src/catalog/parse.js';
import { targetLabels } from '../src/catalog/labels.js';
import { Compiler, compile, jobOfFile, sameParts } from '../src/compile/compiler.js';
import { LOOK_AGAIN_MS, RETIRED_MS, SdOutput } from '../src/compile/output.js';
import { PROCESS_TAG, type Fs } from '../src/git/fs.js';
import { loadDirectory } from '../src/cli/validate.js';
import { fixture, fsWith, onCleanup, seeingSyncs } from './helpers.js';

/** A compile's files as text, by name. */
const sdText = (files: ReadonlyMap<string, Buffer[]>) => new Map([...files].map(([name, parts]) => [name, Buffer.concat(parts).toString()]));

describe('compile', () => {
  it('produces the expected file_sd JSON for the basic fixture, byte for byte', async () => {
    const { catalog, problems } = loadDirectory(fixture('basic'));
    expect(problems).toEqual([]);
    const files = compile(catalog);
    const expectedDir = fixture('basic.expected');
    expect([...files.keys()].sort()).toEqual(fs.readdirSync(expectedDir).sort());
    for (const [name, bytes] of files) expect(bytes.toString(), name).toBe(fs.readFileSync(join(expectedDir, name), 'utf8'));
  });

  it('gives the same bytes whatever order the files were read in', async () => {
    const records = readCheckout(fs, fixture('basic'));
    const reversed = new Map([...records].reverse());
    expect(compile(Snapshot.build(reversed, null).catalog)).toEqual(compile(Snapshot.build(records, null).catalog));
  });

  it('lets the target win over its groups and the nearest group win over its parents', async () => {
    const { catalog } = loadDirectory(fixture('basic'));
    const node = JSON.parse(compile(catalog).get('node.json')!.toString()) as Array<{ targets: string[]; labels: Record<string, string> }>;
    const gpu01 = node.find((e) => e.labels.hostname === 'gpu-01')!;
    expect(gpu01.labels).toMatchObject({ owner: 'alice', tier: 'critical', environment: 'production', role: 'ml-training' });
    expect(gpu01.labels.aami_groups).toBe(',ml-training,production,production-critical,');
  });

  it('writes one entry a line, byte for byte as JSON.stringify gives each, whatever the label values hold', () => {
    const records = readCheckout(fs, fixture('basic'));
    const weird = 'quote " backslash \\ unicode ünï 日本 emoji 🚀 </script> $(x)';
    // Exporters with and without labels of their own: the target's labels are written once and shared by those without.
    const exporters = 'exporters: [{type: node_exporter}, {type: dcgm_exporter}, {type: ipmi_exporter, metrics_path: /ipmi, scheme: https}]\n';
    const text = `hostname: odd-1\nip_address: "fd00::9"\nprimary_group: ml-training\nlabels: {Rack: '${weird.replaceAll("'", "''")}', zzz: ''}\n${exporters}`;
    records.set('targets/ml-training/odd-1.yaml', { oid: 'x', parsed: parseFile('targets/ml-training/odd-1.yaml', text) });
    const files = compile(Snapshot.build(records, null).catalog);
    const onePerLine = (list: unknown[]) => (list.length ? `[\n${list.map((entry) => JSON.stringify(entry)).join(',\n')}\n]\n` : '[]\n');
    for (const bytes of files.values()) expect(bytes.toString()).toBe(onePerLine(JSON.parse(bytes.toString())));
    const odd = (file: string) => JSON.parse(files.get(file)!.toString()).find((e: any) => e.labels.hostname === 'odd-1').labels;
    expect(odd('node.json').Rack).toBe(weird);
    expect(Object.keys(odd('node.json')).filter((name) => name.startsWith('__'))).toEqual([]);
    expect(odd('dcgm.json')).toMatchObject({ Rack: weird, __metrics_path__: '/metrics' });
    expect(odd('ipmi.json')).toMatchObject({ Rack: weird, __metrics_path__: '/ipmi', __scheme__: 'https', __scrape_interval__: '1m' });
  });

  it('writes each target\'s labels as targetLabels gives them, its host name in its place, whether its label maps are shared by a fleet or its own', () => {
    const records = readCheckout(fs, fixture('basic'));
    const racks = ['r1', 'r2', 'a"quote', 'back\\slash'];
    for (let i = 0; i < 60; i++) {
      // Host names of two forms; the text kept is cut around the host name's value.
      const hostname = `${i % 2 ? 'a' : 'z'}-${i}.example`;
      const path = `targets/${i % 3 ? 'ml-training' : 'api-servers'}/${hostname}.yaml`;
      const text = `hostname: ${hostname}\nip_address: 10.7.0.${i}\nprimary_group: ${path.split('/')[1]}\nlabels: {rack: '${racks[i % 4]!.replaceAll("'", "''")}', aaa: x}\nnode_labels: {gpu_count: ${i % 5}}\n`;
      const parsed = parseFile(path, text);
      expect(parsed.problems).toEqual([]);
      // A target in four with label maps of its own (not a parse's shared, frozen ones).
      if (i % 4 === 1) {
        const value = parsed.entity!.value as Record<string, unknown>;
        parsed.entity = { ...parsed.entity!, value: { ...value, labels: { ...(value.labels as object) }, node_labels: { ...(value.node_labels as object) } } } as typeof parsed.entity;
      }
      records.set(path, { oid: `o${i}`, parsed });
    }
    const compiler = new Compiler();
    const check = (catalog: Snapshot['catalog']) => {
      const node = JSON.parse(Buffer.concat(compiler.compile(catalog).get('node.json')!).toString()) as Array<{ targets: string[]; labels: Record<string, string> }>;
      expect(node.length).toBe(catalog.targets.size);
      for (const entry of node) {
        const target = catalog.targets.get(entry.labels.hostname!)!;
        const expected = Object.entries(targetLabels(catalog, target)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
        // An exporter's own (__metrics_path__, ...) are its, not the target's.
        expect(Object.entries(entry.labels).filter(([name]) => !name.startsWith('__')), target.hostname).toEqual(expected);
      }
    };
    check(Snapshot.build(records, null).catalog);
    // A group's labels change: the next compile, by the same compiler, of the same targets (the same label maps) has the new ones.
    const group = 'groups/ml-training.yaml';
    records.set(group, { oid: 'edited', parsed: parseFile(group, 'id: ml-training\nname: ml-training\nnamespace: logical\nlabels: {role: edited, team: new}\n') });
    const edited = Snapshot.build(records, null).catalog;
    expect(targetLabels(edited, edited.targets.get('z-2.example')!)).toMatchObject({ role: 'edited', team: 'new' });
    check(edited);
  });

  it('shards by primary group with the same entries as one file per job, and re-renders only the group a change touched', () => {
    const records = readCheckout(fs, fixture('basic'));
    const live = new LiveCatalog(Snapshot.build(records, null));
    const whole = compile(live.snapshot().catalog);
    const compiler = new Compiler('group');
    const shards = compiler.compile(live.snapshot().catalog);
    for (const [file, bytes] of whole) {
      const job = file.replace(/\.json$/, '');
      const entries = [...shards].filter(([name]) => jobOfFile(name) === job).flatMap(([, parts]) => JSON.parse(Buffer.concat(parts).toString()) as Array<{ labels: Record<string, string> }>);
      entries.sort((a, b) => (a.labels.hostname! < b.labels.hostname! ? -1 : 1));
      expect(entries, job).toEqual(JSON.parse(bytes.toString()));
    }
    expect([...shards.keys()]).toContain('node/ml-training.json');
    // One target changes: its group's shard is new, every other shard is the same object.
    const draft = live.draft();
    const path = 'targets/api-servers/api-01.yaml';
    const text = 'hostname: api-01\nip_address: 10.0.2.99\nprimary_group: api-servers\n';
    draft.apply([{ path, oid: 'changed', parsed: parseFile(path, text) }]);
    live.publish(draft.freeze(null));
    const next = compiler.compile(live.snapshot().catalog);
    for (const [name, parts] of next) {
      if (name.endsWith('/api-servers.json')) expect(parts, name).not.toBe(shards.get(name));
      else expect(parts, name).toBe(shards.get(name));
    }
  });

  it('keeps one file per job, and the shards, as a full compile would, byte for byte, through registrations, moves, removals and a group edit; on disk too, its files written into their spares from the chunk that changed', async () => {
    const live = new LiveCatalog(Snapshot.build(readCheckout(fs, fixture('basic')), null));
    // Every file written into its spare (spareFrom 1, each write RETIRED_MS after the last); the writes that started past a kept start counted.
    const dir = fs.mkdtempSync(join(tmpdir(), 'aami-sd-spare-compile-'));
    onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
    let clock = 0;
    let fromKept = 0;
    const watched = writevThrough((buffers, position) => (position > 0 && fromKept++, buffers));
    const output = new SdOutput(watched, dir, { spareFrom: 1, now: () => clock });
    // Chunks of three hosts: changes fall in, between and across chunks, which split and empty.
    const compiler = new Compiler('file', 3);
    const sharded = new Compiler('group', 3);
    const groups = ['ml-training', 'api-servers', 'production']; // production: only these hosts, so it empties now and then
    const exporters = ['[]', '[{type: node_exporter}]', '[{type: node_exporter}, {type: dcgm_exporter}]', '[{type: dcgm_exporter}, {type: ipmi_exporter}]'];
    const where = new Map<string, string>(); // host → its file
    let seed = 7;
    const random = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), (seed >>> 8) % n);
    const change = (updates: Array<{ path: string; text: string | null }>) => {
      const draft = live.draft();
      const applied = draft.apply(updates.map(({ path, text }) => (text === null ? { path, oid: null } : { path, oid: `${path}@${random(1e9)}`, parsed: parseFile(path, text) })));
      expect(applied.problems).toEqual([]);
      live.publish(draft.freeze(null));
    };
    for (let step = 0; step < 120; step++) {
      // Host names that sort before, between and after the fixture's, some sharing a prefix.
      const id = random(72);
      const host = `${['a', 'gpu-0', 'gpu-01x', 'zz', 'api-0', 'gpu-1'][id % 6]!}-${id}`;
      const before = where.get(host);
      const roll = random(10);
      if (before && roll < 3) {
        change([{ path: before, text: null }]);
        where.delete(host);
      } else if (step === 90) {
        // Every host of production leaves: the group leaves the catalog with them.
        const leaving = [...where].filter(([, path]) => path.startsWith('targets/production/'));
        expect(leaving.length).toBeGreaterThan(0);
        change(leaving.map(([, path]) => ({ path, text: null })));
        for (const [name] of leaving) where.delete(name);
      } else if (step === 60) {
        // A group edit: every target is looked at again.
        change([{ path: 'groups/api-servers.yaml', text: 'id: api-servers\nname: API\nnamespace: logical\nlabels: {tier: edited}\n' }]);
      } else {
        // Now and then several hosts in one commit, as a storm's batch: one compile merges them all.
        const batch = roll >= 8 ? [...new Set(Array.from({ length: 5 }, () => random(72)))] : [id];
        const updates: Array<{ path: string; text: string | null }> = [];
        for (const n of batch) {
          const name = `${['a', 'gpu-0', 'gpu-01x', 'zz', 'api-0', 'gpu-1'][n % 6]!}-${n}`;
          const was = where.get(name);
          const group = groups[random(3)]!;
          const path = `targets/${group}/${name}.yaml`;
          const text = `hostname: ${name}\nip_address: 10.9.0.${n}\nprimary_group: ${group}\nexporters: ${exporters[random(4)]}\n`;
          if (was && was !== path) updates.push({ path: was, text: null });
          updates.push({ path, text });
          where.set(name, path);
        }
        change(updates);
      }
      const catalog = live.snapshot().catalog;
      const compiled = compiler.compile(catalog);
      const incremental = sdText(compiled);
      const whole = new Map([...compile(catalog)].map(([name, bytes]) => [name, bytes.toString()]));
      expect(incremental, `step ${step}`).toEqual(whole);
      clock += RETIRED_MS;
      await output.write(compiled);
      const onDisk = new Map(fs.readdirSync(dir).filter((name) => name.endsWith('.json')).map((name) => [name, fs.readFileSync(join(dir, name), 'utf8')]));
      expect(onDisk, `step ${step}, on disk`).toEqual(whole);
      // The shards a compile after each change gives are those of a compiler that never saw the catalog before.
      expect(sdText(sharded.compile(catalog)), `step ${step}, shards`).toEqual(sdText(new Compiler('group').compile(catalog)));
    }
    expect(where.size).toBeGreaterThan(20);
    expect(fromKept).toBeGreaterThan(20);
    // A job the change does not touch gives the same array back: the writer skips it by identity.
    const before = compiler.compile(live.snapshot().catalog);
    change([{ path: 'targets/ml-training/only-node.yaml', text: 'hostname: only-node\nip_address: 10.9.1.1\nprimary_group: ml-training\nexporters: [{type: node_exporter}]\n' }]);
    const after = compiler.compile(live.snapshot().catalog);
    expect(after.get('node.json')).not.toBe(before.get('node.json'));
    expect(after.get('dcgm.json')).toBe(before.get('dcgm.json'));
  });

  it('gives what a fresh compiler gives, in both layouts, when it compiles snapshots out of order: drafts, full builds, groups that go and come back, renamed groups, aami.yaml edits', () => {
    let seed = 11;
    const random = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), (seed >>> 8) % n);
    const exporters = ['[{type: node_exporter}]', '[{type: node_exporter}, {type: dcgm_exporter}]', '[{type: dcgm_exporter}, {type: ipmi_exporter}]'];
    let current = Snapshot.build(readCheckout(fs, fixture('basic')), null);
    const snapshots = [current];
    const groupsOf = (snapshot: Snapshot) => [...snapshot.catalog.groups.keys()].filter((id) => snapshot.catalog.groups.get(id)!.namespace === 'logical');
    const hostsOf = (snapshot: Snapshot) => [...snapshot.catalog.targets.values()].map((target) => ({ hostname: target.hostname, path: targetPath(target) }));
    const ips = new Map<string, string>(); // one address a host, so no registration clashes
    const ip = (hostname: string) => ips.get(hostname) ?? ips.set(hostname, `${ips.size >> 8}.${ips.size & 255}`).get(hostname)!;
    const target = (hostname: string, group: string) => ({
      path: `targets/${group}/${hostname}.yaml`,
      text: `hostname: ${hostname}\nip_address: 10.8.${ip(hostname)}\nprimary_group: ${group}\nexporters: ${exporters[random(3)]}\n`,
    });
    let renamed = 0;
    const next = (step: number): Snapshot => {
      const roll = random(20);
      const updates: Array<{ path: string; text: string | null }> = [];
      const groups = groupsOf(current);
      const hosts = hostsOf(current);
      if (roll === 0) {
        // A full build from every file: new maps that share nothing with the last compile's.
        return Snapshot.build(new Map(current.files), null);
      } else if (roll === 1) {
        // aami.yaml changes: every target is taken again.
        updates.push({ path: 'aami.yaml', text: `exporters:\n  node_exporter: {job: node, port: 9100}\n  dcgm_exporter: {job: dcgm, port: 9400, metrics_path: /metrics}\n  ipmi_exporter: {job: ipmi, port: ${9290 + random(3)}, interval: 1m}\n` });
      } else if (roll === 2 && groups.length < 6) {
        // A group renamed: a new group file, and the hosts of another move into it.
        const id = `renamed-${renamed++}`;
        const from = groups[random(groups.length)]!;
        updates.push({ path: `groups/${id}.yaml`, text: `id: ${id}\nname: ${id}\nnamespace: logical\nlabels: {step: "${step}"}\n` });
        for (const { hostname, path } of hosts.filter((h) => h.path.startsWith(`targets/${from}/`))) updates.push({ path, text: null }, target(hostname, id));
      } else if (roll === 3) {
        // Every host of a group leaves (the group leaves the map of groups); one may come back later.
        const group = groups[random(groups.length)]!;
        for (const { path } of hosts.filter((h) => h.path.startsWith(`targets/${group}/`))) updates.push({ path, text: null });
      } else {
        // Registrations, moves between groups and removals, one or a batch.
        for (let k = roll >= 18 ? 6 : 1; k > 0; k--) {
          const hostname = `${['a', 'gpu-0', 'zz', 'api-0'][random(4)]}-${random(40)}`;
          const was = hosts.find((h) => h.hostname === hostname)?.path;
          if (updates.some((u) => u.path === was || u.path.endsWith(`/${hostname}.yaml`))) continue;
          if (was && random(4) === 0) updates.push({ path: was, text: null });
          else {
            const change = target(hostname, groups[random(groups.length)]!);
            if (was && was !== change.path) updates.push({ path: was, text: null });
            updates.push(change);
          }
        }
      }
      const draft = new Draft(current);
      const applied = draft.apply(updates.map(({ path, text }) => (text === null ? { path, oid: null } : { path, oid: `${path}@${step}.${random(1e9)}`, parsed: parseFile(path, text) })));
      expect(applied.problems, `step ${step}`).toEqual([]);
      return draft.freeze(null);
    };
    const compilers = { file: new Compiler('file', 2), group: new Compiler('group', 3) };
    for (let step = 0; step < 300; step++) {
      current = next(step);
      snapshots.push(current);
      // Mostly the newest snapshot; now and then one older than the last compiled, adjacent or not.
      const snapshot = random(4) === 0 ? snapshots[random(snapshots.length)]! : current;
      for (const layout of ['file', 'group'] as const) {
        expect(sdText(compilers[layout].compile(snapshot.catalog)), `step ${step}, ${layout}`).toEqual(sdText(new Compiler(layout).compile(snapshot.catalog)));
      }
    }
    expect(renamed).toBeGreaterThan(3);
    expect(new Set(snapshots.map((s) => s.catalog.settings)).size).toBeGreaterThan(3);
  });

  it('renders a full compile a slice at a time beforehand, in both layouts, and only when every target is taken again', () => {
    for (const layout of ['file', 'group'] as const) {
      const live = new LiveCatalog(Snapshot.build(readCheckout(fs, fixture('basic')), null));
      const draft = live.draft();
      const more = Array.from({ length: 25 }, (_, i) => `targets/ml-training/bulk-${i}.yaml`);
      draft.apply(more.map((path, i) => ({ path, oid: `${path}@1`, parsed: parseFile(path, `hostname: bulk-${i}\nip_address: 10.8.0.${i}\nprimary_group: ml-training\n`) })));
      live.publish(draft.freeze(null));
      const catalog = live.snapshot().catalog;
      const compiler = new Compiler(layout);
      const slices = (c = catalog) => [...compiler.prepare(c, 10)].length;
      expect(slices(), layout).toBe(Math.floor(catalog.targets.size / 10));
      const files = compiler.compile(catalog);
      expect(new Map([...files].map(([name, parts]) => [name, Buffer.concat(parts).toString()]))).toEqual(new Map([...new Compiler(layout).compile(catalog)].map(([name, parts]) => [name, Buffer.concat(parts).toString()])));
      expect(slices(), layout).toBe(0); // a registration's compile renders one target: nothing to prepare
      const edit = live.draft();
      edit.apply([{ path: 'groups/api-servers.yaml', oid: 'edited', parsed: parseFile('groups/api-servers.yaml', 'id: api-servers\nname: API\nnamespace: logical\nlabels: {tier: edited}\n') }]);
      live.publish(edit.freeze(null));
      expect(slices(live.snapshot().catalog), layout).toBe(Math.floor(catalog.targets.size / 10));
    }
  });

  it('renders only the targets a change touched, in both layouts, and copies the rest from its last build', () => {
    for (const layout of ['file', 'group'] as const) {
      const live = new LiveCatalog(Snapshot.build(readCheckout(fs, fixture('basic')), null));
      const change = (updates: Array<{ path: string; text: string | null }>) => {
        const draft = live.draft();
        expect(draft.apply(updates.map(({ path, text }) => (text === null ? { path, oid: null } : { path, oid: `${path}@${Math.random()}`, parsed: parseFile(path, text) }))).problems).toEqual([]);
        live.publish(draft.freeze(null));
        return live.snapshot().catalog;
      };
      const bulk = (i: number, group = 'ml-training', ip = `10.8.0.${i}`) => ({ path: `targets/${group}/bulk-${i}.yaml`, text: `hostname: bulk-${i}\nip_address: ${ip}\nprimary_group: ${group}\nexporters: [{type: node_exporter}, {type: dcgm_exporter}]\n` });
      let catalog = change(Array.from({ length: 30 }, (_, i) => bulk(i, i % 2 ? 'ml-training' : 'api-servers')));
      const compiler = new Compiler(layout, 4);
      // What a compiler that never saw the catalog gives, and how many targets it renders for it.
      const checked = (expected: number, step: string, walked?: number) => {
        const before = { rendered: compiler.rendered, walked: compiler.walked };
        expect(sdText(compiler.compile(catalog)), `${layout}: ${step}`).toEqual(sdText(new Compiler(layout).compile(catalog)));
        expect(compiler.rendered - before.rendered, `${layout}: ${step}`).toBe(expected);
        // A change to some targets is patched in: no host of the fleet, or of the group, is walked again.
        if (walked !== undefined) expect(compiler.walked - before.walked, `${layout}: ${step}, hosts walked`).toBe(walked);
      };
      checked(catalog.targets.size, 'first compile');
      checked(0, 'the same catalog');
      const before = compiler.compile(catalog);
      catalog = change([bulk(3, 'ml-training', '10.8.1.3'), bulk(40)]);
      checked(2, 'one target moved and edited, one new', 0);
      // The chunks the change did not fall in are the same buffers: only its own (cut in two if it grew past four hosts) and the last one's view differ.
      // In a group's shard too: its hosts are patched in, not the group built again.
      const name = layout === 'file' ? 'node.json' : 'node/ml-training.json';
      const node = compiler.compile(catalog).get(name)!;
      expect(node.length).toBeGreaterThan(layout === 'file' ? 8 : 5);
      expect(node.filter((part) => !before.get(name)!.includes(part)).length, name).toBeLessThanOrEqual(4);
      catalog = change([{ path: 'targets/ml-training/bulk-5.yaml', text: null }]);
      checked(0, 'one removed', 0);
      // A group edit: the targets of that group (and of its children) again, no other.
      const inApi = [...catalog.targets.values()].filter((t) => [t.primary_group, ...t.groups].includes('api-servers')).length;
      expect(inApi).toBeGreaterThan(10);
      expect(inApi).toBeLessThan(catalog.targets.size - 10);
      catalog = change([{ path: 'groups/api-servers.yaml', text: 'id: api-servers\nname: API\nnamespace: logical\nlabels: {tier: edited}\n' }]);
      checked(inApi, 'a group edited', catalog.targets.size);
      // Every bulk host enrols again (new facts, a new target): the same SD bytes. A later group edit renders that group's hosts, not these.
      const facts = (i: number) => ({ ...bulk(i, i % 2 ? 'ml-training' : 'api-servers'), text: `${bulk(i, i % 2 ? 'ml-training' : 'api-servers').text}facts: {kernel: "6.8"}\n` });
      catalog = change(Array.from({ length: 30 }, (_, i) => i).filter((i) => i !== 3 && i !== 5).map(facts));
      checked(28, 're-enrolled, same bytes');
      const inMl = [...catalog.targets.values()].filter((t) => [t.primary_group, ...t.groups].includes('ml-training')).length;
      catalog = change([{ path: 'groups/ml-training.yaml', text: 'id: ml-training\nname: ML\nnamespace: logical\nlabels: {role: edited}\n' }]);
      checked(inMl, 'another group edited');
      catalog = change([{ path: 'aami.yaml', text: 'exporters:\n  node_exporter: {job: node, port: 9101}\n  dcgm_exporter: {job: dcgm, port: 9400, metrics_path: /metrics}\n  ipmi_exporter: {job: ipmi, port: 9290, interval: 1m}\n' }]);
      checked(catalog.targets.size, 'aami.yaml edited');
    }
  });

  it('keeps its chunks between a quarter and a whole of their size as hosts come in random order and go', () => {
    let seed = 5;
    const random = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), (seed >>> 8) % n);
    let snapshot = Snapshot.build(readCheckout(fs, fixture('basic')), null);
    const ids = Array.from({ length: 640 }, (_, i) => i);
    for (let i = ids.length - 1; i > 0; i--) {
      const j = random(i + 1);
      [ids[i], ids[j]] = [ids[j]!, ids[i]!];
    }
    const path = (i: number) => `targets/ml-training/host-${i}.yaml`;
    const compiler = new Compiler('file', 8);
    const chunks = () => compiler.compile(snapshot.catalog).get('node.json')!.length - 2; // [OPEN, chunks..., CLOSE]
    const commit = (batch: number[], text: (i: number) => string | null) => {
      const draft = new Draft(snapshot);
      expect(draft.apply(batch.map((i) => (text(i) === null ? { path: path(i), oid: null } : { path: path(i), oid: `${path(i)}@1`, parsed: parseFile(path(i), text(i)!) }))).problems).toEqual([]);
      snapshot = draft.freeze(null);
    };
    chunks();
    // Registrations in commits of 16, in random order: cut at the chunk size, each insert into a full chunk left a chunk of one host.
    for (let k = 0; k < ids.length; k += 16) {
      commit(ids.slice(k, k + 16), (i) => `hostname: host-${i}\nip_address: 10.6.${i >> 8}.${i & 255}\nprimary_group: ml-training\n`);
      chunks();
    }
    const hosts = snapshot.catalog.targets.size;
    expect(chunks()).toBeLessThanOrEqual(Math.ceil(hosts / 4));
    // Nine in ten leave, one by one.
    for (const i of ids.filter((_, n) => n % 10)) {
      commit([i], () => null);
      chunks();
    }
    expect(chunks()).toBeLessThanOrEqual(Math.ceil(snapshot.catalog.targets.size / 2));
    expect(sdText(compiler.compile(snapshot.catalog))).toEqual(sdText(new Compiler('file').compile(snapshot.catalog)));
  });

  it('compiles a catalog after a prepare() of another one as a fresh compiler would (group layout)', () => {
    const base = Snapshot.build(readCheckout(fs, fixture('basic')), null);
    const edit = (updates: Array<[string, string]>) => {
      const draft = new Draft(base);
      expect(draft.apply(updates.map(([path, t]) => ({ path, oid: `${path}@${t.length}`, parsed: parseFile(path, t) }))).problems).toEqual([]);
      return draft.freeze(null).catalog;
    };
    // aami.yaml edited (dcgm renamed to job gpu): prepare() of it builds every shard again.
    const renamed = edit([['aami.yaml', 'exporters:\n  node_exporter: {job: node, port: 9100}\n  dcgm_exporter: {job: gpu, port: 9400}\n  ipmi_exporter: {job: ipmi, port: 9290}\n']]);
    // gpu-01 drops its dcgm exporter: ml-training has no dcgm host left, so its dcgm shard goes.
    const dropped = edit([['targets/ml-training/gpu-01.yaml', 'hostname: gpu-01\nip_address: 10.0.1.21\nprimary_group: ml-training\nexporters: [{type: node_exporter}]\n']]);
    const compiler = new Compiler('group');
    compiler.compile(base.catalog);
    for (const _ of compiler.prepare(renamed, 1));
    expect(sdText(compiler.compile(dropped))).toEqual(sdText(new Compiler('group').compile(dropped)));
  });

  it('gives what a fresh compiler gives through random changes: chunks of 1-3 hosts, both layouts, old snapshots, prepare() now and then, same-bytes edits, unknown and disabled exporters', () => {
    let seed = 101;
    const random = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), (seed >>> 8) % n);
    const exporters = [
      '[]',
      '[{type: node_exporter}]',
      '[{type: node_exporter, port: 9200, scheme: https}]',
      '[{type: node_exporter, enabled: false}, {type: dcgm_exporter}]',
      '[{type: custom_exporter}, {type: node_exporter}]',
      '[{type: dcgm_exporter}, {type: ipmi_exporter}, {type: custom_exporter, port: 7000}]',
      '[{type: custom_exporter, enabled: false}]',
      '[{type: ipmi_exporter, interval: 2m}]',
    ];
    const settingsVariants = [
      'exporters:\n  node_exporter: {job: node, port: 9100}\n  dcgm_exporter: {job: dcgm, port: 9400, metrics_path: /metrics}\n  ipmi_exporter: {job: ipmi, port: 9290, interval: 1m}\n',
      'exporters:\n  node_exporter: {job: node, port: 9100}\n  dcgm_exporter: {job: dcgm, port: 9400, metrics_path: /metrics}\n  ipmi_exporter: {job: ipmi, port: 9290, interval: 1m}\n  custom_exporter: {job: cust, port: 9999}\n',
      'exporters:\n  node_exporter: {job: node, port: 9100}\n  dcgm_exporter: {job: dcgm, port: 9400}\n',
      'exporters:\n  node_exporter: {job: nodes, port: 9101}\n  dcgm_exporter: {job: dcgm, port: 9400, metrics_path: /metrics}\n  ipmi_exporter: {job: ipmi, port: 9290, interval: 1m}\n  custom_exporter: {job: custom, port: 9999}\n',
    ];
    const primaries = ['ml-training', 'api-servers', 'lg-a', 'lg-b'];
    const extras = ['production', 'production-critical', 'env-x'];
    let current = Snapshot.build(readCheckout(fs, fixture('basic')), null);
    const apply = (updates: Array<{ path: string; text: string | null }>, step: number) => {
      const draft = new Draft(current);
      draft.apply(updates.map(({ path, text }) => (text === null ? { path, oid: null } : { path, oid: `${path}@${step}.${random(1e9)}`, parsed: parseFile(path, text) })));
      return draft.freeze(null);
    };
    current = apply([
      { path: 'groups/lg-a.yaml', text: 'id: lg-a\nname: a\nnamespace: logical\nlabels: {k: a}\n' },
      { path: 'groups/lg-b.yaml', text: 'id: lg-b\nname: b\nnamespace: logical\nparent: lg-a\nlabels: {k2: b}\n' },
      { path: 'groups/env-x.yaml', text: 'id: env-x\nname: x\nnamespace: environment\nlabels: {x: "1"}\n' },
    ], 0);
    const snapshots = [current];
    const targetText = (hostname: string, group: string, n: number) => {
      const g = random(3) === 0 ? `\ngroups: [${extras[random(3)]}${random(2) ? `, ${extras[random(3)]}` : ''}]` : '';
      const labels = random(3) === 0 ? `\nlabels: {l: "${random(3)}"}` : '';
      return `hostname: ${hostname}\nip_address: 10.7.${n >> 8}.${n & 255}\nprimary_group: ${group}${g}${labels}\nexporters: ${exporters[random(exporters.length)]}\nfacts: {kernel: "k${random(1000)}"}\n`;
    };
    const where = new Map<string, { path: string; text: string }>();
    const names = ['a', 'b-0', 'gpu-0', 'gpu-01x', 'zz', 'api-0', 'm'];
    const compilers = [new Compiler('file', 1), new Compiler('file', 2), new Compiler('file', 3), new Compiler('group', 1), new Compiler('group', 2), new Compiler('group', 3)];
    for (let step = 1; step < 400; step++) {
      const roll = random(30);
      const updates: Array<{ path: string; text: string | null }> = [];
      if (roll === 0) {
        current = Snapshot.build(new Map(current.files), null);
      } else {
        if (roll === 1) updates.push({ path: 'aami.yaml', text: settingsVariants[random(settingsVariants.length)]! });
        else if (roll === 2) updates.push({ path: 'groups/lg-a.yaml', text: `id: lg-a\nname: a\nnamespace: logical\nlabels: {k: a${random(3)}}\n` });
        else if (roll === 3) updates.push({ path: 'groups/lg-b.yaml', text: `id: lg-b\nname: b\nnamespace: logical${random(2) ? '\nparent: lg-a' : ''}\nlabels: {k2: b}\n` });
        else if (roll === 4) updates.push({ path: 'groups/env-x.yaml', text: `id: env-x\nname: x\nnamespace: environment\nlabels: {x: "${random(3)}"}\n` });
        else if (roll === 5) {
          // facts only: same bytes, new Target objects
          for (const [h, w] of where) if (random(2)) { const t = w.text.replace(/kernel: "k\d+"/, `kernel: "k${random(1000)}"`); updates.push({ path: w.path, text: t }); where.set(h, { path: w.path, text: t }); }
        } else if (roll === 6) {
          // all hosts of one group leave
          const g = primaries[random(4)]!;
          for (const [h, w] of where) if (w.path.startsWith(`targets/${g}/`)) { updates.push({ path: w.path, text: null }); where.delete(h); }
        } else {
          for (let k = roll >= 26 ? 8 : 1; k > 0; k--) {
            const n = random(60);
            const hostname = `${names[n % names.length]}-${n}`;
            if (updates.some((u) => u.path.endsWith(`/${hostname}.yaml`))) continue;
            const was = where.get(hostname);
            if (was && random(4) === 0) { updates.push({ path: was.path, text: null }); where.delete(hostname); continue; }
            const group = primaries[random(4)]!;
            const path = `targets/${group}/${hostname}.yaml`;
            const t = random(3) === 0 && was && was.path === path ? was.text.replace(/kernel: "k\d+"/, `kernel: "k${random(1000)}"`) : targetText(hostname, group, n);
            if (was && was.path !== path) updates.push({ path: was.path, text: null });
            updates.push({ path, text: t });
            where.set(hostname, { path, text: t });
          }
        }
        if (updates.length) current = apply(updates, step);
      }
      snapshots.push(current);
      const snapshot = random(5) === 0 ? snapshots[random(snapshots.length)]! : current;
      for (const compiler of compilers) {
        const c = compiler as any;
        const label = `step ${step} ${c.layout}/${c.chunk}`;
        const r = random(6);
        if (r === 0) for (const _ of compiler.prepare(snapshot.catalog, 3));
        expect(sdText(compiler.compile(snapshot.catalog)), label).toEqual(sdText(new Compiler(c.layout).compile(snapshot.catalog)));
        chunksHold(c, label);
      }
    }
    expect(new Set(snapshots.map((s) => s.catalog.settings)).size).toBeGreaterThan(3);
  });

  it('writes an empty list for a job without targets', () => {
    expect(compile(Snapshot.build(new Map(), null).catalog)).toEqual(new Map([['node.json', Buffer.from('[]\n')], ['dcgm.json', Buffer.from('[]\n')]]));
  });
});

/** A compiler's chunks (white box): none empty or past its size, hosts in order, offsets that span the bytes. */
function chunksHold(compiler: any, label: string): void {
  const files = compiler.layout === 'file' ? [...(compiler.whole?.files.values() ?? [])] : [...compiler.shards.values()].flatMap((shard: any) => [...shard.files.values()]);
  for (const file of files) {
    let last = '';
    for (const chunk of file.chunks) {
      expect(chunk.hosts.length, label).toBeGreaterThan(0);
      expect(chunk.hosts.length, label).toBeLessThanOrEqual(compiler.chunk);
      expect(chunk.offsets.length, label).toBe(chunk.hosts.length + 1);
      expect(chunk.offsets[chunk.hosts.length], label).toBe(chunk.runs.length);
      for (const host of chunk.hosts) {
        expect(host.hostname > last, label).toBe(true);
        last = host.hostname;
      }
    }
  }
}

const files = (name: string, text: string) => new Map([[name, Buffer.from(text)]]);

/**
 * node:fs whose FileHandles' writev goes through `each`: it sees where a write starts and
 * gives the chunks to write (fewer: a write stopped part way, as libuv's at a full disk);
 * `written` hears where each write started and the bytes it wrote.
 */
function writevThrough(each: (buffers: Buffer[], position: number) => Buffer[], written: (position: number, bytes: number) => void = () => undefined): typeof fs {
  return fsWith({}, {
    open: (async (...args: Parameters<typeof fs.promises.open>) => {
      const handle = await fs.promises.open(...args);
      const writev = handle.writev.bind(handle);
      handle.writev = (async (buffers: Buffer[], position?: number) => {
        const done = await writev(each(buffers, position ?? 0), position);
        written(position ?? 0, done.bytesWritten);
        return done;
      }) as typeof handle.writev;
      return handle;
    }) as typeof fs.promises.open,
  });
}

describe('SdOutput', () => {
  const memfs = () => createFsFromVolume(new Volume()) as unknown as Fs;

  it('writes files atomically and leaves no temp files behind', async () => {
    const mfs = memfs();
    const output = new SdOutput(mfs, '/sd');
    await output.write(files('node.json', '[]\n'));
    expect(mfs.readdirSync('/sd')).toEqual(['node.json']);
    expect(mfs.readFileSync('/sd/node.json', 'utf8')).toBe('[]\n');
  });

  it('does not rewrite a file whose content did not change', async () => {
    const mfs = memfs();
    const output = new SdOutput(mfs, '/sd');
    expect((await output.write(files('node.json', '[1]\n'))).written).toEqual(['node.json']);
    const before = mfs.statSync('/sd/node.json');
    expect((await output.write(files('node.json', '[1]\n'))).written).toEqual([]);
    // a fresh writer (a restart) compares with what is on disk
    expect((await new SdOutput(mfs, '/sd').write(files('node.json', '[1]\n'))).written).toEqual([]);
    expect(mfs.statSync('/sd/node.json').ino).toBe(before.ino);
  });

  it('does not rewrite, after a restart, a file a compile gives in parts', async () => {
    const mfs = memfs();
    const parts = ['[\n', '  {"a": 1}', ',\n', '  {"b": 2}', '\n]\n'].map((text) => Buffer.from(text));
    expect((await new SdOutput(mfs, '/sd').write(new Map([['node.json', parts]]))).written).toEqual(['node.json']);
    const ino = mfs.statSync('/sd/node.json').ino;
    const restarted = new SdOutput(mfs, '/sd');
    expect((await restarted.write(new Map([['node.json', parts]]))).written).toEqual([]);
    expect(mfs.statSync('/sd/node.json').ino).toBe(ino);
    // one byte different, cut differently: written
    const changed = [...parts.slice(0, 3), Buffer.from('  {"b": 3}'), parts[4]!];
    expect((await restarted.write(new Map([['node.json', changed]]))).written).toEqual(['node.json']);
    expect(mfs.readFileSync('/sd/node.json', 'utf8')).toBe('[\n  {"a": 1},\n  {"b": 3}\n]\n');
  });

  it('after a restart, reads each file back to compare it, whatever its size, and rewrites only those that differ', async () => {
    const mfs = memfs();
    // Sizes that grow and shrink, so the buffer they are read into is grown and reused.
    const texts = new Map(['a', 'b', 'c', 'd', 'e'].map((name, i) => [`node/${name}.json`, `[\n${'x'.repeat([10, 5000, 20, 100_000, 7][i]!)}\n]\n`]));
    const asFiles = (map: Map<string, string>) => new Map([...map].map(([name, text]) => [name, [Buffer.from(text)]]));
    expect((await new SdOutput(mfs, '/sd').write(asFiles(texts))).written.sort()).toEqual([...texts.keys()].sort());
    // The same sizes, one byte different in b and d; e one byte longer; the rest the same.
    const next = new Map(texts);
    next.set('node/b.json', texts.get('node/b.json')!.replace('xx\n]', 'xy\n]'));
    next.set('node/d.json', `[\ny${texts.get('node/d.json')!.slice(3)}`);
    next.set('node/e.json', texts.get('node/e.json')!.replace('x\n]', 'xx\n]'));
    expect((await new SdOutput(mfs, '/sd').write(asFiles(next))).written.sort()).toEqual(['node/b.json', 'node/d.json', 'node/e.json']);
    for (const [name, text] of next) expect(mfs.readFileSync(`/sd/${name}`, 'utf8')).toBe(text);
    // A file gone from disk is written again.
    mfs.unlinkSync('/sd/node/a.json');
    expect((await new SdOutput(mfs, '/sd').write(asFiles(next))).written).toEqual(['node/a.json']);
  });

  it('compares lists of buffers by their bytes, however each is cut', () => {
    let seed = 7;
    const random = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const cut = (bytes: Buffer) => {
      const parts: Buffer[] = [];
      for (let at = 0; at < bytes.length || !parts.length; ) {
        const n = random(4) === 0 ? 0 : 1 + random(6); // empty parts too
        parts.push(bytes.subarray(at, Math.min(bytes.length, at + n)));
        at += n;
      }
      return parts;
    };
    for (let i = 0; i < 500; i++) {
      const bytes = Buffer.from(Array.from({ length: random(40) }, () => 97 + random(3)));
      const other = Buffer.from(bytes);
      const mutation = random(3);
      if (mutation === 1 && other.length) {
        const at = random(other.length);
        other[at] = other[at]! ^ 1;
      }
      const different = mutation === 2 ? Buffer.concat([other, Buffer.from('a')]) : other;
      expect(sameParts(cut(bytes), cut(different)), `${bytes} vs ${different}`).toBe(bytes.equals(different));
    }
    // As many parts, cut at other places (chunks a build cut elsewhere around the same entries).
    const b = (text: string) => Buffer.from(text);
    expect(sameParts([b('ab'), b('c'), b('de')], [b('ab'), b('cd'), b('e')])).toBe(true);
    expect(sameParts([b('ab'), b('c'), b('de')], [b('ab'), b('cd'), b('f')])).toBe(false);
  });

  it('never writes through a link planted at its temp name (an SD directory others can write)', async () => {
    const dir = fs.mkdtempSync(join(tmpdir(), 'aami-sd-link-'));
    try {
      const victim = join(dir, 'victim');
      fs.writeFileSync(victim, 'not the SD writer\'s\n');
      fs.mkdirSync(join(dir, 'sd'));
      // Another user's link at the temp name, put there the moment before the server opens it.
      const planted: string[] = [];
      const linking = fsWith({}, {
        open: ((path: string, ...rest: [never, never]) => {
          if (path.endsWith('.tmp') && !planted.length) fs.symlinkSync(victim, path), planted.push(path);
          return fs.promises.open(path, ...rest);
        }) as typeof fs.promises.open,
      });
      const output = new SdOutput(linking, join(dir, 'sd'));
      await output.write(files('node.json', '[\n  1\n]\n'));
      expect(planted).toHaveLength(1);
      expect(fs.readFileSync(victim, 'utf8')).toBe('not the SD writer\'s\n');
      expect(fs.lstatSync(join(dir, 'sd/node.json')).isFile()).toBe(true);
      expect(fs.readFileSync(join(dir, 'sd/node.json'), 'utf8')).toBe('[\n  1\n]\n');
      expect(fs.readdirSync(join(dir, 'sd'))).toEqual(['node.json']); // the link removed, no temp file left
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('removes at its first write the temp files a killed server left, and no write at work', async () => {
    const dir = fs.mkdtempSync(join(tmpdir(), 'aami-sd-leftovers-'));
    try {
      fs.mkdirSync(join(dir, 'node'), { recursive: true });
      const old = new Date(Date.now() - 10 * 60_000);
      const put = (name: string, age?: Date) => (fs.writeFileSync(join(dir, name), '[partial'), age && fs.utimesSync(join(dir, name), age, age), name);
      const leftovers = [put('.node.json.4242.t0a1b2c3d.7.tmp', old), put('node/.gpu.json.4242.t0a1b2c3d.3.tmp', old), put('.node.json.4242.5.tmp', old)];
      // Young (another process writing now), this process's own, and names not of the SD writer.
      const kept = [put('.node.json.4242.t0a1b2c3d.8.tmp'), put(`.node.json.${process.pid}.${PROCESS_TAG}.9.tmp`, old), put('notes.tmp', old), put('.editor.swp.tmp', old)];
      await new SdOutput(fs, dir).write(files('node/gpu.json', '[]\n'));
      expect(leftovers.filter((name) => fs.existsSync(join(dir, name)))).toEqual([]);
      expect(kept.filter((name) => fs.existsSync(join(dir, name)))).toEqual(kept);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads back no FIFO and follows no link where an SD file goes: it writes the file in their place', async () => {
    const dir = fs.mkdtempSync(join(tmpdir(), 'aami-sd-fifo-'));
    try {
      const text = '[\n  1\n]\n';
      // A FIFO: opened to be compared, it held a thread of the pool for good (four held all file I/O).
      fs.mkdirSync(join(dir, 'sd/node'), { recursive: true });
      execFileSync('mkfifo', [join(dir, 'sd/node/gpu.json')]);
      // A link to a file with the very bytes: taken as written, the SD file stayed a link someone else's file decides.
      fs.writeFileSync(join(dir, 'elsewhere.json'), text);
      fs.symlinkSync(join(dir, 'elsewhere.json'), join(dir, 'sd/node/db.json'));
      const written = await new SdOutput(fs, join(dir, 'sd')).write(new Map([['node/gpu.json', Buffer.from(text)], ['node/db.json', Buffer.from(text)]]));
      expect(written.written).toEqual(['node/db.json', 'node/gpu.json']);
      for (const name of ['gpu.json', 'db.json']) {
        expect(fs.lstatSync(join(dir, 'sd/node', name)).isFile(), name).toBe(true);
        expect(fs.readFileSync(join(dir, 'sd/node', name), 'utf8')).toBe(text);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('writes and removes no shard through a link put in place of a job\'s directory: the write fails, nothing where it points changes', async () => {
    const dir = fs.mkdtempSync(join(tmpdir(), 'aami-sd-shard-link-'));
    try {
      const victim = join(dir, 'victim');
      fs.mkdirSync(victim);
      fs.writeFileSync(join(victim, 'db.json'), 'theirs');
      const text = (n: number) => Buffer.from(`[\n${n}\n]\n`);
      // A first write, the job's directory a link: nothing written through it.
      fs.mkdirSync(join(dir, 'sd'));
      fs.symlinkSync(victim, join(dir, 'sd/node'));
      await expect(new SdOutput(fs, join(dir, 'sd')).write(new Map([['node/gpu.json', text(1)]]))).rejects.toThrow(/sd\/node is not a directory/);
      expect(fs.readdirSync(victim)).toEqual(['db.json']);
      // A server that wrote the directory, then finds it a link when a group's shard goes.
      fs.rmSync(join(dir, 'sd/node'));
      const output = new SdOutput(fs, join(dir, 'sd'));
      const first = PMap.from(new Map([['node/gpu.json', [text(1)]], ['node/db.json', [text(2)]]]));
      await output.write(first);
      fs.renameSync(join(dir, 'sd/node'), join(dir, 'real'));
      fs.symlinkSync(victim, join(dir, 'sd/node'));
      const draft = first.edit();
      draft.delete('node/db.json');
      await expect(output.write(draft.freeze())).rejects.toThrow(/sd\/node is not a directory/);
      expect(fs.readFileSync(join(victim, 'db.json'), 'utf8')).toBe('theirs');
      // Nor a shard changed once the directory was made and written.
      const again = new SdOutput(fs, join(dir, 'sd2'));
      await again.write(first);
      fs.renameSync(join(dir, 'sd2/node'), join(dir, 'real2'));
      fs.symlinkSync(victim, join(dir, 'sd2/node'));
      const changed = first.edit();
      changed.set('node/gpu.json', [text(3)]);
      await expect(again.write(changed.freeze())).rejects.toThrow(/sd2\/node is not a directory/);
      expect(fs.readdirSync(victim)).toEqual(['db.json']);
      expect(fs.readFileSync(join(victim, 'db.json'), 'utf8')).toBe('theirs');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('syncs an SD file before it names it, and does not sync the directory for the rename', async () => {
    const dir = fs.mkdtempSync(join(tmpdir(), 'aami-sd-sync-'));
    try {
      // Every fsync, by the path opened: a directory sync shows as the directory's path.
      const synced: string[] = [];
      const syncs = seeingSyncs((path) => synced.push(path.replace(dir, '<sd>').replace(/\.\d+\.t[0-9a-f]+\.\d+\.tmp$/, '.tmp')));
      const watched = fsWith(syncs.sync, syncs.promises);
      const output = new SdOutput(watched, dir);
      await output.write(files('node/gpu.json', '[\n  1\n]\n'));
      expect(synced).toEqual(['<sd>/node/.gpu.json.tmp']);
      expect(fs.readFileSync(join(dir, 'node/gpu.json'), 'utf8')).toBe('[\n  1\n]\n');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('writes several files at once, and answers a failure only when no write is in flight', async () => {
    const dir = fs.mkdtempSync(join(tmpdir(), 'aami-sd-lanes-'));
    try {
      let inFlight = 0;
      let most = 0;
      let renames = 0;
      let failAt = 30;
      // Each write's open-to-rename counted; the 30th rename fails (a full disk), after a little wait.
      const promises = new Proxy(fs.promises, {
        get: (target, key) => {
          if (key === 'open') {
            return async (...args: unknown[]) => {
              const handle = await (target.open as (...a: unknown[]) => Promise<fs.promises.FileHandle>)(...args);
              if (args[1] === 'wx') most = Math.max(most, ++inFlight); // a temp file (a read back is opened 'r')
              return handle;
            };
          }
          if (key === 'rename') {
            return async (...args: unknown[]) => {
              await new Promise((resolve) => setTimeout(resolve, renames % 3));
              inFlight--;
              if (++renames === failAt) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
              return (target.rename as (...a: unknown[]) => Promise<void>)(...args);
            };
          }
          return Reflect.get(target, key);
        },
      });
      const output = new SdOutput(new Proxy(fs, { get: (target, key) => (key === 'promises' ? promises : Reflect.get(target, key)) }) as Fs, dir);
      const shards = new Map(Array.from({ length: 100 }, (_, i) => [`node/g${i}.json`, Buffer.from(`["g${i}"]\n`)]));
      await expect(output.write(shards)).rejects.toThrow('ENOSPC');
      expect(inFlight).toBe(0);
      expect(most).toBeGreaterThan(1);
      expect(most).toBeLessThanOrEqual(16);
      expect(fs.readdirSync(join(dir, 'node')).filter((name) => name.endsWith('.tmp'))).toEqual([]);
      failAt = -1;
      await output.write(shards);
      expect(new Map(fs.readdirSync(join(dir, 'node')).map((name) => [`node/${name}`, fs.readFileSync(join(dir, 'node', name))]))).toEqual(shards);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('writes a big file into the one it replaced, once that one was replaced RETIRED_MS ago: never into one a reader may still hold', async () => {
    const dir = fs.mkdtempSync(join(tmpdir(), 'aami-sd-spare-'));
    try {
      let clock = 0;
      // What touched the spare, in order: it is synced before it takes the file's name.
      const steps: string[] = [];
      const spareName = `.node.json.${process.pid}.${PROCESS_TAG}.spare.tmp`;
      const short = (path: string) => (path === dir ? '<dir>' : path.replace(`${dir}/`, ''));
      const syncs = seeingSyncs((path) => steps.push(`sync ${short(path)}`));
      const watched = fsWith(syncs.sync, {
        ...syncs.promises,
        rename: (async (from: string, to: string) => (steps.push(`rename ${short(from)} ${short(to)}`), fs.promises.rename(from, to))) as typeof fs.promises.rename,
      });
      const output = new SdOutput(watched, dir, { spareFrom: 16, now: () => clock });
      const path = join(dir, 'node.json');
      const version = (n: number) => `[\n  "version ${n}"${' '.repeat(n % 3)}\n]\n`; // lengths that grow and shrink
      const write = async (n: number) => {
        expect((await output.write(files('node.json', version(n)))).written).toEqual(['node.json']);
        expect(fs.readFileSync(path, 'utf8')).toBe(version(n));
        return fs.statSync(path).ino;
      };
      const inodes = [await write(1), await write(2)];
      // The file the second write replaced is the spare now, as it was.
      expect(fs.readdirSync(dir).sort()).toEqual([spareName, 'node.json']);
      expect(fs.statSync(join(dir, spareName)).ino).toBe(inodes[0]);
      expect(fs.readFileSync(join(dir, spareName), 'utf8')).toBe(version(1));
      // A reader that opened the file before it was replaced is still reading: the spare is too young to be written.
      const reader = fs.openSync(path, 'r');
      try {
        clock += RETIRED_MS - 1;
        inodes.push(await write(3));
        clock += RETIRED_MS - 1;
        inodes.push(await write(4));
        expect(fs.readFileSync(reader, 'utf8')).toBe(version(2));
      } finally {
        fs.closeSync(reader);
      }
      // Each a new file (a number freed may come back, so only those of files still held are compared).
      expect(inodes[1]).not.toBe(inodes[0]);
      expect(inodes[2]).not.toBe(inodes[1]);
      expect([inodes[1], inodes[2]]).not.toContain(inodes[3]);
      // Replaced RETIRED_MS ago: written over, whether the file grows or shrinks.
      clock += RETIRED_MS;
      steps.length = 0;
      expect(await write(5)).toBe(inodes[2]);
      // The renames that made it the spare are synced before it is written over.
      expect(steps).toEqual(['sync <dir>', `sync ${spareName}`, `rename ${spareName} node.json`, `rename .node.json.${process.pid}.${PROCESS_TAG}.kept.tmp ${spareName}`]);
      clock += RETIRED_MS;
      expect(await write(6)).toBe(inodes[3]);
      expect(fs.readFileSync(join(dir, spareName), 'utf8')).toBe(version(5));
      expect(fs.readdirSync(dir).sort()).toEqual([spareName, 'node.json']);
      // A file under spareFrom is written new, and its spare goes.
      expect((await output.write(files('node.json', '[]\n'))).written).toEqual(['node.json']);
      expect(fs.readdirSync(dir)).toEqual(['node.json']);
      await write(7);
      await write(8);
      await output.close();
      expect(fs.readdirSync(dir)).toEqual(['node.json']);
      expect(fs.readFileSync(path, 'utf8')).toBe(version(8));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('writes a spare from its first chunk that changed: the chunks it holds already are not written again; one changed by anyone else is written whole', async () => {
    const dir = fs.mkdtempSync(join(tmpdir(), 'aami-sd-spare-from-'));
    try {
      let clock = 0;
      // Every write of chunks: where in the file it starts, and the bytes it wrote.
      const writes: Array<[number, number]> = [];
      let cutShort = false; // the next write stops after its first chunk, as at a full disk
      const watched = writevThrough(
        (buffers) => (cutShort ? buffers.slice(0, 1) : buffers),
        (position, bytes) => writes.push([position, bytes]),
      );
      const output = new SdOutput(watched, dir, { spareFrom: 16, now: () => clock });
      const path = join(dir, 'node.json');
      const spare = join(dir, `.node.json.${process.pid}.${PROCESS_TAG}.spare.tmp`);
      const write = async (parts: Buffer[]) => {
        writes.length = 0;
        await output.write(new Map([['node.json', parts]]));
        expect(fs.readFileSync(path)).toEqual(Buffer.concat(parts));
        return [...writes];
      };
      const [open, a, b, x] = ['[\n', '  "a",\n', '  "b",\n', '  "x",\n'].map((text) => Buffer.from(text)) as [Buffer, Buffer, Buffer, Buffer];
      // Each version's closing chunk made anew (as the compiler cuts the last chunk's view anew: the
      // same bytes in memory as before, or not); the chunks before it shared as the compiler shares them.
      let versions = 0;
      const close = () => Buffer.from(`]${' '.repeat(versions++ % 2)}\n`); // each version's bytes differ from the last's
      const last = Buffer.from('  "c",\n');
      const c = () => last.subarray(0, last.length - 2); // a view of the same bytes each time
      const lengthOf = (...parts: Buffer[]) => parts.reduce((sum, part) => sum + part.length, 0);
      await write([open, a, b, c(), close()]);
      const v2 = [open, a, b, c(), close()];
      expect(await write(v2)).toEqual([[0, lengthOf(...v2)]]); // a new file: the first one is the spare now
      // Into the spare (the first version): all but its closing chunk are there already.
      clock += RETIRED_MS;
      const end3 = close();
      expect(await write([open, a, b, c(), end3])).toEqual([[lengthOf(open, a, b, c()), end3.length]]);
      // A chunk amid them changed (x is as long as b: told apart all the same): from it on.
      clock += RETIRED_MS;
      const end4 = close();
      expect(await write([open, a, x, c(), end4])).toEqual([[lengthOf(open, a), lengthOf(x, c(), end4)]]);
      // The spare touched by someone else (its last write moved): written whole.
      clock += RETIRED_MS;
      const later = new Date(Date.now() + 60_000);
      fs.utimesSync(spare, later, later);
      const v5 = [open, a, x, c(), close()];
      expect(await write(v5)).toEqual([[0, lengthOf(...v5)]]);
      // Written over in place by someone else, its size and last write put back as they were: its last change tells it.
      clock += RETIRED_MS;
      const was = fs.statSync(spare, { bigint: true });
      const fd = fs.openSync(spare, 'r+');
      fs.writeSync(fd, Buffer.from('{'), 0, 1, 0);
      fs.closeSync(fd);
      // To the nanosecond (utimes takes a number of seconds, which cannot hold it).
      execFileSync('touch', ['-m', '-d', `@${was.mtimeNs / 1_000_000_000n}.${String(was.mtimeNs % 1_000_000_000n).padStart(9, '0')}`, spare]);
      expect(fs.statSync(spare, { bigint: true }).mtimeNs).toBe(was.mtimeNs);
      const v6 = [open, a, x, c(), close()];
      expect(await write(v6)).toEqual([[0, lengthOf(...v6)]]);
      // A shorter file (past spareFrom still) into a longer spare: from the chunk that changed, cut to its length.
      clock += RETIRED_MS;
      const end7 = close();
      expect(await write([open, a, x, end7])).toEqual([[lengthOf(open, a, x), end7.length]]);
      // A second name given to the spare: never written through, so a file made anew, and written whole.
      clock += RETIRED_MS;
      fs.linkSync(spare, join(dir, 'second-name'));
      const v8 = [open, a, b, close()];
      expect(await write(v8)).toEqual([[0, lengthOf(...v8)]]);
      // A write into the spare cut short: refused, the file as it was, the spare gone with what it held;
      // the next write (no spare now) is whole.
      clock += RETIRED_MS;
      await write([open, a, b, c(), close()]);
      clock += RETIRED_MS;
      cutShort = true;
      const before = fs.readFileSync(path);
      await expect(output.write(new Map([['node.json', [open, a, x, c(), close()]]]))).rejects.toThrow(/bytes written/);
      cutShort = false;
      expect(fs.readFileSync(path)).toEqual(before);
      clock += RETIRED_MS;
      const v11 = [open, a, x, c(), close()];
      expect(await write(v11)).toEqual([[0, lengthOf(...v11)]]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('never writes through a link or a second name put in place of its spare: it makes the spare anew', async () => {
    const dir = fs.mkdtempSync(join(tmpdir(), 'aami-sd-spare-link-'));
    try {
      let clock = 0;
      const victim = join(dir, 'victim');
      const spare = join(dir, 'sd', `.node.json.${process.pid}.${PROCESS_TAG}.spare.tmp`);
      const output = new SdOutput(fs, join(dir, 'sd'), { spareFrom: 1, now: () => clock });
      // A link, a second name of another file, and (run as root) a file of another user's put there.
      const plants = [(to: string) => fs.symlinkSync(victim, to), (to: string) => fs.linkSync(victim, to)];
      if (process.getuid?.() === 0) plants.push((to: string) => (fs.writeFileSync(to, 'not the SD writer\'s\n'), fs.chownSync(to, 65534, 65534)));
      for (const plant of plants) {
        fs.writeFileSync(victim, 'not the SD writer\'s\n');
        await output.write(files('node.json', '[\n  1\n]\n'));
        await output.write(files('node.json', '[\n  2\n]\n'));
        expect(fs.existsSync(spare)).toBe(true);
        fs.rmSync(spare);
        plant(spare);
        clock += RETIRED_MS;
        await output.write(files('node.json', '[\n  3 \n]\n'));
        expect(fs.readFileSync(victim, 'utf8')).toBe('not the SD writer\'s\n');
        expect(fs.readFileSync(join(dir, 'sd/node.json'), 'utf8')).toBe('[\n  3 \n]\n');
        expect(fs.statSync(join(dir, 'sd/node.json')).uid).toBe(process.getuid?.());
        expect(fs.lstatSync(join(dir, 'sd/node.json')).nlink).toBe(1);
        // What was planted is not the file's any more, nor the spare, which is the file replaced.
        expect(fs.readFileSync(spare, 'utf8')).toBe('[\n  2\n]\n');
        clock += RETIRED_MS;
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('removes a file\'s spare with the file, and a killed server\'s spares and kept files a while after its first write, with no write needed', async () => {
    const dir = fs.mkdtempSync(join(tmpdir(), 'aami-sd-spare-gone-'));
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      let clock = 0;
      const output = new SdOutput(fs, dir, { spareFrom: 1, now: () => clock });
      const both = (text: string) => new Map([['node.json', Buffer.from(text)], ['dcgm.json', Buffer.from(text)]]);
      // Another server's, killed a moment ago (a restart at once): too young for the first write's look.
      fs.mkdirSync(join(dir, 'node'));
      const put = (name: string) => (fs.writeFileSync(join(dir, name), '[partial'), name);
      const killed = [put('.node.json.4242.t0a1b2c3d.spare.tmp'), put('.dcgm.json.4242.t0a1b2c3d.kept.tmp'), put('node/.gpu.json.4242.t0a1b2c3d.spare.tmp')];
      await output.write(both('[1]\n'));
      await output.write(both('[2]\n'));
      expect(fs.readdirSync(dir).filter((name) => name.includes('.spare.')).length).toBe(3);
      // dcgm.json is no job's any more: it goes, and its spare with it.
      await output.write(files('node.json', '[3]\n'));
      const own = `.node.json.${process.pid}.${PROCESS_TAG}.spare.tmp`;
      expect(fs.readdirSync(dir).sort()).toEqual([...killed.filter((name) => !name.includes('/')), own, 'node', 'node.json'].sort());
      // Two and a half minutes on, they are older than leftoverTemp takes, and looked for again: no write needed.
      const old = new Date(Date.now() - 3 * 60_000);
      for (const name of killed) fs.utimesSync(join(dir, name), old, old);
      await vi.advanceTimersByTimeAsync(LOOK_AGAIN_MS);
      // The look runs on its own (setImmediate is not faked): its file operations end within a few turns.
      for (const until = Date.now() + 10_000; Date.now() < until && killed.some((name) => fs.existsSync(join(dir, name))); ) await new Promise(setImmediate);
      expect(fs.readdirSync(dir).sort()).toEqual([own, 'node', 'node.json']);
      await output.close();
      expect(fs.readdirSync(dir).sort()).toEqual(['node', 'node.json']);
    } finally {
      vi.useRealTimers();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps as the spare only a file it put in place itself, and a write that cannot keep one still writes', async () => {
    const dir = fs.mkdtempSync(join(tmpdir(), 'aami-sd-spare-own-'));
    try {
      let clock = 0;
      const spare = join(dir, `.node.json.${process.pid}.${PROCESS_TAG}.spare.tmp`);
      const path = join(dir, 'node.json');
      // What was there before the first write (a run before this one, an operator's copy) is never kept.
      fs.writeFileSync(path, '[\n  0\n]\n', { mode: 0o600 });
      const output = new SdOutput(fs, dir, { spareFrom: 1, now: () => clock });
      await output.write(files('node.json', '[\n  1\n]\n'));
      expect(fs.existsSync(spare)).toBe(false);
      // Nor a file someone put in place of the one it wrote.
      fs.rmSync(path);
      fs.writeFileSync(path, '[\n  9\n]\n', { mode: 0o600 });
      await output.write(files('node.json', '[\n  2\n]\n'));
      expect(fs.existsSync(spare)).toBe(false);
      await output.write(files('node.json', '[\n  3\n]\n'));
      expect(fs.readFileSync(spare, 'utf8')).toBe('[\n  2\n]\n');
      expect(fs.statSync(spare).mode & 0o777).toBe(0o644);
      // A file system without hard links: no spare, the file written all the same.
      const noLinks = new SdOutput(fsWith({}, { link: (async () => { throw Object.assign(new Error('EPERM: operation not permitted, link'), { code: 'EPERM' }); }) as typeof fs.promises.link }), join(dir, 'fat'), { spareFrom: 1, now: () => clock });
      for (const n of [1, 2, 3]) {
        clock += RETIRED_MS;
        expect((await noLinks.write(files('node.json', `[${n}]\n`))).written).toEqual(['node.json']);
        expect(fs.readFileSync(join(dir, 'fat/node.json'), 'utf8')).toBe(`[${n}]\n`);
      }
      expect(fs.readdirSync(join(dir, 'fat'))).toEqual(['node.json']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('publishes nothing a write left short (a disk full part way): the file keeps what it had', async () => {
    const dir = fs.mkdtempSync(join(tmpdir(), 'aami-sd-short-'));
    try {
      let short = false;
      // libuv's writev stops without an error at a write that fails after others were made.
      const shortening = writevThrough((buffers) => (short ? buffers.slice(0, 1) : buffers));
      for (const spareFrom of [Infinity, 1]) {
        const output = new SdOutput(shortening, join(dir, String(spareFrom)), { spareFrom, now: () => 0 });
        short = false;
        await output.write(new Map([['node.json', [Buffer.from('[\n'), Buffer.from('1'), Buffer.from('\n]\n')]]]));
        short = true;
        await expect(output.write(new Map([['node.json', [Buffer.from('[\n'), Buffer.from('2,3'), Buffer.from('\n]\n')]]]))).rejects.toThrow('2 of 8 bytes written');
        expect(fs.readFileSync(join(dir, String(spareFrom), 'node.json'), 'utf8')).toBe('[\n1\n]\n');
        expect(fs.readdirSync(join(dir, String(spareFrom)))).toEqual(['node.json']);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('removes json files it no longer produces and leaves other files alone', async () => {
    const mfs = memfs();
    mfs.mkdirSync('/sd');
    mfs.writeFileSync('/sd/old-job.json', '[]');
    mfs.writeFileSync('/sd/README', 'operator notes');
    const result = await new SdOutput(mfs, '/sd').write(files('node.json', '[]\n'));
    expect(result.removed).toEqual(['old-job.json']);
    expect(mfs.readdirSync('/sd').sort()).toEqual(['README', 'node.json']);
  });

  it('removes a shard as soon as a write no longer names it, and only looks for stale files then', async () => {
    const mfs = memfs();
    const output = new SdOutput(mfs, '/sd');
    const shards = (...groups: string[]) => new Map(groups.map((g) => [`node/${g}.json`, Buffer.from(`["${g}"]\n`)]));
    await output.write(shards('a', 'b'));
    // A write naming the same files does not list the directory: a file dropped there meanwhile stays.
    mfs.writeFileSync('/sd/node/dropped-by-hand.json', '[]');
    expect(await output.write(shards('a', 'b'))).toEqual({ written: [], removed: [] });
    // Group b emptied: its shard goes (and so does the stray file, found on the same pass).
    expect((await output.write(shards('a'))).removed.sort()).toEqual(['node/b.json', 'node/dropped-by-hand.json']);
    expect(mfs.readdirSync('/sd/node')).toEqual(['a.json']);
    // b comes back: written again, though its bytes are what was written before.
    expect((await output.write(shards('a', 'b'))).written).toEqual(['node/b.json']);
  });

  it('writes the next version of a persistent map by the names it changed, and leaves the directory a full write would, failures included', async () => {
    for (let seed = 1; seed <= 40; seed++) {
      let state = seed;
      const random = (n: number) => ((state = (state * 1103515245 + 12345) % 2 ** 31), state % n);
      const mfs = memfs();
      // A write that fails part way (a full disk): the next one must still leave exactly the files named.
      let failIn = -1;
      const failing = new Proxy(mfs.promises, {
        get: (target, key) => (key === 'rename' ? (...args: unknown[]) => (failIn-- === 0 ? Promise.reject(Object.assign(new Error('ENOSPC'), { code: 'ENOSPC' })) : (target.rename as (...a: unknown[]) => Promise<void>)(...args)) : Reflect.get(target, key)),
      });
      const output = new SdOutput(new Proxy(mfs, { get: (target, key) => (key === 'promises' ? failing : Reflect.get(target, key)) }) as Fs, '/sd');
      let files = PMap.empty<string, Buffer[]>();
      const names = ['node/a.json', 'node/b.json', 'dcgm/a.json', 'dcgm/c.json', 'x/b.json', 'top.json'];
      for (let step = 0; step < 30; step++) {
        const draft = files.edit();
        for (let n = 1 + random(3); n > 0; n--) {
          const name = names[random(names.length)]!;
          if (random(3) === 0) draft.delete(name);
          else draft.set(name, [Buffer.from(`[${random(4)}`), Buffer.from(']\n')]);
        }
        // Now and then a map that is no version of the last one (a full compile): every name is looked at.
        files = random(5) === 0 ? PMap.from(new Map(draft)) : draft.freeze();
        failIn = random(4) === 0 ? random(2) : -1;
        const wrote = await output.write(files).then(() => true, () => false);
        failIn = -1;
        if (!wrote) continue;
        const onDisk = new Map<string, string>();
        const walk = (dir: string) => {
          for (const name of mfs.readdirSync(dir) as string[]) {
            const path = `${dir}/${name}`;
            if (mfs.statSync(path).isDirectory()) walk(path);
            else if (name.endsWith('.json')) onDisk.set(path.slice('/sd/'.length), String(mfs.readFileSync(path)));
          }
        };
        walk('/sd');
        expect(onDisk, `seed ${seed} step ${step}`).toEqual(new Map([...files].map(([name, parts]) => [name, Buffer.concat(parts).toString()])));
      }
    }
  });

  it('removes a file a failed write left, once no write names it any more', async () => {
    const mfs = memfs();
    let full = false;
    const open = mfs.promises.open.bind(mfs.promises) as (...args: unknown[]) => Promise<unknown>;
    // The disk fills up while node.json's temp file is written.
    (mfs.promises as { open: unknown }).open = (path: string, ...rest: unknown[]) =>
      full && path.includes('node.json') ? Promise.reject(Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' })) : open(path, ...rest);
    const output = new SdOutput(mfs, '/sd');
    const sd = (entries: Record<string, string>) => new Map(Object.entries(entries).map(([name, text]) => [name, Buffer.from(text)]));
    await output.write(sd({ 'node.json': '[]\n' }));
    // aami.yaml gains a job: its file is written, then node.json fails.
    full = true;
    await expect(output.write(sd({ 'extra.json': '[1]\n', 'node.json': '[2]\n' }))).rejects.toThrow(/ENOSPC/);
    expect(mfs.readdirSync('/sd').sort()).toEqual(['extra.json', 'node.json']);
    // The job is taken out again and the disk has room: the file of the failed write goes.
    full = false;
    expect(await output.write(sd({ 'node.json': '[2]\n' }))).toEqual({ written: ['node.json'], removed: ['extra.json'] });
    expect(mfs.readdirSync('/sd')).toEqual(['node.json']);
  });
});
