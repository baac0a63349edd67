import { describe, expect, it } from 'vitest';
import { addressKeys, portKeys, scrapedAtKey } from '../src/catalog/address.js';
import { targetCandidate, type Catalog, type FileRecord } from '../src/catalog/build.js';
import { LiveCatalog, rebuildWith, Snapshot, type FileUpdate } from '../src/catalog/live.js';
import { parseFile, targetPath } from '../src/catalog/parse.js';
import { claimKeys, establishedIn, servedPath } from '../src/catalog/place.js';
import { formatProblem } from '../src/catalog/problem.js';
import { hashObject } from '../src/git/objects.js';
import { savedStateOf, stateOf } from '../src/writer/catalog-state.js';
import { baseOf, changedFiles, imageOf, restoreImage } from '../src/writer/restart-image.js';
import { random } from './helpers.js';

const group = (id: string, namespace = 'logical', parent?: string) =>
  `id: ${id}\nname: ${id}\nnamespace: ${namespace}\n${parent ? `parent: ${parent}\n` : ''}`;
const target = (host: string, ip: string, primary = 'ml', extra = '') => `hostname: ${host}\nip_address: ${ip}\nprimary_group: ${primary}\n${extra}`;

const oidOf = (text: string) => hashObject('blob', Buffer.from(text)).oid;
const update = (path: string, text: string | null): FileUpdate => (text === null ? { path, oid: null } : { path, oid: oidOf(text), parsed: parseFile(path, text) });

function snapshotOf(files: Record<string, string>): Snapshot {
  const records = new Map<string, FileRecord>(Object.entries(files).map(([path, text]) => [path, { oid: oidOf(text), parsed: parseFile(path, text) }]));
  return Snapshot.build(records, null);
}
const problems = (snapshot: Snapshot) => snapshot.problems.map(formatProblem);
/** A restart: the same files, and who holds each claim now as the established holders (what the state directory keeps). */
const restartOf = (snapshot: Snapshot) => Snapshot.build(new Map(snapshot.files), null, establishedIn(snapshot.catalog));
/** A restart decides the same: placement, the deleted groups kept, every problem. */
const expectSameAfterRestart = (snapshot: Snapshot, where?: string) => expect(view(restartOf(snapshot)), where).toEqual(view(snapshot));

/** A live catalog changed one commit at a time, as the writer and the head follower change it. */
function liveOf(files: Record<string, string>) {
  const live = new LiveCatalog(snapshotOf(files));
  return {
    live,
    set(changes: Record<string, string | null>) {
      const draft = live.draft();
      draft.apply(Object.entries(changes).map(([path, text]) => update(path, text)));
      live.publish(draft.freeze(null));
      return live.snapshot();
    },
  };
}

