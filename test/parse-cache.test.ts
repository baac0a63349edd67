import * as fs from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { filesOf } from '../src/catalog/load.js';
import { parseFile } from '../src/catalog/parse.js';
import { GitRepository } from '../src/git/repository.js';
import { RepoFiles } from '../src/writer/files.js';
import { codeId } from '../src/writer/code-id.js';
import { compactionTemp, ParseCache } from '../src/writer/parse-cache.js';
import { ADMIN, onCleanup, pushFiles, STARTER, targetYaml, tempDir } from './helpers.js';

const OID_A = 'a'.repeat(40);
const OID_B = 'b'.repeat(40);

/** A real bare repository with the starter config, and a count of the blobs read from it. */
async function countingRepo() {
  const dir = join(tempDir(), 'repo.git');
  const repo = await GitRepository.init(dir, { files: filesOf(STARTER), author: ADMIN });
  onCleanup(() => repo.close());
  const reads: string[] = [];
  const readBlob = repo.objects.readBlob.bind(repo.objects);
  repo.objects.readBlob = (oid, limit) => (reads.push(oid), readBlob(oid, limit));
  return { dir, repo, reads };
}

describe('the parse cache', () => {
  it('parses a blob once: a restart reads from Git only the files that changed while it was down', async () => {
    const state = tempDir();
    const cacheFile = join(state, 'parse-cache.log');
    const { dir, repo, reads } = await countingRepo();
    pushFiles(dir, { 'targets/ml-training/gpu-01.yaml': targetYaml('gpu-01', '10.0.0.1'), 'targets/ml-training/gpu-02.yaml': targetYaml('gpu-02', '10.0.0.2') }, 'two targets');

    // First start: every config file is read and parsed, and the parses are logged.
    const first = new ParseCache(cacheFile);
    await first.load();
    const before = await new RepoFiles(repo, first).records((await repo.head())!);
    await first.flush();
    const readFirst = reads.length;
    expect(readFirst).toBeGreaterThan(3);

    // A change while it was down, then a restart with the same state directory.
    pushFiles(dir, { 'targets/ml-training/gpu-02.yaml': targetYaml('gpu-02', '10.0.0.22') }, 'gpu-02 moved');
    reads.length = 0;
    const second = new ParseCache(cacheFile);
    await second.load();
    const head = (await repo.head())!;
    const after = await new RepoFiles(repo, second).records(head);
    const changed = (await repo.listFiles(head)).get('targets/ml-training/gpu-02.yaml')!.oid;
    // Only the changed file and files with comments (their text is kept for edits) are read again.
    const commented = [...after].filter(([, record]) => record.text !== undefined).map(([, record]) => record.oid);
    expect(new Set(reads)).toEqual(new Set([changed, ...commented]));
    expect(reads.length).toBeLessThan(readFirst);
    // And the cached parses are the parses.
    for (const [path, record] of after) {
      const text = (await repo.readText(record.oid!))!;
      expect(record.parsed, path).toEqual(parseFile(path, text));
    }
    expect(after.get('targets/ml-training/gpu-01.yaml')!.parsed).toEqual(before.get('targets/ml-training/gpu-01.yaml')!.parsed);
  });

  it('removes at start-up the temp file of a compaction a kill cut short, and reads the log as it was', async () => {
    const file = join(tempDir(), 'parse-cache.log');
    const cache = new ParseCache(file);
    await cache.load();
    cache.add('targets/ml/a.yaml', 'a'.repeat(40), { parsed: parseFile('targets/ml/a.yaml', targetYaml('a', '10.0.0.9', 'ml')) });
    await cache.flush();
    fs.writeFileSync(compactionTemp(file), '{"half a compacted log');
    const restarted = new ParseCache(file);
    await restarted.load();
    expect(fs.existsSync(compactionTemp(file))).toBe(false);
    expect(restarted.get('targets/ml/a.yaml', 'a'.repeat(40))?.parsed).toEqual(parseFile('targets/ml/a.yaml', targetYaml('a', '10.0.0.9', 'ml')));
  });

  it('takes no parse another program wrote: after an upgrade (a check tightened, say) every file is parsed again', async () => {
    const file = join(tempDir(), 'parse-cache.log');
    // What an older program took: a metrics_path this one refuses.
    const text = 'hostname: a\nip_address: 10.0.0.1\nprimary_group: ml\nexporters:\n  - {type: node_exporter, metrics_path: "/m?x=1 HTTP/1.1"}\n';
    expect(parseFile('targets/ml/a.yaml', text).problems).not.toEqual([]);
    const older = new ParseCache(file, 'an older program');
    await older.load();
    older.add('targets/ml/a.yaml', OID_A, { parsed: { problems: [] } });
    await older.flush();
    const again = new ParseCache(file, 'an older program');
    await again.load();
    expect(again.get('targets/ml/a.yaml', OID_A)).toEqual({ parsed: { problems: [] } });
    const upgraded = new ParseCache(file);
    await upgraded.load();
    expect(upgraded.get('targets/ml/a.yaml', OID_A)).toBeUndefined();
  });

  it('treats a torn last line, a foreign format or a missing file as fewer entries, never as an error', async () => {
    const state = tempDir();
    const file = join(state, 'parse-cache.log');
    const parsed = parseFile('groups/a.yaml', 'id: a\nname: a\nnamespace: logical\n');
    const cache = new ParseCache(file);
    await cache.load(); // missing: empty
    cache.add('groups/a.yaml', OID_A, { parsed });
    cache.add('groups/b.yaml', OID_B, { parsed });
    await cache.flush();
    fs.appendFileSync(file, '["groups/c.yaml","ccc'); // a write cut short by a crash

    const reloaded = new ParseCache(file);
    await reloaded.load();
    expect(reloaded.get('groups/a.yaml', OID_A)).toEqual({ parsed });
    expect(reloaded.get('groups/b.yaml', OID_B)).toEqual({ parsed });
    expect(reloaded.get('groups/a.yaml', OID_B)).toBeUndefined();

    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace(/^aami-parse-cache \d+/, 'aami-parse-cache 0'));
    const old = new ParseCache(file);
    await old.load();
    expect(old.get('groups/a.yaml', OID_A)).toBeUndefined();
  });

  it('reads back every entry of a log longer than its read buffer, a line longer than it included', async () => {
    const file = join(tempDir(), 'parse-cache.log');
    const cache = new ParseCache(file);
    const oid = (i: number) => i.toString(16).padStart(40, '0');
    // A script of ~900 KB that JSON writes as ~1.8 MB (every newline escaped): one line longer than a 1 MiB read.
    const script = parseFile('checks/gpu/check.sh', '#!/bin/sh\n'.repeat(90_000));
    const targets = Array.from({ length: 4000 }, (_, i) => parseFile(`targets/ml/h-${i}.yaml`, `hostname: h-${i}\nip_address: 10.0.${i >> 8}.${i & 255}\nprimary_group: ml\nlabels: {site: "서울-${i % 7}"}\n`));
    expect(targets[4000 - 1]!.entity?.kind).toBe('target');
    expect(script.entity?.kind).toBe('script');
    targets.forEach((parsed, i) => cache.add(`targets/ml/h-${i}.yaml`, oid(i), { parsed }));
    cache.add('checks/gpu/check.sh', oid(99_999), { parsed: script });
    targets.forEach((parsed, i) => cache.add(`targets/ml/h-${i}.yaml`, oid(100_000 + i), { parsed }));
    await cache.flush();
    expect(fs.statSync(file).size).toBeGreaterThan(2 << 20);

    const reloaded = new ParseCache(file);
    await reloaded.load();
    targets.forEach((parsed, i) => {
      expect(reloaded.get(`targets/ml/h-${i}.yaml`, oid(i))).toEqual({ parsed });
      expect(reloaded.get(`targets/ml/h-${i}.yaml`, oid(100_000 + i))).toEqual({ parsed });
    });
    expect(reloaded.get('checks/gpu/check.sh', oid(99_999))).toEqual({ parsed: script });
  });

  it('compacts a log of thousands of entries to the ones start-up took, each read back as it was', async () => {
    const file = join(tempDir(), 'parse-cache.log');
    const oid = (i: number) => i.toString(16).padStart(40, '0');
    const parsedOf = (i: number) => parseFile(`targets/ml/h-${i}.yaml`, `hostname: h-${i}\nip_address: 10.1.${i >> 8}.${i & 255}\nprimary_group: ml\n`);
    const cache = new ParseCache(file);
    for (let i = 0; i < 10_000; i++) cache.add(`targets/ml/h-${i}.yaml`, oid(i), { parsed: parsedOf(i) });
    await cache.flush();
    // A start that takes 4,500 of them: the 5,500 others are dead, and outnumber them.
    const started = new ParseCache(file);
    await started.load();
    for (let i = 0; i < 4500; i++) expect(started.get(`targets/ml/h-${i}.yaml`, oid(i))).toEqual({ parsed: parsedOf(i) });
    await started.settle();
    expect(fs.readFileSync(file, 'utf8').trim().split('\n').filter((line) => !line.startsWith('["="')).length).toBe(1 + 4500);
    const reloaded = new ParseCache(file);
    await reloaded.load();
    for (let i = 0; i < 4500; i++) expect(reloaded.get(`targets/ml/h-${i}.yaml`, oid(i))).toEqual({ parsed: parsedOf(i) });
    expect(reloaded.get('targets/ml/h-4500.yaml', oid(4500))).toBeUndefined();
  });

  it('writes a first start\'s parses as soon as start-up settles, not at the first write (a kill -9 before it lost them all)', async () => {
    const file = join(tempDir(), 'parse-cache.log');
    const cache = new ParseCache(file);
    await cache.load();
    const parsed = parseFile('groups/a.yaml', 'id: a\nname: a\nnamespace: logical\n');
    cache.add('groups/a.yaml', OID_A, { parsed });
    await cache.settle();
    const reloaded = new ParseCache(file);
    await reloaded.load();
    expect(reloaded.get('groups/a.yaml', OID_A)).toEqual({ parsed });
  });

  it('keeps a path with a newline from forging another file\'s entry', async () => {
    const file = join(tempDir(), 'parse-cache.log');
    const cache = new ParseCache(file);
    const forged = parseFile('groups/x.yaml', 'id: x\nname: x\nnamespace: logical\n');
    // A path that, written raw, would be a line of its own naming groups/a.yaml.
    const hostile = `groups/evil.yaml\n["groups/a.yaml","${OID_A}",${JSON.stringify({ parsed: forged })}]`;
    cache.add(hostile, OID_B, { parsed: forged });
    await cache.flush();
    const reloaded = new ParseCache(file);
    await reloaded.load();
    expect(reloaded.get('groups/a.yaml', OID_A)).toBeUndefined();
    expect(reloaded.get(hostile, OID_B)).toEqual({ parsed: forged });
  });

  it('keeps one blob found at several paths apart, through a reload and a compaction', async () => {
    const file = join(tempDir(), 'parse-cache.log');
    const asA = parseFile('groups/a.yaml', 'id: a\nname: a\nnamespace: logical\n');
    const asB = parseFile('groups/b.yaml', 'id: a\nname: a\nnamespace: logical\n');
    const cache = new ParseCache(file);
    cache.add('groups/a.yaml', OID_A, { parsed: asA });
    cache.add('groups/b.yaml', OID_A, { parsed: asB });
    cache.add('groups/c.yaml', OID_A, { parsed: asA });
    cache.add('groups/b.yaml', OID_A, { parsed: asA }); // a later line for the same pair wins
    cache.add('groups/b.yaml', OID_A, { parsed: asB });
    for (let i = 0; i < 20; i++) cache.add(`groups/dead${i}.yaml`, OID_B, { parsed: asA });
    await cache.flush();
    const restarted = new ParseCache(file);
    await restarted.load();
    expect(restarted.get('groups/a.yaml', OID_A)).toEqual({ parsed: asA });
    expect(restarted.get('groups/b.yaml', OID_A)).toEqual({ parsed: asB });
    expect(restarted.get('groups/d.yaml', OID_A)).toBeUndefined();
    await restarted.settle(); // 21 dead (c among them) against 2 taken: compacted
    expect(fs.readFileSync(file, 'utf8').trim().split('\n').length).toBe(3);
    const again = new ParseCache(file);
    await again.load();
    expect(again.get('groups/a.yaml', OID_A)).toEqual({ parsed: asA });
    expect(again.get('groups/b.yaml', OID_A)).toEqual({ parsed: asB });
    expect(again.get('groups/c.yaml', OID_A)).toBeUndefined();
    expect(again.get('groups/dead0.yaml', OID_B)).toBeUndefined();
  });

  it('compacts its log to the live entries once dead ones outnumber them', async () => {
    const file = join(tempDir(), 'parse-cache.log');
    const parsed = parseFile('groups/a.yaml', 'id: a\nname: a\nnamespace: logical\n');
    const cache = new ParseCache(file);
    for (let i = 0; i < 30; i++) cache.add(`groups/g${i}.yaml`, i.toString(16).padStart(40, '0'), { parsed });
    await cache.flush();
    const lines = () => fs.readFileSync(file, 'utf8').trim().split('\n').length;
    expect(lines()).toBe(31);

    const restarted = new ParseCache(file);
    await restarted.load();
    // Start-up takes two of the thirty (the files still in the tree): 28 dead entries outnumber them.
    expect(restarted.get('groups/g1.yaml', '1'.padStart(40, '0'))).toEqual({ parsed });
    expect(restarted.get('groups/g2.yaml', '2'.padStart(40, '0'))).toEqual({ parsed });
    expect(restarted.get('groups/gone.yaml', '3'.padStart(40, '0'))).toBeUndefined();
    await restarted.settle();
    expect(lines()).toBe(3);
    const again = new ParseCache(file);
    await again.load();
    expect(again.get('groups/g2.yaml', '2'.padStart(40, '0'))).toEqual({ parsed });
    expect(again.get('groups/g3.yaml', '3'.padStart(40, '0'))).toBeUndefined();
  });

  describe('its dictionary of the values targets repeat', () => {
    const oid = (i: number) => i.toString(16).padStart(40, '0');
    const target = (i: number, extra = '') =>
      parseFile(`targets/ml/h-${i}.yaml`, `hostname: h-${i}\nip_address: 10.0.${i >> 8}.${i & 255}\nprimary_group: ml\ngroups: [prod]\nlabels: {rack: r${i % 3}}\n${extra}`);

    /** A log of 30 targets (h-0 … h-29) over three racks. */
    const thirtyTargets = async () => {
      const file = join(tempDir(), 'parse-cache.log');
      const cache = new ParseCache(file);
      for (let i = 0; i < 30; i++) cache.add(`targets/ml/h-${i}.yaml`, oid(i), { parsed: target(i) });
      await cache.flush();
      return file;
    };

    it('writes each value once, and reads every target back as parseFile gives it, sharing the values', async () => {
      const file = join(tempDir(), 'parse-cache.log');
      const cache = new ParseCache(file);
      const parses = Array.from({ length: 300 }, (_, i) => target(i, i % 7 === 0 ? `registered_by_token: t${i % 2}\nfacts: {cpu_cores: 64, gpu_count: 8}\n` : ''));
      parses.forEach((parsed, i) => cache.add(`targets/ml/h-${i}.yaml`, oid(i), i === 5 ? { parsed, commented: true } : { parsed }));
      await cache.flush();
      const lines = fs.readFileSync(file, 'utf8').trim().split('\n');
      // The header, 300 entries, and the values: ml, [prod], the exporters, 3 racks, {}, 2 tokens, the facts.
      expect(lines.filter((line) => line.startsWith('["="')).length).toBe(10);
      expect(lines.length).toBe(1 + 300 + 10);

      const reloaded = new ParseCache(file);
      await reloaded.load();
      parses.forEach((parsed, i) => expect(reloaded.get(`targets/ml/h-${i}.yaml`, oid(i))).toEqual(i === 5 ? { parsed, commented: true } : { parsed }));
      const value = (i: number) => (reloaded.get(`targets/ml/h-${i}.yaml`, oid(i))!.parsed.entity as { value: Record<string, unknown> }).value;
      expect(value(3).labels).toBe(value(6).labels);
      expect(value(3).groups).toBe(value(4).groups);
      expect(Object.isFrozen(value(3).labels)).toBe(true);
    });

    it('parses again an entry whose value was lost, never reads it with another value', async () => {
      const file = join(tempDir(), 'parse-cache.log');
      const cache = new ParseCache(file);
      for (let i = 0; i < 6; i++) cache.add(`targets/ml/h-${i}.yaml`, oid(i), { parsed: target(i) });
      await cache.flush();
      // The definition of rack r1 (h-1 and h-4) lost, as a torn write would lose it.
      const kept = fs.readFileSync(file, 'utf8').split('\n').filter((line) => !(line.startsWith('["="') && line.includes('"r1"')));
      fs.writeFileSync(file, kept.join('\n'));
      const reloaded = new ParseCache(file);
      await reloaded.load();
      for (let i = 0; i < 6; i++) {
        if (i % 3 === 1) expect(reloaded.get(`targets/ml/h-${i}.yaml`, oid(i))).toBeUndefined();
        else expect(reloaded.get(`targets/ml/h-${i}.yaml`, oid(i))).toEqual({ parsed: target(i) });
      }
    });

    it('numbers values anew after a failed write: what is appended after it reads back right', async () => {
      const file = await thirtyTargets();

      // A compaction that fails (its temp file cannot be written), then appends to the old log.
      const restarted = new ParseCache(file);
      await restarted.load();
      expect(restarted.get('targets/ml/h-1.yaml', oid(1))).toEqual({ parsed: target(1) });
      fs.mkdirSync(compactionTemp(file));
      await expect(restarted.settle()).rejects.toThrow();
      restarted.add('targets/ml/h-100.yaml', oid(100), { parsed: target(100) });
      await restarted.flush();

      // An append that fails (the log is a directory for a moment), then one that succeeds.
      fs.renameSync(file, `${file}.old`);
      fs.mkdirSync(file);
      // Its line is the first to use a label set: the definition is lost with it.
      const site = 'node_labels: {site: new}\n';
      restarted.add('targets/ml/h-101.yaml', oid(101), { parsed: target(101, site) });
      await expect(restarted.flush()).rejects.toThrow();
      fs.rmdirSync(file);
      fs.renameSync(`${file}.old`, file);
      restarted.add('targets/ml/h-102.yaml', oid(102), { parsed: target(102, site) });
      await restarted.flush();

      const again = new ParseCache(file);
      await again.load();
      for (const i of [0, 1, 29, 100]) expect(again.get(`targets/ml/h-${i}.yaml`, oid(i)), `h-${i}`).toEqual({ parsed: target(i) });
      expect(again.get('targets/ml/h-102.yaml', oid(102))).toEqual({ parsed: target(102, site) });
      expect(again.get('targets/ml/h-101.yaml', oid(101))).toBeUndefined();
    });

    it('appends a parse added while the log is compacted with the numbers of the compacted log', async () => {
      const file = await thirtyTargets();
      const restarted = new ParseCache(file);
      await restarted.load();
      // Start-up takes two entries (racks r2 and r0): the 28 others go, and the values are numbered afresh.
      restarted.get('targets/ml/h-2.yaml', oid(2));
      restarted.get('targets/ml/h-3.yaml', oid(3));
      const compacted = restarted.settle();
      restarted.add('targets/ml/h-31.yaml', oid(31), { parsed: target(31) }); // rack r1
      const appended = restarted.flush();
      await Promise.all([compacted, appended]);
      const again = new ParseCache(file);
      await again.load();
      for (const i of [2, 3, 31]) expect(again.get(`targets/ml/h-${i}.yaml`, oid(i)), `h-${i}`).toEqual({ parsed: target(i) });
      expect(again.get('targets/ml/h-1.yaml', oid(1))).toBeUndefined();
    });

    it('appends a parse added while a long flush\'s lines are made (a slice at a time) after them, with the same numbers', async () => {
      const file = join(tempDir(), 'parse-cache.log');
      const cache = new ParseCache(file);
      const many = 12_000; // over two slices
      for (let i = 0; i < many; i++) cache.add(`targets/ml/h-${i}.yaml`, oid(i), { parsed: target(i) });
      const first = cache.flush();
      // Between two slices: a parse whose label set is new, and one that uses a set already numbered.
      await new Promise(setImmediate);
      const site = 'node_labels: {site: new}\n';
      cache.add(`targets/ml/h-${many}.yaml`, oid(many), { parsed: target(many, site) });
      cache.add(`targets/ml/h-${many + 1}.yaml`, oid(many + 1), { parsed: target(many + 1) });
      const second = cache.flush();
      await Promise.all([first, second]);
      const again = new ParseCache(file);
      await again.load();
      for (let i = 0; i < many + 2; i += 1_111) expect(again.get(`targets/ml/h-${i}.yaml`, oid(i)), `h-${i}`).toEqual({ parsed: target(i) });
      expect(again.get(`targets/ml/h-${many}.yaml`, oid(many))).toEqual({ parsed: target(many, site) });
      expect(again.get(`targets/ml/h-${many + 1}.yaml`, oid(many + 1))).toEqual({ parsed: target(many + 1) });
      expect(fs.readFileSync(file, 'utf8').trim().split('\n').length).toBe(1 + many + 2 + 8); // the header, the entries, 8 values: ml, [prod], the exporters, 3 racks, {}, {site: new}
    });

    /** fs.promises.open, spied: each writeFile of a handle it gives passes through `each` (its count from 1, its size). */
    const spyWrites = (each: (n: number, bytes: number) => void) => {
      const open = fs.promises.open;
      let n = 0;
      const spy = vi.spyOn(fs.promises, 'open').mockImplementation(async (...args: Parameters<typeof open>) => {
        const handle = await open(...args);
        const writeFile = handle.writeFile.bind(handle);
        handle.writeFile = (async (data: string) => {
          each(++n, Buffer.byteLength(data)); // a throw here fails this write before it is made
          await writeFile(data);
        }) as typeof handle.writeFile;
        return handle;
      });
      onCleanup(() => spy.mockRestore());
      return spy;
    };
    /** Target i, with a label set new in each slice of 5,000 (defined in that slice). */
    const sliced = (i: number) => target(i, `node_labels: {slice: s${Math.floor(i / 5_000)}}\n`);

    it('writes a long flush a slice at a time, never the whole log as one string: a write cut short after a slice leaves a log that reads', async () => {
      const file = join(tempDir(), 'parse-cache.log');
      const cache = new ParseCache(file);
      const many = 12_000; // three slices
      for (let i = 0; i < many; i++) cache.add(`targets/ml/h-${i}.yaml`, oid(i), { parsed: sliced(i) });
      // Each write's size, and the log as it was after the first one (what a kill then would leave).
      const writes: number[] = [];
      const cut = join(tempDir(), 'cut-short.log');
      const spy = spyWrites((n, bytes) => {
        if (n === 2) fs.copyFileSync(file, cut);
        writes.push(bytes);
      });
      await cache.flush();
      spy.mockRestore();
      const total = fs.statSync(file).size;
      expect(writes.length).toBe(3);
      expect(writes.reduce((a, b) => a + b)).toBe(total);
      expect(Math.max(...writes)).toBeLessThan(total / 2);
      const whole = new ParseCache(file);
      await whole.load();
      for (let i = 0; i < many; i += i % 5_000 === 4_999 ? 1 : 97) expect(whole.get(`targets/ml/h-${i}.yaml`, oid(i)), `h-${i}`).toEqual({ parsed: sliced(i) });
      const cutShort = new ParseCache(cut);
      await cutShort.load();
      for (let i = 0; i < 5_000; i += 499) expect(cutShort.get(`targets/ml/h-${i}.yaml`, oid(i)), `h-${i}`).toEqual({ parsed: sliced(i) });
      expect(cutShort.get(`targets/ml/h-${5_000}.yaml`, oid(5_000))).toBeUndefined();
    });

    it('takes back an append that failed part way, and starts the next line of its own after a line a kill tore: what follows reads', async () => {
      const file = await thirtyTargets();
      const cache = new ParseCache(file);
      await cache.load();
      const before = fs.statSync(file).size;
      // An append of two slices whose second write fails (a full disk): its first slice is taken back.
      for (let i = 100; i < 100 + 6_000; i++) cache.add(`targets/ml/h-${i}.yaml`, oid(i), { parsed: sliced(i) });
      const spy = spyWrites((n) => {
        if (n === 2) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      });
      await expect(cache.flush()).rejects.toThrow(/ENOSPC/);
      spy.mockRestore();
      expect(fs.statSync(file).size).toBe(before);
      // A line a kill cut short, then the next flush: its first line is one of its own.
      fs.appendFileSync(file, '["=",99,{"torn');
      cache.add('targets/ml/h-9000.yaml', oid(9_000), { parsed: sliced(9_000) });
      cache.add('targets/ml/h-31.yaml', oid(31), { parsed: target(31) });
      await cache.flush();
      const again = new ParseCache(file);
      await again.load();
      expect(again.get('targets/ml/h-9000.yaml', oid(9_000))).toEqual({ parsed: sliced(9_000) });
      expect(again.get('targets/ml/h-31.yaml', oid(31))).toEqual({ parsed: target(31) });
      expect(again.get('targets/ml/h-1.yaml', oid(1))).toEqual({ parsed: target(1) });
      expect(again.get('targets/ml/h-100.yaml', oid(100))).toBeUndefined(); // taken back: parsed again
    });

    it('read for its dictionary alone (a start from the restart image), goes on from its numbers and compacts to what the snapshot holds', async () => {
      const file = await thirtyTargets();
      const numbers = () => fs.readFileSync(file, 'utf8').split('\n').filter((line) => line.startsWith('["="')).map((line) => JSON.parse(line)[1] as number);
      const before = numbers();

      const restarted = new ParseCache(file);
      await restarted.load({ entries: false });
      expect(restarted.get('targets/ml/h-1.yaml', oid(1))).toBeUndefined(); // entries are not read
      restarted.add('targets/ml/h-31.yaml', oid(31), { parsed: target(31, 'node_labels: {site: new}\n') });
      await restarted.settleTo(() => { throw new Error('not compacted: 30 lines for 3 live entries'); }, 30);
      // One new value, numbered after every number the log holds; the values it had are not defined again.
      expect(numbers()).toEqual([...before, Math.max(...before) + 1]);

      // A log of more dead lines than live ones is compacted to the snapshot's parses.
      const again = new ParseCache(file);
      await again.load({ entries: false });
      await again.settleTo(() => [['targets/ml/h-2.yaml', oid(2), { parsed: target(2) }]], 1);
      const compacted = new ParseCache(file);
      await compacted.load();
      expect(compacted.get('targets/ml/h-2.yaml', oid(2))).toEqual({ parsed: target(2) });
      expect(compacted.get('targets/ml/h-1.yaml', oid(1))).toBeUndefined();
      expect(fs.readFileSync(file, 'utf8').trim().split('\n').filter((line) => !line.startsWith('["="')).length).toBe(2);
    });

    it('rewrites a log of another format at the first settle, rather than append to it unread for ever', async () => {
      const file = join(tempDir(), 'parse-cache.log');
      fs.writeFileSync(file, 'aami-parse-cache 4\n["targets/ml/h-1.yaml","1","old"]\n');
      for (const start of [1, 2]) {
        const cache = new ParseCache(file);
        await cache.load();
        if (start === 2) expect(cache.get('targets/ml/h-1.yaml', oid(1))).toEqual({ parsed: target(1) });
        else cache.add('targets/ml/h-1.yaml', oid(1), { parsed: target(1) });
        await cache.settle();
      }
      expect(fs.readFileSync(file, 'utf8').split('\n')[0]).toBe(`aami-parse-cache 6 ${codeId()}`);
    });

    it('counts lines a later one replaced, and lines that do not read, as dead: the log is compacted', async () => {
      const file = await thirtyTargets();
      // Another program's lines, and the same pairs written again.
      fs.appendFileSync(file, '["targets/ml/h-1.yaml","x",{}]\n'.repeat(20));
      const again = new ParseCache(file);
      for (let i = 0; i < 30; i++) again.add(`targets/ml/h-${i}.yaml`, oid(i), { parsed: target(i) });
      await again.flush();
      const restarted = new ParseCache(file);
      await restarted.load();
      for (let i = 0; i < 30; i++) expect(restarted.get(`targets/ml/h-${i}.yaml`, oid(i))).toEqual({ parsed: target(i) });
      await restarted.settle(); // 80 lines for 30 live entries
      const lines = fs.readFileSync(file, 'utf8').trim().split('\n').filter((line) => !line.startsWith('["="'));
      expect(lines.length).toBe(1 + 30);
    });

    it('reads a target line whose values are written in full (past the dictionary\'s limit)', async () => {
      const file = join(tempDir(), 'parse-cache.log');
      const parsed = target(7);
      const value = (parsed.entity as { value: object }).value;
      fs.writeFileSync(file, `aami-parse-cache 6 ${codeId()}\n${JSON.stringify(['targets/ml/h-7.yaml', oid(7), 't', value])}\n`);
      const cache = new ParseCache(file);
      await cache.load();
      expect(cache.get('targets/ml/h-7.yaml', oid(7))).toEqual({ parsed });
    });
  });
});
