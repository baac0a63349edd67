import * as fs from 'node:fs';
import { join } from 'node:path';
import { Volume, createFsFromVolume } from 'memfs';
import { describe, expect, it } from 'vitest';
import { LiveCatalog, Snapshot } from '../src/catalog/live.js';
import { readCheckout } from '../src/catalog/load.js';
import { parseFile } from '../src/catalog/parse.js';
import { Compiler, compile, jobOfFile } from '../src/compile/compiler.js';
import { SdOutput } from '../src/compile/output.js';
import type { Fs } from '../src/git/fs.js';
import { loadDirectory } from '../src/cli/validate.js';
import { fixture } from './helpers.js';

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

  it('writes entries byte for byte as JSON.stringify(list, null, 2) would, whatever the label values hold', () => {
    const records = readCheckout(fs, fixture('basic'));
    const weird = 'quote " backslash \\ unicode ünï 日本 emoji 🚀 </script> $(x)';
    const text = `hostname: odd-1\nip_address: "fd00::9"\nprimary_group: ml-training\nlabels: {Rack: '${weird.replaceAll("'", "''")}', zzz: ''}\n`;
    records.set('targets/ml-training/odd-1.yaml', { oid: 'x', parsed: parseFile('targets/ml-training/odd-1.yaml', text) });
    const files = compile(Snapshot.build(records, null).catalog);
    for (const bytes of files.values()) expect(bytes.toString()).toBe(`${JSON.stringify(JSON.parse(bytes.toString()), null, 2)}\n`);
    expect(JSON.parse(files.get('node.json')!.toString()).find((e: any) => e.labels.hostname === 'odd-1').labels.Rack).toBe(weird);
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

  it('writes an empty list for a job without targets', () => {
    expect(compile(Snapshot.build(new Map(), null).catalog)).toEqual(new Map([['node.json', Buffer.from('[]\n')], ['dcgm.json', Buffer.from('[]\n')]]));
  });
});

const files = (name: string, text: string) => new Map([[name, Buffer.from(text)]]);

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

  it('removes json files it no longer produces and leaves other files alone', async () => {
    const mfs = memfs();
    mfs.mkdirSync('/sd');
    mfs.writeFileSync('/sd/old-job.json', '[]');
    mfs.writeFileSync('/sd/README', 'operator notes');
    const result = await new SdOutput(mfs, '/sd').write(files('node.json', '[]\n'));
    expect(result.removed).toEqual(['old-job.json']);
    expect(mfs.readdirSync('/sd').sort()).toEqual(['README', 'node.json']);
  });
});