describe('catalog references', () => {
  it('resolves groups, targets and tokens that refer to each other', () => {
    const snapshot = snapshotOf({
      'groups/ml.yaml': group('ml'),
      'groups/prod.yaml': group('prod', 'environment'),
      'groups/prod-critical.yaml': group('prod-critical', 'environment', 'prod'),
      'targets/ml/a.yaml': target('a', '10.0.0.1', 'ml', 'groups: [prod-critical]\n'),
    });
    expect(problems(snapshot)).toEqual([]);
    expect([...snapshot.catalog.targets.keys()]).toEqual(['a']);
  });

  it('rejects a target whose groups do not exist, naming the field', () => {
    const snapshot = snapshotOf({
      'groups/ml.yaml': group('ml'),
      'targets/ghost/a.yaml': target('a', '10.0.0.1', 'ghost'),
      'targets/ml/b.yaml': target('b', '10.0.0.2', 'ml', 'groups: [nope, ml]\n'),
    });
    expect(problems(snapshot)).toEqual([
      'targets/ghost/a.yaml: primary_group: group "ghost" does not exist',
      'targets/ml/b.yaml: groups[0]: group "nope" does not exist',
      'targets/ml/b.yaml: groups[1]: group "ml" is listed twice',
    ]);
    expect(snapshot.catalog.targets.size).toBe(0);
  });

  it('rejects a missing parent, a cycle, and a parent in another namespace', () => {
    const snapshot = snapshotOf({
      'groups/orphan.yaml': group('orphan', 'logical', 'nowhere'),
      'groups/a.yaml': group('a', 'logical', 'b'),
      'groups/b.yaml': group('b', 'logical', 'a'),
      'groups/env.yaml': group('env', 'environment'),
      'groups/mixed.yaml': group('mixed', 'logical', 'env'),
      'groups/child-of-orphan.yaml': group('child-of-orphan', 'logical', 'orphan'),
    });
    expect(problems(snapshot)).toEqual([
      'groups/a.yaml: parent: parent group "b" is invalid',
      'groups/b.yaml: parent: groups form a cycle through "a"',
      'groups/child-of-orphan.yaml: parent: parent group "orphan" is invalid',
      'groups/mixed.yaml: parent: group "env" is in namespace "environment", not "logical"',
      'groups/orphan.yaml: parent: group "nowhere" does not exist',
    ]);
    expect([...snapshot.catalog.groups.keys()]).toEqual(['env']);
  });

  it('rejects the second target on an address a job already scrapes, and a hostname registered twice', () => {
    const snapshot = snapshotOf({
      'groups/ml.yaml': group('ml'),
      'groups/db.yaml': group('db'),
      'targets/ml/a.yaml': target('a', '10.0.0.1'),
      'targets/ml/b.yaml': target('b', '10.0.0.1'),
      'targets/ml/c.yaml': target('c', '10.0.0.1', 'ml', 'exporters: [{type: node_exporter, port: 9101}]\n'),
      'targets/db/x.yaml': target('x', '10.0.0.9', 'db'),
      'targets/ml/x.yaml': target('x', '10.0.0.8'),
    });
    expect(problems(snapshot)).toEqual([
      'targets/ml/b.yaml: exporters[0].port: address 10.0.0.1:9100 of job "node" is already used by targets/ml/a.yaml',
      'targets/ml/x.yaml: hostname: "x" is already registered by targets/db/x.yaml',
    ]);
  });

  it('finds each target on an IP address several share by its port, and leaves one scraped nowhere out of the index', () => {
    const own = (port: number) => `exporters: [{type: node_exporter, port: ${port}}]\n`;
    const files: Record<string, string> = { 'groups/ml.yaml': group('ml') };
    for (let i = 0; i < 50; i++) files[`targets/ml/n${i}.yaml`] = target(`n${i}`, 'fd00::7', 'ml', own(9100 + i));
    files['targets/ml/quiet.yaml'] = target('quiet', '10.0.0.9', 'ml', 'exporters: []\n');
    files['targets/ml/solo.yaml'] = target('solo', '10.0.0.5', 'ml', own(9100));
    const repo = liveOf(files);
    let { catalog } = repo.live.snapshot();
    expect(catalog.hostsByIp.has('10.0.0.9')).toBe(false);
    expect(scrapedAtKey(catalog, 'node [fd00::7]:9137')).toBe('n37');
    expect(scrapedAtKey(catalog, 'node [fd00::7]:9150')).toBeUndefined();
    expect(catalog.hostsByIp.get('10.0.0.5')).toBe('solo');
    expect(['node 10.0.0.5:9100', 'node 10.0.0.5:9101', 'dcgm 10.0.0.5:9100'].map((key) => scrapedAtKey(catalog, key))).toEqual(['solo', undefined, undefined]);
    // Moved in place, one by one: the others stay where they are found.
    for (let i = 0; i < 49; i++) catalog = repo.set({ [`targets/ml/n${i}.yaml`]: target(`n${i}`, '10.0.0.1', 'ml', own(9100 + i)) }).catalog;
    expect(scrapedAtKey(catalog, 'node [fd00::7]:9149')).toBe('n49');
    expect(scrapedAtKey(catalog, 'node [fd00::7]:9137')).toBeUndefined();
    expect(scrapedAtKey(catalog, 'node 10.0.0.1:9137')).toBe('n37');
    expect(scrapedAtKey(catalog, 'node 10.0.0.9:9100')).toBeUndefined(); // quiet is there, scraped nowhere
    expectAddressesFound(catalog);
    // A restart from the image makes the same index, tables included.
    const restored = restartFromImage(repo.live.snapshot());
    expect(ipIndexOf(restored.catalog)).toEqual(ipIndexOf(catalog));
    expectAddressesFound(restored.catalog);
    // A newcomer on a taken port of the shared IP address is the invalid one.
    expect(problems(repo.set({ 'targets/ml/late.yaml': target('late', '10.0.0.1', 'ml', own(9120)) }))).toEqual(['targets/ml/late.yaml: exporters[0].port: address 10.0.0.1:9120 of job "node" is already used by targets/ml/n20.yaml']);
    expectSameAfterRestart(repo.live.snapshot());
  });

  it('checks exporter types against aami.yaml and token groups against the groups', () => {
    const snapshot = snapshotOf({
      'aami.yaml': 'exporters:\n  node_exporter: {job: node, port: 9100}\n',
      'groups/ml.yaml': group('ml'),
      'targets/ml/a.yaml': target('a', '10.0.0.1', 'ml', 'exporters: [{type: dcgm_exporter}]\n'),
      'tokens/t1.yaml': `id: t1\nname: t\nsecret_hash: sha256:${'c'.repeat(64)}\ndefault_group: gone\nmax_uses: 1\nexpires_at: 2030-01-01T00:00:00Z\n`,
    });
    expect(problems(snapshot)).toEqual([
      'targets/ml/a.yaml: exporters[0].type: unknown exporter type "dcgm_exporter" (aami.yaml defines node_exporter)',
      'tokens/t1.yaml: default_group: group "gone" does not exist',
    ]);
  });

  it('refuses two exporter types feeding the same job', () => {
    expect(problems(snapshotOf({ 'aami.yaml': 'exporters:\n  a: {job: node, port: 1}\n  b: {job: node, port: 2}\n' }))).toEqual([
      'aami.yaml: exporters.b.job: job "node" is already used by exporter type "a"',
    ]);
  });
});

