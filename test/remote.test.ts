import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseRemoteUrl, Remote } from '../src/git/remote.js';
import { createLogger } from '../src/log.js';
import { startServer } from '../src/server.js';
import { gitCli, onCleanup, tempDir, targetYaml } from './helpers.js';
import { ADMIN, freePort, serverConfig, waitFor } from './node-helpers.js';

function bareRemote(): string {
  const dir = join(tempDir('aami-remote-'), 'config.git');
  gitCli(tempDir(), 'init', '-q', '--bare', '--initial-branch=main', dir);
  return dir;
}

async function remoteServer(remote: string, options: { readOnly?: boolean; syncIntervalMs?: number } = {}) {
  const config = serverConfig({
    remote: { url: remote, branch: 'main', syncIntervalMs: options.syncIntervalMs ?? 60_000, webhookSecret: 'webhook-secret-0123456789' },
    readOnly: options.readOnly,
  });
  const server = await startServer(config);
  onCleanup(() => server.close());
  const call = async (method: string, path: string, body?: unknown, token: string = ADMIN) => {
    const response = await fetch(`${server.url}${path}`, { method, headers: { authorization: `Bearer ${token}` }, body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: response.status, json: (await response.json()) as any };
  };
  return { ...server, repo: config.repo, sd: (job: string) => readFileSync(join(config.sdDir, `${job}.json`), 'utf8'), call, sync: () => call('POST', '/api/v1/sync') };
}

/** A clone of the remote, as a person merging a pull request would have it. */
function personClone(remote: string) {
  const dir = join(tempDir(), 'clone');
  gitCli(tempDir(), 'clone', '-q', remote, dir);
  return {
    dir,
    commitFile(path: string, text: string, message: string) {
      gitCli(dir, 'pull', '-q', '--ff-only');
      mkdirSync(dirname(join(dir, path)), { recursive: true });
      writeFileSync(join(dir, path), text);
      gitCli(dir, 'add', '-A');
      gitCli(dir, 'commit', '-q', '-m', message);
      gitCli(dir, 'push', '-q', 'origin', 'HEAD:main');
    },
  };
}

/** A remote that accepts connections and never answers: its URL, the connections it holds, the first one's coming. */
async function silentRemote() {
  const sockets: Socket[] = [];
  let accepted!: () => void;
  const connected = new Promise<void>((resolve) => (accepted = resolve));
  const silent = createServer((socket) => {
    sockets.push(socket);
    // What git sends is read and dropped: a client that goes away ends (and closes) the socket.
    socket.resume();
    accepted();
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  onCleanup(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise<void>((resolve) => silent.close(() => resolve()));
  });
  return { url: `http://127.0.0.1:${(silent.address() as AddressInfo).port}/config.git`, sockets, connected, silent };
}

describe('Git remote', () => {
  it('ends a fetch under way when the server stops (a remote that accepts and never answers), and starts none after', async () => {
    const { url, connected } = await silentRemote();
    const dir = join(tempDir(), 'repo.git');
    gitCli(tempDir(), 'init', '--quiet', '--bare', dir);
    const remote = new Remote(dir, parseRemoteUrl(url), 'main');
    const fetching = remote.fetch();
    await connected;
    remote.stopFetching();
    await expect(fetching).rejects.toThrow('the server is stopping: the pull was ended');
    await expect(remote.fetch()).rejects.toThrow('the server is stopping: no more pulls');
  });

  it('serves what its copy has when the remote hangs at a restart, while the pull goes on; the stop ends the pull', async () => {
    const { url, sockets, connected, silent } = await silentRemote();
    // A copy the server made before (here: without a remote), then a restart following a remote that accepts and never answers.
    const first = serverConfig();
    await (await startServer(first)).close();
    const lines: string[] = [];
    const config = { ...first, logger: createLogger((line) => lines.push(line)), remote: { url, branch: 'main', syncIntervalMs: 60_000, startWaitMs: 100 } };
    const server = await startServer(config);
    await connected;
    // Serving, with the pull still under way: its connection is open.
    expect(sockets.some((socket) => !socket.destroyed && socket.readyState === 'open')).toBe(true);
    const health = await fetch(`${server.url}/api/v1/health`, { headers: { authorization: `Bearer ${ADMIN}` } });
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'degraded', repo: { remote: { error: expect.stringContaining('the first pull from the remote has not finished'), last_pull: null } } });
    expect(lines.some((line) => line.includes('the remote has not answered yet'))).toBe(true);
    const targets = await fetch(`${server.url}/api/v1/targets`, { headers: { authorization: `Bearer ${ADMIN}` } });
    expect(targets.status).toBe(200);
    // A write waits behind the pull: never answered before its push, which needs the remote.
    let answered: number | undefined;
    const write = fetch(`${server.url}/api/v1/targets`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` }, body: JSON.stringify({ hostname: 'during', ip_address: '10.0.0.9', primary_group_id: 'ml-training' }) }).then((response) => (answered = response.status));
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(answered).toBeUndefined();
    // The remote takes no new connection (the pull's stays open, hanging). A stop ends the pull at
    // once, not at git's timeout: the write behind it goes on to its push, which fails. Answered, not with a 201.
    silent.close(); // its callback waits for the open connection: not awaited
    const stopped = server.close();
    expect(await write).toBe(503);
    await stopped;
    expect(gitCli(config.repo, 'log', '--format=%s', 'main')).not.toContain('during');
  });

  it('leaves nothing running when a start fails after its first pull began: the pull ends, the restart image is put back', async () => {
    const { url, sockets, connected } = await silentRemote();
    const first = serverConfig();
    await (await startServer(first)).close();
    // The pull hangs on the remote; then the start fails (node scripts missing from --scripts-dir).
    const config = { ...first, scriptsDir: tempDir(), remote: { url, branch: 'main', syncIntervalMs: 60_000, startWaitMs: 1000 } };
    const starting = startServer(config);
    await connected; // the first pull is under way (the start waits a second for it)
    await expect(starting).rejects.toThrow(/ENOENT/);
    // The pull's git was stopped with the start: its connection closes, not at git's timeout.
    await waitFor('the pull to end', async () => sockets.every((socket) => socket.destroyed));
    // The restart image the failed start took is back: the next start (the scripts found again) starts from it, not from Git.
    const lines: string[] = [];
    const again = await startServer({ ...first, logger: createLogger((line) => lines.push(line)) });
    await again.close();
    expect(lines.some((line) => line.includes('started from the snapshot the last server saved'))).toBe(true);
  });

  it('seeds an empty remote from the starter and pushes every API change before answering', async () => {
    const remote = bareRemote();
    const server = await remoteServer(remote);
    expect(gitCli(remote, 'log', '--format=%s', 'main').trim()).toBe('Initialize config repo');
    const created = await server.call('POST', '/api/v1/targets', { hostname: 'web-01', ip_address: '10.0.0.5', primary_group_id: 'api-servers' });
    expect(created.status).toBe(201);
    expect(gitCli(remote, 'log', '-1', '--format=%an|%s', 'main').trim()).toBe('admin|Add target web-01');
    expect((await server.call('GET', '/api/v1/health')).json.repo.remote).toMatchObject({ branch: 'main', error: null });
  });

  it('gives a clone its push guards at every start: one killed before it set them gets them at the next', async () => {
    const remote = bareRemote();
    await (await remoteServer(remote)).close(); // seeds the remote
    const config = serverConfig({ remote: { url: remote, branch: 'main', syncIntervalMs: 60_000 } });
    const guards = () => ['receive.denyNonFastForwards', 'receive.denyDeletes'].map((key) => spawnSync('git', ['--git-dir', config.repo, 'config', key], { encoding: 'utf8' }).stdout.trim());
    await (await startServer(config)).close(); // clones it
    expect(guards()).toEqual(['true', 'true']);
    // What a kill between the clone and its guards leaves.
    for (const key of ['receive.denyNonFastForwards', 'receive.denyDeletes']) gitCli(config.repo, 'config', '--unset', key);
    expect(guards()).toEqual(['', '']);
    const again = await startServer(config);
    onCleanup(() => again.close());
    expect(guards()).toEqual(['true', 'true']);
  });

  it('brings a pull request merged on the remote into the SD files, by webhook and by polling', async () => {
    const remote = bareRemote();
    const server = await remoteServer(remote, { syncIntervalMs: 300 });
    const person = personClone(remote);
    person.commitFile('targets/ml-training/pr-01.yaml', targetYaml('pr-01', '10.0.7.1'), 'Add pr-01');
    const t0 = Date.now();
    await waitFor('the polled commit in the SD file', async () => server.sd('node').includes('10.0.7.1:9100'));
    const polled = Date.now() - t0;

    const fast = await remoteServer(remote, { syncIntervalMs: 600_000 });
    person.commitFile('targets/ml-training/pr-02.yaml', targetYaml('pr-02', '10.0.7.2'), 'Add pr-02');
    const body = JSON.stringify({ ref: 'refs/heads/main' });
    const signature = (await import('node:crypto')).createHmac('sha256', 'webhook-secret-0123456789').update(body).digest('hex');
    const t1 = Date.now();
    const hook = await fetch(`${fast.url}/api/v1/sync`, { method: 'POST', headers: { 'x-hub-signature-256': `sha256=${signature}` }, body });
    expect(hook.status).toBe(200);
    await waitFor('the webhook commit in the SD file', async () => fast.sd('node').includes('10.0.7.2:9100'));
    const hooked = Date.now() - t1;
    console.log(`remote: push on the remote → SD file changed: ${hooked} ms with the webhook, ${polled} ms polling every 300 ms`);
    expect((await fetch(`${fast.url}/api/v1/sync`, { method: 'POST', headers: { 'x-hub-signature-256': 'sha256=00' }, body })).status).toBe(401);
  });

  it('takes a rewritten remote history only with an admin credential: a signed webhook asking for it only pulls', async () => {
    const remote = bareRemote();
    const server = await remoteServer(remote);
    await server.call('POST', '/api/v1/targets', { hostname: 'kept-01', ip_address: '10.0.8.1', primary_group_id: 'ml-training' });
    const head = gitCli(server.repo, 'rev-parse', 'main').trim();
    // Someone rewrites the branch on the remote: the commit that added kept-01 is gone.
    gitCli(remote, 'update-ref', 'refs/heads/main', `${head}~1`);
    const crypto = await import('node:crypto');
    const body = JSON.stringify({ accept_remote_history: true });
    const hooks: Array<Record<string, string>> = [
      { 'x-hub-signature-256': `sha256=${crypto.createHmac('sha256', 'webhook-secret-0123456789').update(body).digest('hex')}` },
      { 'x-gitlab-token': 'webhook-secret-0123456789' },
    ];
    for (const headers of hooks) {
      const hook = await fetch(`${server.url}/api/v1/sync`, { method: 'POST', headers, body });
      expect(hook.status).toBe(200);
      expect(((await hook.json()) as { error: string }).error).toMatch(/rewritten/);
      expect(gitCli(server.repo, 'rev-parse', 'main').trim()).toBe(head);
    }
    expect((await server.call('GET', '/api/v1/targets/kept-01')).status).toBe(200);
    // An admin decides.
    expect((await server.call('POST', '/api/v1/sync', { accept_remote_history: true })).status).toBe(200);
    expect(gitCli(server.repo, 'rev-parse', 'main').trim()).toBe(`${gitCli(remote, 'rev-parse', 'main').trim()}`);
    expect((await server.call('GET', '/api/v1/targets/kept-01')).status).toBe(404);
  });

  it('keeps max_uses across two servers: 100 registrations each, 150 admitted, both converge', async () => {
    const remote = bareRemote();
    const a = await remoteServer(remote);
    const b = await remoteServer(remote);
    const { json: token } = await a.call('POST', '/api/v1/bootstrap-tokens', { name: 'shared', default_group_id: 'ml-training', max_uses: 150, expires_at: '2099-01-01T00:00:00Z' });
    await b.sync();
    const register = (server: typeof a, i: number) =>
      server.call('POST', '/api/v1/bootstrap/register', { hostname: `node-${i}`, ip_address: `10.3.${i >> 8}.${i & 255}` }, token.token);
    const results = await Promise.all([...Array.from({ length: 100 }, (_, i) => register(a, i)), ...Array.from({ length: 100 }, (_, i) => register(b, 100 + i))]);
    const created = results.filter((r) => r.status === 201).length;
    const codes = results.filter((r) => r.status !== 201).map((r) => r.json.error.code);
    expect(new Set(codes), JSON.stringify(results.find((r) => r.status !== 201 && r.json.error.code !== 'token_exhausted')?.json)).toEqual(new Set(['token_exhausted']));
    expect(created).toBe(150);
    await a.sync();
    await b.sync();
    const heads = [gitCli(a.repo, 'rev-parse', 'HEAD').trim(), gitCli(b.repo, 'rev-parse', 'HEAD').trim(), gitCli(remote, 'rev-parse', 'main').trim()];
    expect(new Set(heads).size).toBe(1);
    expect(gitCli(remote, 'ls-tree', '-r', '--name-only', 'main', 'targets').trim().split('\n')).toHaveLength(150);
    expect(gitCli(remote, 'show', `main:tokens/${token.id}.yaml`)).toMatch(/^uses: 150$/m);
    await waitFor('both SD files to agree', async () => a.sd('node') === b.sd('node') && JSON.parse(a.sd('node')).length === 150);
    gitCli(remote, 'fsck', '--strict', '--no-progress');
  });

  it('refuses writes while the remote is away, loses nothing, and works again when it is back', async () => {
    const remote = bareRemote();
    const server = await remoteServer(remote);
    await server.call('POST', '/api/v1/targets', { hostname: 'before', ip_address: '10.0.0.1', primary_group_id: 'ml-training' });
    renameSync(remote, `${remote}.away`);
    const refused = await server.call('POST', '/api/v1/targets', { hostname: 'during', ip_address: '10.0.0.2', primary_group_id: 'ml-training' });
    expect(refused).toMatchObject({ status: 503, json: { error: { code: 'remote_unavailable' } } });
    expect((await server.call('GET', '/api/v1/targets')).json.map((t: any) => t.hostname)).toEqual(['before']);
    // Health says what is wrong, while reads and SD keep being served.
    const degraded = (await server.call('GET', '/api/v1/health')).json;
    expect(degraded.status).toBe('degraded');
    expect(degraded.writer.last_failure.message).toMatch(/remote/i);
    // Without a credential: that something failed, not what it said (a remote's hook can name a host's file).
    const told = (await (await fetch(`${server.url}/api/v1/health`)).json()) as any;
    expect(told).toMatchObject({ status: 'degraded', writer: { last_failure: { message: '(an error: its message is for a credential)' } } });
    expect(told.repo.remote).toMatchObject({ error: degraded.repo.remote.error === null ? null : '(an error: its message is for a credential)' });
    expect(JSON.stringify(told)).not.toContain(degraded.writer.last_failure.message);
    renameSync(`${remote}.away`, remote);
    expect((await server.call('POST', '/api/v1/targets', { hostname: 'after', ip_address: '10.0.0.3', primary_group_id: 'ml-training' })).status).toBe(201);
    expect((await server.call('GET', '/api/v1/health')).json.status).toBe('healthy');
    expect(gitCli(remote, 'ls-tree', '-r', '--name-only', 'main', 'targets').trim().split('\n')).toEqual(['targets/ml-training/after.yaml', 'targets/ml-training/before.yaml']);
  });

  it('over git daemon: a remote that goes down and comes back loses no acknowledged write', async () => {
    const remote = bareRemote();
    writeFileSync(join(remote, 'git-daemon-export-ok'), '');
    const base = dirname(remote);
    const port = await freePort();
    const startDaemon = async () => {
      const daemon = spawn('git', ['daemon', `--base-path=${base}`, '--export-all', '--enable=receive-pack', '--reuseaddr', '--listen=127.0.0.1', `--port=${port}`, base], { stdio: 'ignore' });
      onCleanup(() => {
        daemon.kill();
      });
      await waitFor('git daemon', () => new Promise<boolean>((resolve) => {
        const socket = connect(port, '127.0.0.1', () => (socket.end(), resolve(true))).once('error', () => resolve(false));
      }));
      return daemon;
    };
    let daemon = await startDaemon();
    const server = await remoteServer(`git://127.0.0.1:${port}/config.git`);
    const add = (hostname: string, ip: string) => server.call('POST', '/api/v1/targets', { hostname, ip_address: ip, primary_group_id: 'ml-training' });
    expect((await add('first', '10.0.0.1')).status).toBe(201);
    daemon.kill();
    await new Promise((resolve) => daemon.once('exit', resolve));
    expect(await add('refused', '10.0.0.2')).toMatchObject({ status: 503, json: { error: { code: 'remote_unavailable' } } });
    // Health says so at once, not at the next pull.
    const down = (await server.call('GET', '/api/v1/health')).json;
    expect(down.status).toBe('degraded');
    expect(down.repo.remote.last_push).toMatchObject({ outcome: 'failed', reason: expect.stringContaining('not reachable') });
    daemon = await startDaemon();
    expect((await add('second', '10.0.0.3')).status).toBe(201);
    expect((await server.call('GET', '/api/v1/health')).json.status).toBe('healthy');
    expect(gitCli(remote, 'ls-tree', '-r', '--name-only', 'main', 'targets').trim().split('\n')).toEqual(['targets/ml-training/first.yaml', 'targets/ml-training/second.yaml']);
    expect(gitCli(server.repo, 'rev-parse', 'HEAD').trim()).toBe(gitCli(remote, 'rev-parse', 'main').trim());
  });

  it('detects a force-push on the remote and does not follow it', async () => {
    const remote = bareRemote();
    const server = await remoteServer(remote);
    await server.call('POST', '/api/v1/targets', { hostname: 'kept', ip_address: '10.0.0.1', primary_group_id: 'ml-training' });
    const head = gitCli(server.repo, 'rev-parse', 'HEAD').trim();
    const person = personClone(remote);
    gitCli(person.dir, 'reset', '-q', '--hard', 'HEAD~1');
    gitCli(person.dir, 'commit', '-q', '--allow-empty', '-m', 'rewritten history');
    gitCli(person.dir, 'push', '-q', '--force', 'origin', 'HEAD:main');
    const synced = await server.sync();
    expect(synced.json.error, JSON.stringify(synced.json)).toMatch(/rewritten/);
    expect(gitCli(server.repo, 'rev-parse', 'HEAD').trim()).toBe(head);
    expect((await server.call('GET', '/api/v1/health')).json.status).toBe('degraded');
    expect((await server.call('GET', '/api/v1/targets/kept')).status).toBe(200);
  });

  it('serves a follower read-only', async () => {
    const remote = bareRemote();
    const primary = await remoteServer(remote);
    await primary.call('POST', '/api/v1/targets', { hostname: 'web-01', ip_address: '10.0.0.5', primary_group_id: 'api-servers' });
    const follower = await remoteServer(remote, { readOnly: true });
    expect(follower.sd('node')).toContain('10.0.0.5:9100');
    expect(await follower.call('POST', '/api/v1/targets', { hostname: 'x', ip_address: '10.0.0.6', primary_group_id: 'api-servers' })).toMatchObject({ status: 403, json: { error: { code: 'read_only' } } });
  });
});
