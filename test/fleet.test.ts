import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/log.js';
import { startServer, type ServerConfig } from '../src/server.js';
import { smartHttpRemote } from './git-http.js';
import { gitCli, onCleanup, pushFiles, tempDir } from './helpers.js';
import { ADMIN, freePort, serverConfig, waitFor } from './node-helpers.js';
import { serverProcess } from './process-helpers.js';

const CLUSTER_SECRET = 'cluster-secret-0123456789abcdef';

/** One server of a fleet, in this process, with its log kept. */
async function member(overrides: Partial<ServerConfig>) {
  const lines: string[] = [];
  const config = serverConfig({ logger: createLogger((line) => lines.push(line)), clusterSecret: CLUSTER_SECRET, ...overrides });
  const server = await startServer(config);
  let running = true;
  onCleanup(async () => {
    if (running) await server.close();
  });
  const call = async (method: string, path: string, body?: unknown, token: string | null = ADMIN) => {
    const response = await fetch(`${server.url}${path}`, { method, headers: token ? { authorization: `Bearer ${token}` } : {}, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await response.text();
    return { status: response.status, json: text ? JSON.parse(text) : undefined };
  };
  return {
    config,
    url: server.url,
    log: () => lines.join('\n'),
    call,
    sd: (job = 'node') => fs.readFileSync(join(config.sdDir, `${job}.json`), 'utf8'),
    health: async () => (await call('GET', '/api/v1/health')).json,
    async stop() {
      running = false;
      await server.close();
    },
  };
}

function bareRemote(): string {
  const dir = join(tempDir('aami-remote-'), 'config.git');
  gitCli(tempDir(), 'init', '-q', '--bare', '--initial-branch=main', dir);
  return dir;
}

describe('one writer, many followers', () => {
  it('admits exactly max_uses over three servers on smart HTTP, no 409 reaching a client, the same SD bytes everywhere, no password anywhere', { timeout: 180_000 }, async () => {
    const remote = await smartHttpRemote();
    const git = { url: remote.url, branch: 'main', syncIntervalMs: 60_000, password: undefined as string | undefined };
    // The password reaches the server as a secret of its own, never in the URL it logs and shows.
    const withUser = new URL(remote.url);
    withUser.username = remote.user;
    const primary = await member({ remote: { ...git, url: withUser.toString(), password: remote.password } });
    const followers = [
      await member({ remote: { ...git, url: withUser.toString(), password: remote.password }, primary: { url: primary.url } }),
      await member({ remote: { ...git, url: withUser.toString(), password: remote.password }, primary: { url: primary.url } }),
    ];
    const servers = [primary, ...followers];

    // A token made on the primary works on the followers at once: they forward enrolments.
    const token = (await primary.call('POST', '/api/v1/bootstrap-tokens', { name: 'fleet', default_group_id: 'ml-training', max_uses: 150, expires_at: '2099-01-01T00:00:00Z' })).json;
    // Every process's command line, sampled while the servers push and pull: git gets the
    // password in its environment, never as an argument anyone can read with ps.
    const commandLines = new Set<string>();
    let sampling = true;
    const sampler = (async () => {
      for (let i = 0; sampling && i < 2000; i++) {
        for (const line of execFileSync('ps', ['-eww', '-o', 'args='], { encoding: 'utf8' }).split('\n')) if (line.includes('git')) commandLines.add(line);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();
    const results = await Promise.all(
      Array.from({ length: 300 }, (_, i) => servers[i % 3]!.call('POST', '/api/v1/bootstrap/register', { hostname: `n-${i}`, ip_address: `10.8.${i >> 8}.${i & 255}` }, token.token)),
    );
    sampling = false;
    await sampler;
    expect([...commandLines].some((line) => /git.*(push|fetch|receive-pack|upload-pack)/.test(line))).toBe(true);
    const basic = Buffer.from(`${remote.user}:${remote.password}`).toString('base64');
    expect([...commandLines].filter((line) => line.includes(remote.password) || line.includes(basic))).toEqual([]);
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s === 201)).toHaveLength(150);
    expect(results.filter((r) => r.status !== 201).map((r) => r.json.error.code)).toEqual(Array(150).fill('token_exhausted'));

    // A credential created on the primary reads on a follower before that follower pulled.
    const reader = (await primary.call('POST', '/api/v1/credentials', { name: 'grafana', role: 'reader' })).json.credential;
    expect((await followers[0]!.call('GET', '/api/v1/groups', undefined, reader)).status).toBe(200);

    for (const follower of followers) expect((await follower.call('POST', '/api/v1/sync')).status).toBe(200);
    await waitFor('every server to compile the same SD', async () => {
      const files = servers.map((s) => s.sd());
      return files.every((f) => f === files[0]) && (JSON.parse(files[0]!) as unknown[]).length === 150;
    });
    const heads = servers.map((s) => gitCli(s.config.repo, 'rev-parse', 'main').trim());
    expect(new Set([...heads, gitCli(remote.dir, 'rev-parse', 'main').trim()]).size).toBe(1);

    // A follower's log line for a write it forwarded says so; the primary's names who called.
    expect(followers[0]!.log()).toMatch(/msg=write\b.*by="?forwarded/);
    expect(followers[0]!.log()).not.toMatch(/msg=write\b.*by="?unauthenticated/);
    // Who did what is still known: the followers passed the client's address on.
    expect(gitCli(remote.dir, 'log', '--format=%(trailers:key=Source-Address,valueonly)', '-3').trim()).toContain('127.0.0.1');
    // No password in logs, health, the repositories' config, or git's command lines.
    const healths = JSON.stringify(await Promise.all(servers.map((s) => s.health())));
    for (const place of [healths, ...servers.map((s) => s.log()), ...servers.map((s) => fs.readFileSync(join(s.config.repo, 'config'), 'utf8'))]) {
      expect(place).not.toContain(remote.password);
    }
    expect(healths).toContain(`"url":"${remote.url}"`);
  });

  it('forwards a conditional read with a credential it has not pulled yet: the primary\'s 304 reaches the client, with no body', { timeout: 60_000 }, async () => {
    const remote = bareRemote();
    const primary = await member({ remote: { url: remote, branch: 'main', syncIntervalMs: 60_000 } });
    const follower = await member({ remote: { url: remote, branch: 'main', syncIntervalMs: 60_000 }, primary: { url: primary.url } });
    expect((await primary.call('POST', '/api/v1/targets', { hostname: 'a', ip_address: '10.0.0.1', primary_group_id: 'ml-training' })).status).toBe(201);
    // Created on the primary after the follower's last pull: the follower forwards this credential's reads.
    const { credential } = (await primary.call('POST', '/api/v1/credentials', { name: 'poller', role: 'reader' })).json;
    await waitFor('the primary to write the SD file', async () => primary.sd().includes('10.0.0.1'));
    for (const path of ['/api/v1/targets', '/api/v1/sd/prometheus']) {
      const get = (headers: Record<string, string> = {}) => fetch(`${follower.url}${path}`, { headers: { authorization: `Bearer ${credential}`, ...headers } });
      const first = await get();
      const etag = first.headers.get('etag');
      expect({ path, status: first.status, etag }).toMatchObject({ status: 200, etag: expect.stringMatching(/^"/) });
      // Only the primary has this target: the answer is the primary's.
      expect(await first.text()).toContain('10.0.0.1');
      const again = await get({ 'if-none-match': etag! });
      expect({ path, status: again.status, etag: again.headers.get('etag'), body: await again.text() }).toEqual({ path, status: 304, etag, body: '' });
    }
    expect((await follower.call('GET', '/api/v1/targets')).json).toEqual([]);
    // Health is the follower's own, never the primary's: a credential it has not pulled yet is refused there, as on /metrics; a probe's HEAD checks none.
    const health = (method: string) => fetch(`${follower.url}/api/v1/health`, { method, headers: { authorization: `Bearer ${credential}` } });
    expect((await health('GET')).status).toBe(401);
    expect((await health('HEAD')).status).toBe(200);
    expect((await fetch(`${follower.url}/metrics`, { headers: { authorization: `Bearer ${credential}` } })).status).toBe(401);
  });

  it('counts silent nodes on the primary only: a follower sees just the heartbeats that came through it', { timeout: 60_000 }, async () => {
    const remote = bareRemote();
    let now = Date.parse('2026-11-26T00:00:00Z');
    const common = { clock: () => new Date(now), staleAfterMs: 60_000 };
    const primary = await member({ ...common, remote: { url: remote, branch: 'main', syncIntervalMs: 60_000 } });
    const follower = await member({ ...common, remote: { url: remote, branch: 'main', syncIntervalMs: 60_000 }, primary: { url: primary.url } });
    const token = (await primary.call('POST', '/api/v1/bootstrap-tokens', { name: 'nodes', default_group_id: 'ml-training', max_uses: 5, expires_at: '2099-01-01T00:00:00Z' })).json.token;
    const node = (await follower.call('POST', '/api/v1/bootstrap/register', { hostname: 'moved', ip_address: '10.0.0.1' }, token)).json.node_credential;
    await follower.call('POST', '/api/v1/sync');
    // Its first heartbeat goes through the follower; then the load balancer sends it to the primary.
    expect((await follower.call('POST', '/api/v1/nodes/heartbeat', undefined, node)).status).toBe(200);
    now += 120_000;
    expect((await primary.call('POST', '/api/v1/nodes/heartbeat', undefined, node)).status).toBe(200);
    expect((await primary.health()).nodes).toMatchObject({ stale_count: 0, stale: [] });
    expect(await (await fetch(`${primary.url}/metrics`)).text()).toMatch(/^aami_stale_targets 0$/m);
    // The follower's last word from the node is two minutes old: it must not call it silent.
    expect((await follower.health()).nodes).toEqual({ stale_after_seconds: 60, stale_count: null, stale: [] });
    const metrics = await (await fetch(`${follower.url}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } })).text();
    expect(metrics).not.toMatch(/aami_stale_targets|aami_node_last_seen_timestamp_seconds/);
    // Nor does its console: the problems page says who counts them, no page calls the node stale.
    const consolePage = async (server: typeof primary, path: string) => {
      const signIn = await fetch(`${server.url}/console/sign-in`, { method: 'POST', redirect: 'manual', headers: { origin: server.url }, body: new URLSearchParams({ credential: ADMIN }) });
      const cookie = signIn.headers.get('set-cookie')!.split(';')[0]!;
      return (await fetch(`${server.url}${path}`, { headers: { cookie } })).text();
    };
    expect(await consolePage(follower, '/console/problems')).toContain('Counted on the primary');
    for (const path of ['/console/fleet', '/console/targets/moved', '/console/problems']) expect(await consolePage(follower, path), path).not.toMatch(/\bstale node|>stale</);
    // Silent for real: the primary says so.
    now += 120_000;
    expect((await primary.health()).nodes).toMatchObject({ stale_count: 1, stale: ['moved'] });
    expect(await consolePage(primary, '/console/problems')).toContain('1 stale node');
    for (const path of ['/console/fleet', '/console/targets/moved']) expect(await consolePage(primary, path), path).toContain('>stale<');
  });

  it('keeps a follower serving reads while its primary restarts, answering writes with 503 primary_unavailable until it is back', { timeout: 60_000 }, async () => {
    const remote = bareRemote();
    const port = await freePort();
    const dirs = serverConfig();
    const primaryConfig = { ...dirs, port, remote: { url: remote, branch: 'main', syncIntervalMs: 60_000 } };
    let primary = await member(primaryConfig);
    const follower = await member({ remote: { url: remote, branch: 'main', syncIntervalMs: 60_000 }, primary: { url: primary.url } });
    expect((await follower.call('POST', '/api/v1/targets', { hostname: 'a', ip_address: '10.0.0.1', primary_group_id: 'ml-training' })).status).toBe(201);
    // A bootstrap token and a reader credential made on the primary a moment ago, not pulled here yet.
    const { token } = (await primary.call('POST', '/api/v1/bootstrap-tokens', { name: 'new', default_group_id: 'ml-training', max_uses: 50, expires_at: '2099-01-01T00:00:00Z' })).json;
    const { credential } = (await primary.call('POST', '/api/v1/credentials', { name: 'poller', role: 'reader' })).json;
    await primary.stop();
    expect(await follower.call('POST', '/api/v1/targets', { hostname: 'b', ip_address: '10.0.0.2', primary_group_id: 'ml-training' })).toMatchObject({ status: 503, json: { error: { code: 'primary_unavailable', message: expect.stringContaining(primary.url) } } });
    // The nodes holding it are told the primary is away (not where it is), and are not counted as wrong secrets: over the limiter's 20 a minute, never a 429.
    for (let i = 0; i < 25; i++) {
      const told = await follower.call('POST', '/api/v1/bootstrap/register', { hostname: `n-${i}`, ip_address: `10.0.1.${i}` }, token);
      expect(told, `registration ${i}`).toMatchObject({ status: 503, json: { error: { code: 'primary_unavailable' } } });
      expect(told.json.error.message).not.toContain(primary.url);
    }
    // A wrong secret where the follower checks it itself (its own health): 401, the address's count untouched by the 503s.
    expect((await follower.call('GET', '/api/v1/health', undefined, 'aami_cred_wrongwro_wrongwrongwrongwrongwrongwrongwrongwrong')).status).toBe(401);
    // A read it forwards (that credential) and cannot: the caller is told the primary is away, the log line says the whole.
    const read = await follower.call('GET', '/api/v1/targets', undefined, credential);
    expect(read).toMatchObject({ status: 503, json: { error: { code: 'primary_unavailable' } } });
    expect(read.json.error.message).not.toContain(primary.url);
    expect(follower.log().split('\n').find((line) => line.includes('read failed'))).toContain(primary.url);
    await follower.call('POST', '/api/v1/sync');
    expect((await follower.call('GET', '/api/v1/targets')).json.map((t: any) => t.hostname)).toEqual(['a']);
    primary = await member(primaryConfig);
    expect((await follower.call('POST', '/api/v1/targets', { hostname: 'b', ip_address: '10.0.0.2', primary_group_id: 'ml-training' })).status).toBe(201);
    await follower.call('POST', '/api/v1/sync');
    expect((await follower.call('GET', '/api/v1/targets')).json.map((t: any) => t.hostname)).toEqual(['a', 'b']);
  });
});

describe('no wedges', () => {
  it('recovers from a crash in the middle of a push: the same branch as the remote, nothing acknowledged lost', { timeout: 120_000 }, async () => {
    const remote = bareRemote();
    const gate = join(tempDir(), 'hold-pushes');
    // The remote holds every push in its pre-receive hook while the gate file exists.
    fs.writeFileSync(join(remote, 'hooks/pre-receive'), `#!/bin/sh\nwhile [ -e ${gate} ]; do sleep 0.05; done\n`, { mode: 0o755 });
    const base = tempDir();
    const args = ['--repo', join(base, 'repo'), '--sd-dir', join(base, 'sd'), '--state-dir', join(base, 'state'), '--remote', remote, '--sync-interval', '3600'];
    let first = await serverProcess(args);
    expect((await first.call('POST', '/api/v1/targets', { hostname: 'acked', ip_address: '10.0.0.1', primary_group_id: 'ml-training' })).status).toBe(201);
    fs.writeFileSync(gate, '');
    const stuck = first.call('POST', '/api/v1/targets', { hostname: 'never-acked', ip_address: '10.0.0.2', primary_group_id: 'ml-training' }).catch(() => undefined);
    await waitFor('the push to wait in the hook', async () => fs.readdirSync(join(remote, 'objects')).includes('incoming') || Boolean(execFileSync('ps', ['-e', '-o', 'args='], { encoding: 'utf8' }).includes('pre-receive')));
    first.child.kill('SIGKILL');
    await first.exited;
    await stuck;
    fs.rmSync(gate);
    // Another server writes meanwhile.
    const other = await member({ remote: { url: remote, branch: 'main', syncIntervalMs: 60_000 } });
    expect((await other.call('POST', '/api/v1/targets', { hostname: 'other', ip_address: '10.0.0.3', primary_group_id: 'ml-training' })).status).toBe(201);

    first = await serverProcess(args);
    const health = (await first.call('GET', '/api/v1/health')).json;
    expect(health.status).toBe('healthy');
    expect(gitCli(join(base, 'repo'), 'rev-parse', 'main').trim()).toBe(gitCli(remote, 'rev-parse', 'main').trim());
    // The push that was cut off may have landed after all (git went on without the server): then it is
    // everywhere. What the server serves is exactly the remote's branch.
    const hosts = (await first.call('GET', '/api/v1/targets')).json.map((t: any) => t.hostname);
    const onRemote = gitCli(remote, 'ls-tree', '-r', '--name-only', 'main', 'targets').trim().split('\n').map((p) => p.split('/').at(-1)!.replace('.yaml', ''));
    expect(hosts).toEqual(onRemote);
    expect(hosts).toEqual(expect.arrayContaining(['acked', 'other']));
    expect((await first.call('POST', '/api/v1/targets', { hostname: 'after', ip_address: '10.0.0.4', primary_group_id: 'ml-training' })).status).toBe(201);
  });

  it('neither follows nor undoes a force push, before or after a restart, says which command settles it, and settles when an admin runs it', { timeout: 60_000 }, async () => {
    const remote = bareRemote();
    const config = serverConfig({ remote: { url: remote, branch: 'main', syncIntervalMs: 60_000 } });
    let server = await member(config);
    await server.call('POST', '/api/v1/targets', { hostname: 'dropped', ip_address: '10.0.0.1', primary_group_id: 'ml-training' });
    const before = gitCli(remote, 'rev-parse', 'main').trim();
    // Someone rewrites the branch on the remote: the commit that added "dropped" is gone.
    gitCli(remote, 'update-ref', 'refs/heads/main', `${before}~1`);
    for (let round = 0; round < 2; round++) {
      await server.call('POST', '/api/v1/sync');
      const write = await server.call('POST', '/api/v1/targets', { hostname: `w${round}`, ip_address: `10.0.1.${round}`, primary_group_id: 'ml-training' });
      expect(write).toMatchObject({ status: 503, json: { error: { code: 'remote_diverged' } } });
      const health = await server.health();
      expect(health.status).toBe('degraded');
      expect(health.repo.remote.fix).toContain('accept_remote_history');
      // The dropped commit is not pushed back.
      expect(gitCli(remote, 'rev-parse', 'main').trim()).toBe(gitCli(remote, 'rev-parse', `${before}~1`).trim());
      if (round === 0) {
        await server.stop();
        server = await member(config);
      }
    }
    expect((await server.call('POST', '/api/v1/sync', { accept_remote_history: true }, null)).status).toBe(401);
    expect((await server.call('POST', '/api/v1/sync', { accept_remote_history: true })).status).toBe(200);
    expect((await server.health()).status).toBe('healthy');
    expect((await server.call('GET', '/api/v1/targets')).json).toEqual([]);
    expect((await server.call('POST', '/api/v1/targets', { hostname: 'fresh', ip_address: '10.0.2.1', primary_group_id: 'ml-training' })).status).toBe(201);
  });

  it('answers a pushed write as done even when its own branch is locked for a while, and serves it once the lock goes', { timeout: 60_000 }, async () => {
    const remote = bareRemote();
    const server = await member({ remote: { url: remote, branch: 'main', syncIntervalMs: 60_000 } });
    // A lock held by another git process (git gc packing refs, say) on the server's own branch.
    const lock = join(server.config.repo, 'refs/heads/main.lock');
    fs.writeFileSync(lock, '');
    const write = server.call('POST', '/api/v1/targets', { hostname: 'locked-out', ip_address: '10.0.0.1', primary_group_id: 'ml-training' });
    await waitFor('the push to reach the remote', async () => gitCli(remote, 'ls-tree', '-r', '--name-only', 'main', 'targets').includes('locked-out'));
    fs.rmSync(lock);
    expect((await write).status).toBe(201);
    await waitFor('the write to be served here too', async () => (await server.call('GET', '/api/v1/targets/locked-out')).status === 200);
    expect(gitCli(server.config.repo, 'rev-parse', 'main').trim()).toBe(gitCli(remote, 'rev-parse', 'main').trim());
  });

  it('refuses pushes into its own repository while it follows a remote, saying where to push', async () => {
    const remote = bareRemote();
    const server = await member({ remote: { url: remote, branch: 'main', syncIntervalMs: 60_000 } });
    expect(() => pushFiles(server.config.repo, { 'targets/ml-training/x.yaml': 'hostname: x\n' }, 'local push')).toThrow(/push your change there/);
  });

  it('keeps its push hook across restarts, and writes or removes it through no link put at its name: it leaves the link and says so', async () => {
    const remote = bareRemote();
    const following = { remote: { url: remote, branch: 'main', syncIntervalMs: 60_000 } };
    const first = await member(following);
    await first.stop();
    const hook = join(first.config.repo, 'hooks/pre-receive');
    const made = fs.statSync(hook).ino;
    // A restart keeps the hook it made (not made again), and pushes are still refused.
    const again = await member({ ...first.config, ...following });
    expect(fs.statSync(hook).ino).toBe(made);
    expect(() => pushFiles(first.config.repo, { 'targets/ml-training/x.yaml': 'hostname: x\n' }, 'local push')).toThrow(/push your change there/);
    await again.stop();
    // One that lost its mode (copied back from a backup): git would not run it, so it is made again.
    fs.chmodSync(hook, 0o644);
    await (await member({ ...first.config, ...following })).stop();
    expect(fs.statSync(hook).mode & 0o777).toBe(0o755);
    // A link at its name, to nothing or to a file with the server's own words: neither written, made nor removed through.
    const dangling = join(tempDir(), 'planted');
    const theirs = join(tempDir(), 'theirs');
    fs.writeFileSync(theirs, `#!/bin/sh\n# aami: with a remote, config changes go to the remote\nexit 0\n`);
    for (const target of [dangling, theirs]) {
      fs.rmSync(hook);
      fs.symlinkSync(target, hook);
      const lines: string[] = [];
      await (await member({ ...first.config, ...following, logger: createLogger((line) => lines.push(line)) })).stop();
      expect(fs.readlinkSync(hook)).toBe(target);
      expect(lines.join('\n')).toContain('pre-receive hook is not the server');
      await (await member({ ...first.config, remote: undefined })).stop();
      expect(fs.readlinkSync(hook)).toBe(target);
    }
    expect(fs.existsSync(dangling)).toBe(false);
    expect(fs.readFileSync(theirs, 'utf8')).toContain('exit 0');
    // Its own hook goes when the remote does.
    fs.rmSync(hook);
    await (await member({ ...first.config, ...following })).stop();
    expect(fs.readFileSync(hook, 'utf8')).toContain('push your change there');
    await (await member({ ...first.config, remote: undefined })).stop();
    expect(fs.existsSync(hook)).toBe(false);
  });

  it('names a stale lock on the remote and a protected branch in health and in the error, instead of retrying them as races', { timeout: 60_000 }, async () => {
    const remote = bareRemote();
    const server = await member({ remote: { url: remote, branch: 'main', syncIntervalMs: 60_000 } });
    const token = (await server.call('POST', '/api/v1/bootstrap-tokens', { name: 'nodes', default_group_id: 'ml-training', max_uses: 5, expires_at: '2099-01-01T00:00:00Z' })).json.token;
    const lock = join(remote, 'refs/heads/main.lock');
    fs.writeFileSync(lock, '');
    const locked = await server.call('POST', '/api/v1/targets', { hostname: 'a', ip_address: '10.0.0.1', primary_group_id: 'ml-training' });
    expect(locked, JSON.stringify(locked)).toMatchObject({ status: 503, json: { error: { code: 'remote_locked', message: expect.stringContaining('main.lock') } } });
    expect((await server.health()).status).toBe('degraded');
    fs.rmSync(lock);
    fs.writeFileSync(join(remote, 'hooks/pre-receive'), '#!/bin/sh\necho "main is protected" >&2\nexit 1\n', { mode: 0o755 });
    const refused = await server.call('POST', '/api/v1/targets', { hostname: 'a', ip_address: '10.0.0.1', primary_group_id: 'ml-training' });
    expect(refused).toMatchObject({ status: 503, json: { error: { code: 'remote_refused', message: expect.stringContaining('main is protected') } } });
    expect((await server.health()).repo.remote.last_push).toMatchObject({ outcome: 'failed', reason: expect.stringContaining('protected') });
    // A hook's words can name another host's file (a batch shares one message): a node is told what happened and what to do, not what the hook said.
    const node = await server.call('POST', '/api/v1/bootstrap/register', { hostname: 'n-1', ip_address: '10.0.0.9' }, token);
    expect(node).toMatchObject({ status: 503, json: { error: { code: 'remote_refused', message: expect.stringContaining('try again later') } } });
    expect(node.json.error.message).not.toMatch(/protected|main|hook/);
    // The request's log line has the whole message, for the operator.
    expect(server.log().split('\n').find((line) => line.includes('remote_refused') && line.includes('/api/v1/bootstrap/register'))).toContain('main is protected');
    fs.rmSync(join(remote, 'hooks/pre-receive'));
    expect((await server.call('POST', '/api/v1/targets', { hostname: 'a', ip_address: '10.0.0.1', primary_group_id: 'ml-training' })).status).toBe(201);
    expect((await server.health()).status).toBe('healthy');
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toMatch(/aami_git_pushes_total\{outcome="locked"\} 1/);
    expect(metrics).toMatch(/aami_git_pushes_total\{outcome="refused"\} 2/);
  });
});