describe('keep last good', () => {
  const base = { 'groups/ml.yaml': group('ml'), 'targets/ml/a.yaml': target('a', '10.0.0.1') };

  it('keeps the last good version of a file that stops parsing, and reports it', () => {
    const repo = liveOf(base);
    const snapshot = repo.set({ 'targets/ml/a.yaml': 'hostname: a\nip_address: [oops\n' });
    expect(snapshot.catalog.targets.get('a')?.ip_address).toBe('10.0.0.1');
    expect(problems(snapshot)[0]).toMatch(/^targets\/ml\/a.yaml: not valid YAML/);
  });

  it('keeps the last good version when an edit breaks a reference', () => {
    const repo = liveOf(base);
    let snapshot = repo.set({ 'targets/ml/a.yaml': target('a', '10.0.0.2', 'ml', 'groups: [typo]\n') });
    expect(snapshot.catalog.targets.get('a')?.ip_address).toBe('10.0.0.1');
    expect(problems(snapshot)).toEqual(['targets/ml/a.yaml: groups[0]: group "typo" does not exist']);
    snapshot = repo.set({ 'targets/ml/a.yaml': target('a', '10.0.0.2') });
    expect(snapshot.catalog.targets.get('a')?.ip_address).toBe('10.0.0.2');
    expect(problems(snapshot)).toEqual([]);
  });

  it('keeps the blob id of the version a full build serves: a restart after it breaks serves that version', () => {
    const repo = liveOf(base);
    // A target edit and a group edit in one commit: a full build places the target.
    const edited = target('a', '10.0.0.2');
    let snapshot = repo.set({ 'targets/ml/a.yaml': edited, 'groups/ml.yaml': `${group('ml')}description: ml\n` });
    expect(snapshot.files.get('targets/ml/a.yaml')?.lastGoodOid).toBe(oidOf(edited));
    // Before, the build kept the blob id the file had before (none here): the state
    // directory named no version, or an older one, for a restart to serve.
    snapshot = repo.set({ 'targets/ml/a.yaml': 'hostname: a\nip_address: [oops\n' });
    expect(snapshot.catalog.targets.get('a')?.ip_address).toBe('10.0.0.2');
    expect(savedStateOf(snapshot).last_good).toEqual({ 'targets/ml/a.yaml': oidOf(edited) });
  });

  it('leaves out a file that was never good', () => {
    const snapshot = snapshotOf({ ...base, 'targets/ml/b.yaml': 'hostname: b\n' });
    expect([...snapshot.catalog.targets.keys()]).toEqual(['a']);
    expect(problems(snapshot)).toEqual(['targets/ml/b.yaml: ip_address: is required', 'targets/ml/b.yaml: primary_group: is required']);
  });

  it('drops a deleted target at once: deleting is not breaking', () => {
    const repo = liveOf(base);
    expect(repo.set({ 'targets/ml/a.yaml': null }).catalog.targets.size).toBe(0);
  });

  it('keeps a group deleted while targets use it, with its last good version, and reports it', () => {
    const repo = liveOf({ ...base, 'targets/ml/b.yaml': target('b', '10.0.0.2'), 'checks/c/check.yaml': 'groups: {ml: {enabled: true}}\n', 'checks/c/check.sh': 'echo ok 1\n' });
    let snapshot = repo.set({ 'groups/ml.yaml': null, 'checks/c/check.sh': null });
    expect([...snapshot.catalog.targets.keys()].sort()).toEqual(['a', 'b']);
    expect(snapshot.catalog.checks.get('c')?.script.text).toBe('echo ok 1\n');
    expect(problems(snapshot)).toEqual([
      'checks/c/check.sh: was deleted, but its check still runs it: its last good version stays until that changes',
      'groups/ml.yaml: was deleted, but it is still used by check c; targets a, b: its last good version stays until that changes',
    ]);
    // A restart from the image keeps both, the check running the script it ran.
    const restored = restartFromImage(snapshot);
    expect(view(restored)).toEqual(view(snapshot));
    expect(restored.catalog.checks.get('c')).toEqual(snapshot.catalog.checks.get('c'));
    // Once nothing uses it, the deletion goes through.
    snapshot = repo.set({ 'targets/ml/a.yaml': null, 'targets/ml/b.yaml': null, 'checks/c/check.yaml': null });
    expect(snapshot.catalog.groups.has('ml')).toBe(false);
    expect(snapshot.files.has('groups/ml.yaml')).toBe(false);
    expect(problems(snapshot)).toEqual([]);
  });
});

describe('deleted groups', () => {
  const token = (groupId: string) => `id: t1\nname: t\nsecret_hash: sha256:${'c'.repeat(64)}\ndefault_group: ${groupId}\nmax_uses: 3\nexpires_at: 2030-01-01T00:00:00Z\n`;
  const base = { 'groups/ml.yaml': group('ml'), 'groups/db.yaml': group('db'), 'tokens/t1.yaml': token('db') };

  it('stays for the versions its users keep, not for a last good version the same build replaces', () => {
    // One commit deletes db and moves the token to ml: the token's last good version (in db)
    // is replaced in that build, so only target a keeps db (a restart no longer sees the
    // token's old version: it named the token before, and kept db for it alone).
    const repo = liveOf({ ...base, 'targets/db/a.yaml': target('a', '10.0.0.1', 'db') });
    const snapshot = repo.set({ 'groups/db.yaml': null, 'tokens/t1.yaml': token('ml') });
    expect(snapshot.catalog.tokens.get('t1')?.default_group).toBe('ml');
    expect(snapshot.catalog.groups.has('db')).toBe(true);
    expect(problems(snapshot)).toEqual(['groups/db.yaml: was deleted, but it is still used by target a: its last good version stays until that changes']);
    expectSameAfterRestart(snapshot);
  });

  it('goes at once when only a replaced last good version used it', () => {
    const repo = liveOf(base);
    const snapshot = repo.set({ 'groups/db.yaml': null, 'tokens/t1.yaml': token('ml') });
    expect(snapshot.catalog.groups.has('db')).toBe(false);
    expect(snapshot.files.has('groups/db.yaml')).toBe(false);
    expect(problems(snapshot)).toEqual([]);
    expectSameAfterRestart(snapshot);
  });

  it('stays while a user falls back to a last good version in it; a token that breaks is not served, and keeps nothing', () => {
    // The target's new version names a group that does not exist: it keeps its last good
    // version, in db, and db stays for it. The token's new version does the same: a token
    // fails closed (it would let hosts in), so it is not served at all, and holds no group.
    const repo = liveOf({ ...base, 'targets/db/a.yaml': target('a', '10.0.0.1', 'db') });
    const snapshot = repo.set({ 'groups/db.yaml': null, 'targets/db/a.yaml': target('a', '10.0.0.1', 'db', 'groups: [nope]\n'), 'tokens/t1.yaml': token('nope') });
    expect(snapshot.catalog.targets.get('a')?.groups).toEqual([]);
    expect(snapshot.catalog.tokens.has('t1')).toBe(false);
    expect(problems(snapshot)).toEqual([
      'groups/db.yaml: was deleted, but it is still used by target a: its last good version stays until that changes',
      'targets/db/a.yaml: groups[0]: group "nope" does not exist',
      'tokens/t1.yaml: default_group: group "nope" does not exist',
    ]);
    expectSameAfterRestart(snapshot);
  });

});

describe('clashes', () => {
  const base = { 'groups/ml.yaml': group('ml'), 'groups/db.yaml': group('db'), 'targets/ml/stg-1.yaml': target('stg-1', '10.0.0.1') };

  it('makes the newcomer the invalid file on every path: in place, after a rebuild, and after a restart', () => {
    const repo = liveOf(base);
    // An impostor in a group whose path sorts first: path order alone would let it win.
    const impostor = { 'targets/db/stg-1.yaml': target('stg-1', '10.6.6.6', 'db') };
    let snapshot = repo.set(impostor);
    const expected = ['targets/db/stg-1.yaml: hostname: "stg-1" is already registered by targets/ml/stg-1.yaml'];
    expect(problems(snapshot)).toEqual(expected);
    expect(snapshot.catalog.targets.get('stg-1')?.ip_address).toBe('10.0.0.1');
    // An unrelated group edit rebuilds everything: the established file keeps the name.
    snapshot = repo.set({ 'groups/db.yaml': `${group('db')}description: databases\n` });
    expect(problems(snapshot)).toEqual(expected);
    expect(snapshot.catalog.targets.get('stg-1')?.ip_address).toBe('10.0.0.1');
    // A restart: what the state directory keeps says who held it.
    const held = (key: string) => (key === 'host\u0000stg-1' ? 'targets/ml/stg-1.yaml' : undefined);
    const restarted = Snapshot.build(new Map(snapshot.files), null, held);
    expect(problems(restarted)).toEqual(expected);
    expect(restarted.catalog.targets.get('stg-1')?.ip_address).toBe('10.0.0.1');
    // When the established file goes, the newcomer takes the name.
    snapshot = repo.set({ 'targets/ml/stg-1.yaml': null });
    expect(snapshot.catalog.targets.get('stg-1')?.ip_address).toBe('10.6.6.6');
    expect(problems(snapshot)).toEqual([]);
  });
});

describe('clashes settled in rounds', () => {
  const groups = { 'groups/ml.yaml': group('ml'), 'groups/db.yaml': group('db'), 'groups/web.yaml': group('web') };
  const settings = (port: number) => `exporters:\n  node_exporter: {job: node, port: ${port}}\n`;

  it('gives a host name to the duplicate when its established holder falls back in the same change', () => {
    const node = 'exporters: [{type: node_exporter}]\n';
    const repo = liveOf({
      'aami.yaml': settings(9100),
      'groups/ml.yaml': group('ml'),
      'groups/db.yaml': group('db'),
      'targets/ml/m-19.yaml': target('m-19', '10.0.0.19', 'ml', node),
      // Same address, another port: no clash while the job scrapes 9100.
      'targets/ml/c.yaml': target('c', '10.0.0.19', 'ml', 'exporters: [{type: node_exporter, port: 9101}]\n'),
    });
    // A duplicate of m-19 whose path sorts first: the established file keeps the name.
    let snapshot = repo.set({ 'targets/db/m-19.yaml': target('m-19', '10.0.0.20', 'db', node) });
    expect(problems(snapshot)).toEqual(['targets/db/m-19.yaml: hostname: "m-19" is already registered by targets/ml/m-19.yaml']);
    // The job moves to 9101: ml/m-19 (every version of it) now clashes with c, which held that
    // address first, and falls back to nothing. The duplicate must then get the name: before,
    // both fell back in one round and nobody served m-19.
    snapshot = repo.set({ 'aami.yaml': settings(9101) });
    expect(snapshot.catalog.targets.get('m-19')?.ip_address).toBe('10.0.0.20');
    expect(servedPath(snapshot.catalog, 'm-19')).toBe('targets/db/m-19.yaml');
    // Its problems name who holds each claim in the end, in the order of its own claims.
    const expected = ['targets/ml/m-19.yaml: hostname: "m-19" is already registered by targets/db/m-19.yaml', 'targets/ml/m-19.yaml: exporters[0].port: address 10.0.0.19:9101 of job "node" is already used by targets/ml/c.yaml'];
    expect(problems(snapshot)).toEqual(expected);
    // A restart with what the state directory keeps decides the same.
    const restarted = restartOf(snapshot);
    expect(servedPath(restarted.catalog, 'm-19')).toBe('targets/db/m-19.yaml');
    expect(problems(restarted)).toEqual(expected);
  });

  it('keeps a served target on its address when aami.yaml moves the port, against a newcomer first by path', () => {
    const repo = liveOf({ 'aami.yaml': settings(9100), ...groups, 'targets/ml/x.yaml': target('x', '10.0.0.1') });
    // db/y sorts first, but ml/x was scraped at 10.0.0.1:9100 first: db/y is the invalid one.
    let snapshot = repo.set({ 'targets/db/y.yaml': target('y', '10.0.0.1', 'db') });
    expect(problems(snapshot)).toEqual(['targets/db/y.yaml: exporters[0].port: address 10.0.0.1:9100 of job "node" is already used by targets/ml/x.yaml']);
    // The job moves to 9101: both now want 10.0.0.1:9101, where nobody was scraped before.
    // ml/x still holds its address, moved: before, db/y took it by path order.
    snapshot = repo.set({ 'aami.yaml': settings(9101) });
    expect(servedPath(snapshot.catalog, 'x')).toBe('targets/ml/x.yaml');
    expect(snapshot.catalog.targets.has('y')).toBe(false);
    expect(problems(snapshot)).toEqual(['targets/db/y.yaml: exporters[0].port: address 10.0.0.1:9101 of job "node" is already used by targets/ml/x.yaml']);
    expectSameAfterRestart(snapshot);
  });

  it('gives a host name to a duplicate whose rival won it only for a while', () => {
    const credential = `node_credential_hash: sha256:${'1'.repeat(64)}\n`;
    const repo = liveOf({ ...groups, 'targets/ml/c.yaml': target('c', '10.0.0.2'), 'targets/web/b.yaml': target('b', '10.0.0.3', 'web', credential) });
    // Refused (c holds the address): b keeps serving 10.0.0.3 and the credential.
    repo.set({ 'targets/web/b.yaml': target('b', '10.0.0.2', 'web') });
    // db/a comes first by path, so it beats ml/a to the name, but b (falling back to its last
    // good version) holds its credential: db/a goes, and the name must go to ml/a, not nobody.
    const snapshot = repo.set({ 'targets/db/a.yaml': target('a', '10.0.0.1', 'db', credential), 'targets/ml/a.yaml': target('a', '10.0.0.4') });
    expect(servedPath(snapshot.catalog, 'a')).toBe('targets/ml/a.yaml');
    expect(snapshot.catalog.targets.get('b')?.ip_address).toBe('10.0.0.3');
    // Each problem names the file that holds the claim in the end (not db/a, which holds none).
    expect(problems(snapshot)).toEqual([
      'targets/db/a.yaml: hostname: "a" is already registered by targets/ml/a.yaml',
      'targets/db/a.yaml: node_credential_hash: is the node credential of targets/web/b.yaml too',
      'targets/web/b.yaml: exporters[0].port: address 10.0.0.2:9100 of job "node" is already used by targets/ml/c.yaml',
    ]);
    expectSameAfterRestart(snapshot);
  });

  it('lets a chain of files fall back one after another: one commit moves each host onto the next one\'s address', () => {
    // a-0..a-4 move one address up in one commit; a-5 stays. a-4 clashes with a-5 and falls
    // back to its old address, which a-3 now wants: and so on down the chain, a round a file.
    const files: Record<string, string> = { ...groups };
    for (let i = 0; i <= 5; i++) files[`targets/ml/a-${i}.yaml`] = target(`a-${i}`, `10.0.0.${i}`);
    const repo = liveOf(files);
    const moved: Record<string, string> = {};
    for (let i = 0; i < 5; i++) moved[`targets/ml/a-${i}.yaml`] = target(`a-${i}`, `10.0.0.${i + 1}`);
    const snapshot = repo.set(moved);
    for (let i = 0; i <= 5; i++) expect(snapshot.catalog.targets.get(`a-${i}`)?.ip_address).toBe(`10.0.0.${i}`);
    expect(problems(snapshot)).toEqual([0, 1, 2, 3, 4].map((i) => `targets/ml/a-${i}.yaml: exporters[0].port: address 10.0.0.${i + 1}:9100 of job "node" is already used by targets/ml/a-${i + 1}.yaml`));
    expectSameAfterRestart(snapshot);
  });

  it('names the files that hold the claims in the end, the same before and after a restart', () => {
    const credential = `node_credential_hash: sha256:${'2'.repeat(64)}\n`;
    const both = (port = '') => `exporters: [{type: node_exporter${port}}, {type: dcgm_exporter}]\n`;
    const repo = liveOf({ ...groups, 'targets/web/b.yaml': target('b', '10.0.0.1', 'web', both(', port: 9101')) });
    // One commit: b moves to 10.0.0.2 with a credential that ml/a (first by path) wants too,
    // while ml/a wants the addresses b's last good version holds. The rest clash on names and
    // on 10.0.0.1:9100. Before, b fell back for good, and was told that ml/c and ml/a (which
    // serve nothing in the end) hold its claims; a restart worded that otherwise.
    const snapshot = repo.set({
      'targets/web/b.yaml': target('b', '10.0.0.2', 'web', credential),
      'targets/ml/a.yaml': target('a', '10.0.0.1', 'ml', both(', port: 9101') + credential),
      'targets/ml/c.yaml': target('c', '10.0.0.2'),
      'targets/db/b.yaml': target('b', '10.0.0.1', 'db', both()),
      'targets/db/c.yaml': target('c', '10.0.0.1', 'db'),
    });
    // ml/a could hold the credential only while b kept its new version; b's last good version
    // would take ml/a's addresses. So ml/a goes, and b serves its new version after all.
    expect([...snapshot.catalog.targets.values()].map((t) => [t.hostname, targetPath(t)]).sort()).toEqual([
      ['b', 'targets/web/b.yaml'],
      ['c', 'targets/db/c.yaml'],
    ]);
    expect(snapshot.catalog.targets.get('b')?.ip_address).toBe('10.0.0.2');
    expect(problems(snapshot)).toEqual([
      'targets/db/b.yaml: hostname: "b" is already registered by targets/web/b.yaml',
      'targets/db/b.yaml: exporters[0].port: address 10.0.0.1:9100 of job "node" is already used by targets/db/c.yaml',
      'targets/ml/a.yaml: node_credential_hash: is the node credential of targets/web/b.yaml too',
      'targets/ml/c.yaml: hostname: "c" is already registered by targets/db/c.yaml',
      'targets/ml/c.yaml: exporters[0].port: address 10.0.0.2:9100 of job "node" is already used by targets/web/b.yaml',
    ]);
    expectSameAfterRestart(snapshot);
  });
});

/** Where a catalog's targets are scraped, from the targets themselves: "job address" key → host name. */
function addressesFrom(catalog: Catalog): Map<string, string> {
  const addresses = new Map<string, string>();
  for (const target of catalog.targets.values()) for (const key of addressKeys(catalog.settings, target)) addresses.set(key, target.hostname);
  return addresses;
}

/** Each IP address's addresses, from the targets themselves: "job port" → host name (targets scraped nowhere have none). */
function ipIndexFrom(catalog: Catalog): Map<string, Record<string, string>> {
  const index = new Map<string, Record<string, string>>();
  for (const target of catalog.targets.values()) {
    for (const port of portKeys(catalog.settings, target)) index.set(target.ip_address, { ...index.get(target.ip_address), [port]: target.hostname });
  }
  return sortedIndex(index);
}

/** The catalog's own IP index in ipIndexFrom's form: a host name (one target there) stands for that target's addresses. */
function ipIndexOf(catalog: Catalog): Map<string, Record<string, string>> {
  return sortedIndex(new Map([...catalog.hostsByIp].map(([ip, on]) => [ip, typeof on === 'string' ? Object.fromEntries(portKeys(catalog.settings, catalog.targets.get(on)).map((port) => [port, on])) : Object.fromEntries(on)])));
}

function sortedIndex(index: Map<string, Record<string, string>>): Map<string, Record<string, string>> {
  const sorted = (record: Record<string, string>) => Object.fromEntries(Object.entries(record).sort(([a], [b]) => (a < b ? -1 : 1)));
  return new Map([...index].sort(([a], [b]) => (a < b ? -1 : 1)).map(([ip, record]) => [ip, sorted(record)]));
}

/** Each address a catalog's targets are scraped at, as the catalog looks it up: the host name scraped there (its index and its targets agree). */
function expectAddressesFound(catalog: Catalog, where?: string): void {
  expect(ipIndexOf(catalog), where).toEqual(ipIndexFrom(catalog));
  const addresses = addressesFrom(catalog);
  expect(new Map([...addresses.keys()].map((key) => [key, scrapedAtKey(catalog, key)])), where).toEqual(addresses);
}

/** Everything a snapshot says, in a form two snapshots can be compared by. */
function view(snapshot: Snapshot) {
  const sorted = <V>(map: ReadonlyMap<string, V>) => Object.fromEntries([...map].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const { catalog } = snapshot;
  return {
    settings: catalog.settings,
    groups: sorted(catalog.groups),
    targets: sorted(catalog.targets),
    tokens: sorted(catalog.tokens),
    hostsByIp: Object.fromEntries(ipIndexOf(catalog)),
    nodeCredentials: sorted(catalog.nodeCredentials),
    apiCredentials: sorted(catalog.apiCredentials),
    tokenHosts: sorted(catalog.tokenHosts),
    groupTargets: Object.fromEntries([...catalog.groupTargets].map(([group, targets]): [string, string[]] => [group, [...targets.keys()].sort()]).sort(([a], [b]) => (a < b ? -1 : 1))),
    wants: Object.fromEntries([...snapshot.wants].map(([key, paths]): [string, string[]] => [key, [...paths].sort()]).sort(([a], [b]) => (a < b ? -1 : 1))),
    checks: Object.keys(sorted(catalog.checks)),
    problems: problems(snapshot),
    rejected: [...snapshot.rejected.keys()].sort(),
    lastGood: Object.fromEntries([...snapshot.files].sort(([a], [b]) => (a < b ? -1 : 1)).map(([path, record]) => [path, [record.lastGood ?? null, record.lastGoodOid ?? null]])),
  };
}

/** Random change sequences over a small repo (few hosts, addresses and credentials: clashes are common); the same seed gives the same steps. */
function randomChanges(seed: number) {
  const rng = random(seed * 7919);
  const groups = ['ml', 'db', 'web'];
  const hosts = ['a', 'b', 'c', 'stg-1'];
  const ips = ['10.0.0.1', '10.0.0.2', 'fd00::3']; // an IPv6 address too: its address keys are bracketed ([fd00::3]:9100)
  const tokenFile = (id: string, groupId: string) => `id: ${id}\nname: t\nsecret_hash: sha256:${'c'.repeat(64)}\ndefault_group: ${groupId}\nmax_uses: 3\nexpires_at: 2030-01-01T00:00:00Z\n`;
  const credentialFile = (id: string, role: string) => `id: ${id}\nname: n-${id}\nrole: ${role}\nsecret_hash: sha256:${'d'.repeat(64)}\n`;
  // Two node credential hashes, so two target files can claim the same one.
  const credentialHashes = [`sha256:${'1'.repeat(64)}`, `sha256:${'2'.repeat(64)}`];
  return (): FileUpdate[] => {
    const kind = rng.next();
    if (kind < 0.55) {
      const host = rng.pick(hosts);
      const path = `targets/${rng.pick(groups)}/${host}.yaml`;
      const roll = rng.next();
      // An exporter on a port of its own: two files on one IP address clash only on the same port.
      // None at all, or only a disabled one: a target that claims no address (its draft leaves the IP index as it was).
      const exporters = rng.pick(['', '', 'exporters: [{type: node_exporter}, {type: dcgm_exporter}]\n', 'exporters: [{type: node_exporter, port: 9101}]\n', 'exporters: []\n', 'exporters: [{type: node_exporter, enabled: false}]\n']);
      const extra = exporters + (rng.next() < 0.3 ? `node_credential_hash: ${rng.pick(credentialHashes)}\n` : '');
      const text =
        roll < 0.1 ? null : roll < 0.17 ? 'hostname: [broken\n' : roll < 0.24 ? target(host, rng.pick(ips), 'ml', 'groups: [nope]\n') : target(host, rng.pick(ips), path.split('/')[1]!, extra);
      return [update(path, text)];
    }
    if (kind < 0.65) {
      const id = rng.pick(['t1', 't2']);
      // Stray files whose last path component looks like an id: they must not touch the real token.
      const path = rng.pick([`tokens/${id}.yaml`, `tokens/${id}.yaml`, `tokens/old/${id}.yaml`, `tokens/${id}x.yml`]);
      return [update(path, rng.next() < 0.2 ? null : rng.next() < 0.1 ? 'max_uses: [\n' : tokenFile(id, rng.pick(groups)))];
    }
    if (kind < 0.72) {
      const id = rng.pick(['aaaaaaaa', 'bbbbbbbb']);
      const path = rng.pick([`credentials/${id}.yaml`, `credentials/${id}.yaml`, `credentials/archive/${id}.yaml`]);
      return [update(path, rng.next() < 0.2 ? null : rng.next() < 0.1 ? 'role: [\n' : credentialFile(id, rng.pick(['reader', 'admin'])))];
    }
    if (kind < 0.87) {
      const id = rng.pick(groups);
      const roll = rng.next();
      return [update(`groups/${id}.yaml`, roll < 0.25 ? null : roll < 0.35 ? group(id, 'logical', 'nowhere') : group(id))];
    }
    if (kind < 0.9) {
      // The node job moves between 9100 and 9101: files that did not clash do, and the other way round.
      return [update('aami.yaml', `exporters:\n  node_exporter: {job: node, port: ${rng.pick([9100, 9101])}}\n  dcgm_exporter: {job: dcgm, port: 9400}\n`)];
    }
    // Two files in one commit, as a batch of writes or a pull request does it.
    const changes = [update(`targets/ml/${rng.pick(hosts)}.yaml`, target(rng.pick(hosts), rng.pick(ips))), update(`targets/db/${rng.pick(hosts)}.yaml`, target(rng.pick(hosts), rng.pick(ips), 'db'))];
    // A file's name must agree with its hostname: the parse reports the rest.
    return changes.filter((c, i) => changes.findIndex((o) => o.path === c.path) === i);
  };
}

const start = () => snapshotOf({ 'groups/ml.yaml': group('ml'), 'groups/db.yaml': group('db') });
const describeChanges = (changes: FileUpdate[]) => changes.map((c) => `${c.path}=${c.oid ? 'write' : 'delete'}`).join(', ');
// SEEDS=3000 npx vitest run test/catalog.test.ts searches further (the default keeps CI quick).
const seeds = Number(process.env.SEEDS ?? 300);
const timeout = 120_000 * Math.max(1, seeds / 300);

/**
 * Every step of the random change sequences, applied to a live catalog as the writer applies
 * it and checked against a full build of the same change; `then` may go on from another
 * live catalog. Returns the steps checked.
 */
function eachStep(then: (live: LiveCatalog, where: string) => LiveCatalog | void = () => {}): number {
  let checked = 0;
  for (let seed = 1; seed <= seeds; seed++) {
    const next = randomChanges(seed);
    let live = new LiveCatalog(start());
    /** The last snapshot published, as it was shown then. */
    let shown: { snapshot: Snapshot; view: ReturnType<typeof view> } | undefined;
    for (let step = 0; step < 40; step++) {
      const changes = next();
      const where = `seed ${seed}, step ${step}: ${describeChanges(changes)}`;
      // The draft first: on a catalog restored from the image, its IP index is made by the draft's first look.
      const before = live.snapshot();
      const draft = live.draft();
      draft.apply(changes);
      live.publish(draft.freeze(null));
      const full = rebuildWith(before, changes);
      const now = view(live.snapshot());
      expect(now, where).toEqual(view(full));
      // A published snapshot never changes: the draft made from it left it as it was.
      if (shown?.snapshot === before) expect(view(before), `${where}: the snapshot before`).toEqual(shown.view);
      shown = { snapshot: live.snapshot(), view: now };
      expectAddressesFound(live.snapshot().catalog, where);
      live = then(live, where) ?? live;
      checked++;
    }
  }
  return checked;
}

describe('the live catalog', () => {
  it('equals a full build after every step of random change sequences (300 sequences of 40 steps)', { timeout }, () => {
    expect(eachStep()).toBe(seeds * 40);
  });
});

/** A file as the restart image writes it: its record (whose last good version may be its current one itself), problems and whether it contributes nothing. */
const asSaved = (snapshot: Snapshot, path: string) => {
  const record = snapshot.files.get(path);
  return JSON.stringify([record ?? null, record?.lastGood === record?.parsed.entity, snapshot.problemsByFile.get(path) ?? null, snapshot.rejected.has(path)]);
};

/** The paths whose file is not saved alike in two snapshots, from what each holds (not which objects). */
function savedDifferently(a: Snapshot, b: Snapshot): Set<string> {
  return new Set([...a.files.keys(), ...b.files.keys()].filter((path) => asSaved(a, path) !== asSaved(b, path)));
}

/**
 * A stop and a start from the restart image: the snapshot written as an image over a base
 * of `base` (by default itself: an image of no file), of the files that differ from it, and
 * the two read back.
 */
function restartFromImage(snapshot: Snapshot, base = snapshot): Snapshot {
  const head = 'f'.repeat(40);
  const saved = new Snapshot(snapshot.version, head, snapshot.files, snapshot.catalog, snapshot.problemsByFile, snapshot.rejected, snapshot.wants);
  const restored = restoreImage(imageOf(saved, 'this program', { id: 'the base', changed: savedDifferently(base, snapshot) }).split('\n'), baseOf(base, 'this program', 'the base').split('\n'), head, 'this program');
  if ('reason' in restored) throw new Error(`the image was not taken: ${restored.reason}`);
  return restored.snapshot;
}

describe('a restart from the image a stopping server saves', () => {
  it('serves what the server served, and takes every later change as the server would have (300 sequences of 40 steps)', { timeout }, () => {
    // The base the images are written over: a snapshot of some steps before, or of another sequence.
    let base: Snapshot | undefined;
    let restarts = 0;
    const checked = eachStep((live, where) => {
      // A restart at every step: the next step changes what the image gave (one not looked at yet: see eachStep).
      const restored = restartFromImage(live.snapshot(), base);
      const next = restartFromImage(live.snapshot());
      expect(view(restored), where).toEqual(view(live.snapshot()));
      // Every file as it was, not only what the catalog shows (a changed comment, a broken file's blob).
      expect(savedDifferently(restored, live.snapshot()), where).toEqual(new Set());
      // What a server counts as changed since its base holds every file saved differently: by
      // the maps both share (the step after a restart), or by walking them (not shared).
      if (base) for (const path of savedDifferently(base, live.snapshot())) expect(changedFiles(base, live.snapshot()).has(path), `${where}: ${path}`).toBe(true);
      if (restarts++ % 3 === 0) base = next;
      // The catalog state the image carries is the one the restored snapshot makes.
      expect(savedStateOf(restored), where).toEqual(stateOf(restored));
      // A served target is its file's last good version itself: an in-place change finds it by identity.
      for (const target of restored.catalog.targets.values()) {
        const lastGood = restored.files.get(targetPath(target))?.lastGood;
        expect(lastGood?.kind === 'target' && lastGood.value === target, `${where}: ${targetPath(target)}`).toBe(true);
      }
      // One object for a file's current version and its last good one, as the server had it (not a copy each).
      for (const [path, record] of live.snapshot().files) {
        const again = restored.files.get(path)!;
        expect(again.lastGood === again.parsed.entity, `${where}: ${path}`).toBe(record.lastGood === record.parsed.entity);
      }
      return new LiveCatalog(next);
    });
    expect(checked).toBe(seeds * 40);
  });

  it('makes the IP index of a restored catalog a slice at a time, or the rest at the first look', () => {
    const files: Record<string, string> = { 'groups/ml.yaml': group('ml') };
    for (let i = 0; i < 5000; i++) files[`targets/ml/n${i}.yaml`] = target(`n${i}`, `10.1.${i >> 8}.${i & 255}`, 'ml', 'exporters: [{type: node_exporter}, {type: dcgm_exporter}]\n');
    // A file that clashes: the catalog state names who holds what it claims.
    files['targets/ml/twin.yaml'] = target('twin', '10.1.0.0', 'ml', 'exporters: [{type: node_exporter}]\n');
    const snapshot = snapshotOf(files);
    const expected = addressesFrom(snapshot.catalog);
    expect(expected.size).toBe(10_000);
    expect(Object.values(savedStateOf(snapshot).established)).toEqual(['targets/ml/n0.yaml']);
    // Every slice in the background; one, then the first look makes the rest; no slice at all.
    for (const slices of [Infinity, 1, 0]) {
      const restored = restartFromImage(snapshot);
      // What a start asks before it serves (the SD files' stamp): the state the image carries, with no look at the index.
      expect(savedStateOf(restored)).toEqual({ ...savedStateOf(snapshot), head: restored.head });
      const steps = restored.deferred();
      let taken = 0;
      while (taken < slices && !steps.next().done) taken++;
      expect(taken).toBe(Math.min(slices, 2)); // 5,000 targets: two slices of 2,048 between steps, the rest at the end
      expect(ipIndexOf(restored.catalog)).toEqual(ipIndexFrom(snapshot.catalog));
      expectAddressesFound(restored.catalog);
      expect([...restored.deferred()]).toEqual([]);
    }
  });
});

/** For each target file: the versions that fit the groups and aami.yaml, best first, and the one it contributes. */
function targetVersions(snapshot: Snapshot) {
  const { catalog } = snapshot;
  return [...snapshot.files].flatMap(([path, record]) => {
    if (!path.startsWith('targets/')) return [];
    const { versions } = targetCandidate(catalog, path, record, () => {});
    const served = versions.findIndex((v) => servedPath(catalog, v.hostname) === path && catalog.targets.get(v.hostname) === v);
    return [{ path, versions, served: served < 0 ? versions.length : served }];
  });
}

describe('a full build', () => {
  it('settles: a restart decides the same, established targets stay, and no file stays below a version it could have (300 sequences of 40 steps)', { timeout }, () => {
    let checked = 0;
    for (let seed = 1; seed <= seeds; seed++) {
      const next = randomChanges(seed);
      let snapshot = start();
      for (let step = 0; step < 40; step++) {
        const changes = next();
        const before = snapshot;
        snapshot = rebuildWith(before, changes);
        const where = `seed ${seed}, step ${step}: ${describeChanges(changes)}`;
        expectSameAfterRestart(snapshot, where);
        const { catalog } = snapshot;
        const holder = establishedIn(catalog);
        // The claims of the targets served before, as this build's aami.yaml keys them → how many make each.
        const claimedBefore = new Map<string, number>();
        for (const was of before.catalog.targets.values()) for (const key of claimKeys(catalog.settings, was)) claimedBefore.set(key, (claimedBefore.get(key) ?? 0) + 1);
        const files = targetVersions(snapshot);
        for (const { path, versions, served } of files) {
          // A file left out, or served at its last good version, could not have its better
          // version: another file holds one of its claims (else a host name could go to nobody).
          for (const version of versions.slice(0, served)) {
            const held = claimKeys(catalog.settings, version).filter((key) => ![undefined, path].includes(holder(key)));
            expect(held, `${where}: ${path} could serve ${JSON.stringify(version)}`).not.toEqual([]);
          }
          // A served version that still fits keeps serving, on aami.yaml steps too (its
          // addresses move with the port), unless a port change moved another served target
          // onto one of its addresses: of two established files, one must go.
          const was = before.catalog.targets.get(versions[0]?.hostname ?? '');
          if (was && servedPath(before.catalog, was.hostname) === path && versions.includes(was) && claimKeys(catalog.settings, was).every((key) => claimedBefore.get(key) === 1)) {
            expect(served, `${where}: ${path} no longer serves`).toBeLessThan(versions.length);
          }
        }
        // A problem names a file that serves a target: one that holds the claim in the end.
        const serving = new Set([...catalog.targets.values()].map(targetPath));
        for (const problem of problems(snapshot)) {
          const named = / (?:by|of) (targets\/\S+\.yaml)/.exec(problem)?.[1];
          if (named) expect(serving.has(named), `${where}: ${problem}`).toBe(true);
        }
        checked++;
      }
    }
    expect(checked).toBe(seeds * 40);
  });
});
