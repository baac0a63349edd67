import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { readFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createApp } from '../src/api/app.js';
import { SdPublisher } from '../src/compile/publisher.js';
import { createLogger, silentLogger } from '../src/log.js';
import { startServer } from '../src/server.js';
import { hashSecret } from '../src/tokens/secret.js';
import { gitCli, onCleanup, pushFiles, ROOT, tempDir, tmpConfigRepo } from './helpers.js';
import { appDeps } from './api-helpers.js';
import { serverConfig, waitFor } from './node-helpers.js';
import { PROCESS_ADMIN, serverProcess } from './process-helpers.js';

const ADMIN = 'node-test-admin-credential-0123'; // serverConfig()'s

async function json(response: Response) {
  return { status: response.status, body: (await response.json()) as any };
}

describe('aami serve', () => {
  it('creates the repo from the starter, serves on loopback and keeps secrets out of Git and logs', async () => {
    const logLines: string[] = [];
    const announced: string[] = [];
    const config = serverConfig({ adminToken: undefined, logger: createLogger((line) => logLines.push(line)), announce: (line) => announced.push(line) });
    const base = dirname(config.repo);
    const server = await startServer(config);
    onCleanup(() => server.close());
    const admin = /aami_admin_[A-Za-z0-9]{40}/.exec(announced.join('\n'))![0];
    const auth = { authorization: `Bearer ${admin}` };
    expect(readFileSync(join(base, 'state/admin-token.sha256'), 'utf8').trim()).toBe(hashSecret(admin));

    const token = await json(await fetch(`${server.url}/api/v1/bootstrap-tokens`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ name: 'bulk', default_group_id: 'ml-training', max_uses: 5, expires_at: '2099-01-01T00:00:00Z' }),
    }));
    expect(token.status).toBe(201);
    const registered = await json(await fetch(`${server.url}/api/v1/bootstrap/register`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token.body.token}` },
      body: JSON.stringify({ hostname: 'gpu-01', ip_address: '127.0.0.1' }),
    }));
    expect(registered.status).toBe(201);
    const targets = await json(await fetch(`${server.url}/api/v1/targets`, { headers: auth }));
    expect(targets.body.map((t: any) => t.hostname)).toEqual(['gpu-01']);
    const history = await json(await fetch(`${server.url}/api/v1/targets/gpu-01/history`, { headers: auth }));
    expect(history.body[0].source_address).toBe('127.0.0.1');
    expect(gitCli(join(base, 'repo'), 'show', 'HEAD:README.md')).toContain('AAMI config repo');
    expect(gitCli(join(base, 'repo'), 'rev-parse', '--is-bare-repository').trim()).toBe('true');

    const everything = gitCli(join(base, 'repo'), 'log', '-p', '--all', '--format=%an %ae %s %b') + logLines.join('\n');
    for (const secret of [admin, token.body.token, token.body.token.split('_').at(-1), registered.body.node_credential]) {
      expect(everything).not.toContain(secret);
    }
  });

  it('without a terminal, leaves a generated admin credential in a file only its owner can read, never in the log', async () => {
    const logLines: string[] = [];
    const config = serverConfig({ adminToken: undefined, announce: undefined, logger: createLogger((line) => logLines.push(line)) });
    const server = await startServer(config);
    onCleanup(() => server.close());
    const file = join(config.stateDir, 'admin-credential.txt');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    const credential = fs.readFileSync(file, 'utf8').trim();
    expect(credential).toMatch(/^aami_admin_[A-Za-z0-9]{40}$/);
    expect(logLines.join('\n')).toContain(`file=${file}`);
    expect(logLines.join('\n')).not.toContain(credential);
    expect((await fetch(`${server.url}/api/v1/credentials`, { headers: { authorization: `Bearer ${credential}` } })).status).toBe(200);
  });

  it('stops on SIGTERM after committing every write it acknowledged', { timeout: 90_000 }, async () => {
    const base = tempDir();
    // node with the tsx loader, not the tsx wrapper: a signal must reach the server itself.
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/bin.ts'), 'serve', '--host', '127.0.0.1', '--port', '0', '--repo', join(base, 'repo'), '--sd-dir', join(base, 'sd'), '--state-dir', join(base, 'state')], {
      env: { ...process.env, AAMI_ADMIN_TOKEN: ADMIN },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    onCleanup(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    let stderr = '';
    const url = await new Promise<string>((resolve, reject) => {
      // Generous: tsx compiles the server first, slow on a loaded machine.
      const timer = setTimeout(() => reject(new Error(`no "serving" line: ${stderr}`)), 60_000);
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        const match = /msg=serving url=(\S+)/.exec(stderr);
        if (match) clearTimeout(timer), resolve(match[1]!);
      });
    });
    const auth = { authorization: `Bearer ${ADMIN}` };
    const writes = Array.from({ length: 20 }, (_, i) =>
      fetch(`${url}/api/v1/targets`, { method: 'POST', headers: auth, body: JSON.stringify({ hostname: `n${i}`, ip_address: `10.0.0.${i + 1}`, primary_group_id: 'ml-training' }) }),
    );
    await Promise.race(writes);
    child.kill('SIGTERM'); // while most writes are still queued
    const settled = await Promise.allSettled(writes);
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code).toBe(0);
    const acknowledged = settled.flatMap((r, i) => (r.status === 'fulfilled' && r.value.status === 201 ? [`targets/ml-training/n${i}.yaml`] : []));
    expect(acknowledged.length).toBeGreaterThan(0);
    const files = gitCli(join(base, 'repo'), 'ls-tree', '-r', '--name-only', 'HEAD', 'targets').trim().split('\n');
    // No acknowledged write is lost (a write whose answer was cut off may be there too).
    expect(files).toEqual(expect.arrayContaining(acknowledged));
    gitCli(join(base, 'repo'), 'fsck', '--strict', '--no-progress');
    expect(stderr).toContain('msg=stopped');
  });

  /** `aami serve` run to its end, with no admin credential set: one it generated would show in the state directory. */
  async function serveUntilExit(...args: string[]) {
    const base = tempDir();
    const env = { ...process.env };
    delete env.AAMI_ADMIN_TOKEN;
    delete env.AAMI_ADMIN_TOKEN_FILE;
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/bin.ts'), 'serve', '--repo', join(base, 'repo'), '--sd-dir', join(base, 'sd'), '--state-dir', join(base, 'state'), ...args], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    onCleanup(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    return { code, output, created: fs.readdirSync(base) };
  }

  it('exits 1 at once when its port is taken, naming it, before it creates a repo or a credential', { timeout: 30_000 }, async () => {
    const holder = createServer();
    await new Promise<void>((resolve, reject) => holder.once('error', reject).listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise<void>((resolve) => holder.close(() => resolve())));
    const { port } = holder.address() as AddressInfo;
    const result = await serveUntilExit('--host', '127.0.0.1', '--port', String(port));
    expect(result.code).toBe(1);
    expect(result.output).toBe(`aami: cannot listen on 127.0.0.1:${port}: the port is already in use (by another aami serve or another program); choose another with --port or AAMI_PORT\n`);
    expect(result.created).toEqual([]);
    expect(holder.listening).toBe(true);
  });

  it('exits 1 naming the address when no interface has it', { timeout: 30_000 }, async () => {
    // 192.0.2.1 is TEST-NET-1 (RFC 5737): on no machine's interfaces.
    const result = await serveUntilExit('--host', '192.0.2.1', '--port', '0');
    expect(result.code).toBe(1);
    expect(result.output).toBe('aami: cannot listen on 192.0.2.1:0: no interface of this host has that address; choose another with --host or AAMI_HOST\n');
    expect(result.created).toEqual([]);
  });

  it('refuses a second server on the same state directory, naming the first; takes the directory over once that one is gone', { timeout: 90_000 }, async () => {
    const base = tempDir();
    const dirs = (name: string) => ['--repo', join(base, `${name}-repo`), '--sd-dir', join(base, `${name}-sd`), '--state-dir', join(base, 'state')];
    const first = await serverProcess(dirs('first'));
    const lock = join(base, 'state/server.pid');
    expect(readFileSync(lock, 'utf8').split(' ')[0]).toBe(String(first.child.pid));
    const refused = await serverProcess(dirs('second')).then(() => 'served', (error: Error) => error.message);
    expect(refused).toContain(`aami serve exited (1) before serving`);
    expect(refused).toContain(`another server (pid ${first.child.pid}) is using the state directory ${join(base, 'state')}`);
    expect(fs.existsSync(join(base, 'second-repo'))).toBe(false); // refused before it made anything
    // Killed: its pid file stays, and the next server takes the directory over.
    first.child.kill('SIGKILL');
    await first.exited;
    const third = await serverProcess(dirs('first'));
    expect(readFileSync(lock, 'utf8').split(' ')[0]).toBe(String(third.child.pid));
    third.child.kill('SIGTERM');
    expect(await third.exited).toBe(0);
    expect(fs.existsSync(lock)).toBe(false);
  });

  it('refuses a repository, SD and state directory that are one or inside another, before it creates anything', { timeout: 30_000 }, async () => {
    const base = tempDir();
    for (const [args, said] of [
      [['--sd-dir', join(base, 'd'), '--state-dir', join(base, 'd')], `--sd-dir (${join(base, 'd')}) and --state-dir (${join(base, 'd')})`],
      [['--sd-dir', join(base, 'sd'), '--state-dir', join(base, 'sd/state')], `--sd-dir (${join(base, 'sd')}) and --state-dir (${join(base, 'sd/state')})`],
      [['--repo', join(base, 'x/repo'), '--state-dir', join(base, 'x')], `--repo (${join(base, 'x/repo')}) and --state-dir (${join(base, 'x')})`],
    ] as const) {
      const result = await serveUntilExit('--host', '127.0.0.1', '--port', '0', ...args);
      expect(result.code).toBe(2);
      expect(result.output).toContain(`${said} must be separate directories, neither inside the other`);
    }
    expect(fs.readdirSync(base)).toEqual([]);
    // A symbolic link on the way is followed: sd -> state is one directory.
    fs.mkdirSync(join(base, 'state'));
    fs.symlinkSync(join(base, 'state'), join(base, 'link'));
    const linked = await serveUntilExit('--host', '127.0.0.1', '--port', '0', '--sd-dir', join(base, 'link/sd'), '--state-dir', join(base, 'state'));
    expect(linked.code).toBe(2);
    expect(linked.output).toContain(`--sd-dir (${join(fs.realpathSync(base), 'state/sd')}) and --state-dir (${join(fs.realpathSync(base), 'state')}) must be separate directories`);
  });

  it('refuses to make a new repository from the starter where its state says it served one (a volume not mounted): the SD files keep the fleet', { timeout: 90_000 }, async () => {
    const base = tempDir();
    const args = ['--repo', join(base, 'repo'), '--sd-dir', join(base, 'sd'), '--state-dir', join(base, 'state')];
    const first = await serverProcess(args);
    expect((await first.call('POST', '/api/v1/targets', { hostname: 'kept', ip_address: '10.0.0.1', primary_group_id: 'ml-training' })).status).toBe(201);
    await waitFor('kept in the SD file', async () => readFileSync(join(base, 'sd/node.json'), 'utf8').includes('kept'));
    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(0);
    const sd = readFileSync(join(base, 'sd/node.json'), 'utf8');
    fs.renameSync(join(base, 'repo'), join(base, 'repo.elsewhere'));
    fs.mkdirSync(join(base, 'repo')); // the empty mount point
    const refused = await serverProcess(args).then(() => 'served', (error: Error) => error.message);
    expect(refused).toContain(`${join(base, 'repo')} holds no repository, but the state directory ${join(base, 'state')} is of a server that served one`);
    expect(fs.readdirSync(join(base, 'repo'))).toEqual([]);
    expect(readFileSync(join(base, 'sd/node.json'), 'utf8')).toBe(sd);
  });

  it('finishes a repository a first start left unfinished (killed while it made it): the starter commit and the push guards', async () => {
    const config = serverConfig();
    // What a kill in the middle of init leaves: git init done, no branch, no receive.* guards.
    fs.mkdirSync(config.repo, { recursive: true });
    fs.writeFileSync(join(config.repo, 'aami-initializing'), '');
    gitCli(dirname(config.repo), 'init', '--quiet', '--bare', '--initial-branch=main', config.repo);
    const server = await startServer(config);
    onCleanup(() => server.close());
    const groups = await fetch(`${server.url}/api/v1/groups`, { headers: { authorization: `Bearer ${ADMIN}` } });
    expect(((await groups.json()) as unknown[]).length).toBeGreaterThan(0);
    expect(gitCli(config.repo, 'config', 'receive.denyNonFastForwards').trim()).toBe('true');
    expect(fs.existsSync(join(config.repo, 'aami-initializing'))).toBe(false);
    expect(gitCli(config.repo, 'log', '--format=%s', 'main').trim()).toBe('Initialize config repo');
  });

  it('passes no secret of its environment on to the git processes it starts', { timeout: 60_000 }, async () => {
    const base = tempDir();
    const server = await serverProcess(['--repo', join(base, 'repo'), '--sd-dir', join(base, 'sd'), '--state-dir', join(base, 'state')], { AAMI_WEBHOOK_SECRET: 'webhook-secret-0123456789', AAMI_CLUSTER_SECRET: 'cluster-secret-0123456789' });
    const children = readFileSync(`/proc/${server.child.pid}/task/${server.child.pid}/children`, 'utf8').trim().split(' ').filter(Boolean);
    expect(children.length).toBeGreaterThan(0); // git cat-file --batch, for the server's whole life
    for (const child of children) {
      const environ = readFileSync(`/proc/${child}/environ`, 'utf8');
      expect(readFileSync(`/proc/${child}/cmdline`, 'utf8')).toContain('git');
      for (const secret of [PROCESS_ADMIN, 'webhook-secret-0123456789', 'cluster-secret-0123456789']) expect(environ).not.toContain(secret);
    }
  });

  it('keeps the admin credential last given: unset later, the variable brings back no older generated one', async () => {
    const announced: string[] = [];
    const config = serverConfig({ adminToken: undefined, announce: (line) => announced.push(line) });
    const status = async (url: string, credential: string) => (await fetch(`${url}/api/v1/groups`, { headers: { authorization: `Bearer ${credential}` } })).status;
    let server = await startServer(config);
    const generated = /aami_admin_[A-Za-z0-9]{40}/.exec(announced.join('\n'))![0];
    await server.close();
    const rotated = 'rotated-admin-credential-0123456789';
    server = await startServer({ ...config, adminToken: rotated });
    expect(await status(server.url, rotated)).toBe(200);
    expect(await status(server.url, generated)).toBe(401);
    await server.close();
    server = await startServer(config); // the variable unset again
    onCleanup(() => server.close());
    expect(await status(server.url, generated)).toBe(401);
    expect(await status(server.url, rotated)).toBe(200);
    expect(announced.filter((line) => line.includes('Generated'))).toHaveLength(1);
    expect(fs.statSync(join(config.stateDir, 'admin-token.sha256')).mode & 0o777).toBe(0o600);
  });

  it('stops cleanly on SIGHUP (exit 129); warns of a token in --remote; refuses an empty AAMI_ADMIN_TOKEN_FILE; an empty AAMI_PORT is unset, not port 0', { timeout: 60_000 }, async () => {
    const base = tempDir();
    const dirs = ['--repo', join(base, 'repo'), '--sd-dir', join(base, 'sd'), '--state-dir', join(base, 'state')];
    const server = await serverProcess(dirs);
    server.child.kill('SIGHUP');
    expect(await server.exited).toBe(129); // stopped cleanly, and a service manager starts it again
    expect(server.log()).toContain('msg=stopped');
    const run = async (env: Record<string, string>, ...args: string[]) => {
      const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/bin.ts'), 'serve', ...dirs, ...args], { env: { ...process.env, AAMI_ADMIN_TOKEN: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      onCleanup(() => void (child.exitCode === null && child.signalCode === null && child.kill('SIGKILL')));
      let output = '';
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      return { code, output };
    };
    const empty = join(base, 'empty-secret');
    fs.writeFileSync(empty, '\n');
    // A token as the user name of a remote's URL is warned of (ps shows it); the remote cannot be reached, so the start fails after.
    const warned = await run({ AAMI_ADMIN_TOKEN: PROCESS_ADMIN, AAMI_HOST: '192.0.2.1' }, '--remote', 'https://ghp_0123456789abcdef@git.invalid/config.git');
    expect(warned.output).toContain('aami serve: warning: --remote holds a user name or password');
    expect(await run({ AAMI_ADMIN_TOKEN_FILE: empty }, '--port', '0')).toEqual({ code: 2, output: `aami serve: AAMI_ADMIN_TOKEN_FILE: ${empty} is empty\nRun 'aami serve --help' for usage.\n` });
    // 192.0.2.1 is on no interface: the message shows the port taken, the default's.
    expect((await run({ AAMI_PORT: '', AAMI_HOST: '192.0.2.1', AAMI_ADMIN_TOKEN: PROCESS_ADMIN })).output).toContain('cannot listen on 192.0.2.1:8080');
  });

  it('refuses a --primary URL that holds a password, without printing it, before it creates anything', { timeout: 30_000 }, async () => {
    const result = await serveUntilExit('--host', '127.0.0.1', '--port', '0', '--primary', 'http://bot:hunter2-secret@primary.example:8080');
    expect(result.code).toBe(2);
    expect(result.output).toContain('must not hold a user name or password');
    expect(result.output).not.toContain('hunter2-secret');
    expect(result.created).toEqual([]);
  });

  it('answers 408 and closes the connection when a request does not arrive whole in time (a body sent a byte at a time), committing nothing', async () => {
    const config = serverConfig({ requestTimeoutMs: 1000 });
    const server = await startServer(config);
    onCleanup(() => server.close());
    const commits = () => gitCli(config.repo, 'rev-list', '--count', 'main').trim();
    const before = commits();
    const { port } = new URL(server.url);
    const body = JSON.stringify({ hostname: 'slow-01', ip_address: '10.0.9.1', primary_group_id: 'ml-training' });
    const answer = await new Promise<string>((resolve, reject) => {
      const chunks: Buffer[] = [];
      const socket = connect(Number(port), '127.0.0.1', () => {
        socket.write([`POST /api/v1/targets HTTP/1.1`, 'Host: x', `Authorization: Bearer ${ADMIN}`, `Content-Length: ${body.length}`, '', ''].join('\r\n'));
        socket.write(body.slice(0, 10)); // and the rest never
      });
      socket.on('data', (chunk) => chunks.push(chunk));
      socket.on('error', reject);
      socket.on('close', () => resolve(Buffer.concat(chunks).toString('utf8')));
    });
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(commits()).toBe(before);
    // A whole request on the next connection is served as ever.
    const created = await fetch(`${server.url}/api/v1/targets`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` }, body });
    expect(created.status).toBe(201);
  });

  it('admits exactly max_uses hosts over HTTP while its watcher sees every commit land', async () => {
    const server = await startServer(serverConfig());
    onCleanup(() => server.close());
    const auth = { authorization: `Bearer ${ADMIN}` };
    const token = await json(await fetch(`${server.url}/api/v1/bootstrap-tokens`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ name: 'bulk', default_group_id: 'ml-training', max_uses: 50, expires_at: '2099-01-01T00:00:00Z' }),
    }));
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        fetch(`${server.url}/api/v1/bootstrap/register`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token.body.token}` },
          body: JSON.stringify({ hostname: `n-${i}`, ip_address: `10.4.${i >> 8}.${i & 255}` }),
        }).then(json),
      ),
    );
    expect(results.filter((r) => r.status === 201)).toHaveLength(50);
    expect((await json(await fetch(`${server.url}/api/v1/targets`, { headers: auth }))).body).toHaveLength(50);
  });

  for (const state of ['kept', 'lost'] as const) {
    it(`serves a file broken while it was down at its last good version (state directory ${state})`, async () => {
      const config = serverConfig();
      const first = await startServer(config);
      const auth = { authorization: `Bearer ${ADMIN}` };
      await fetch(`${first.url}/api/v1/targets`, { method: 'POST', headers: auth, body: JSON.stringify({ hostname: 'db-01', ip_address: '10.0.3.1', primary_group_id: 'databases' }) });
      await first.close();
      // Broken by a push made while the server was down.
      pushFiles(config.repo, { 'targets/databases/db-01.yaml': 'hostname: db-01\nip_address: [broken\n' }, 'Break db-01');
      // Without its state directory, the last good version comes from Git history.
      if (state === 'lost') fs.rmSync(config.stateDir, { recursive: true, force: true });

      const second = await startServer(config);
      onCleanup(() => second.close());
      const node = JSON.parse(fs.readFileSync(join(config.sdDir, 'node.json'), 'utf8')) as Array<{ targets: string[] }>;
      expect(node.map((e) => e.targets[0])).toEqual(['10.0.3.1:9100']);
      const health = await json(await fetch(`${second.url}/api/v1/health`, { headers: auth }));
      expect(health.body.status).toBe('degraded');
      expect(health.body.compiler.invalid_files).toEqual([expect.objectContaining({ file: 'targets/databases/db-01.yaml' })]);
    });
  }

  it('restarts on a repo holding a file with 130,000 problems: health is degraded with bounded lists and the counts', { timeout: 120_000 }, async () => {
    const config = serverConfig();
    const first = await startServer(config);
    await first.close();
    const many = `hostname: many\nip_address: 10.0.0.1\nprimary_group: ml-training\ngroups: [${Array(130_000).fill('BAD').join(', ')}]\n`;
    pushFiles(config.repo, { 'targets/ml-training/many.yaml': many }, 'A file with 130,000 problems');
    // With its state directory, then without (nothing cached: every problem found again).
    for (const state of ['kept', 'lost']) {
      if (state === 'lost') fs.rmSync(config.stateDir, { recursive: true, force: true });
      const server = await startServer(config);
      try {
        const response = await fetch(`${server.url}/api/v1/health`, { headers: { authorization: `Bearer ${ADMIN}` } });
        const text = await response.text();
        expect(response.status, state).toBe(200);
        expect(text.length, state).toBeLessThan(20_000);
        const health = JSON.parse(text);
        expect(health, state).toMatchObject({ status: 'degraded', compiler: { problem_count: 130_000, invalid_file_count: 1 } });
        expect(health.compiler.invalid_files, state).toHaveLength(50);
        expect(health.compiler.invalid_files[0], state).toMatchObject({ file: 'targets/ml-training/many.yaml', field: 'groups[0]' });
        expect(await (await fetch(`${server.url}/metrics`)).text(), state).toMatch(/^aami_invalid_files 1$/m);
      } finally {
        await server.close();
      }
    }
  });

  it('shards SD files by primary group with --sd-layout group, and http_sd joins a job\'s shards', async () => {
    const config = serverConfig({ sdLayout: 'group' });
    const server = await startServer(config);
    onCleanup(() => server.close());
    const auth = { authorization: `Bearer ${ADMIN}` };
    for (const [hostname, ip_address, primary_group_id] of [['gpu-a', '10.0.0.1', 'ml-training'], ['db-a', '10.0.0.2', 'databases']]) {
      const created = await fetch(`${server.url}/api/v1/targets`, { method: 'POST', headers: auth, body: JSON.stringify({ hostname, ip_address, primary_group_id }) });
      expect(created.status).toBe(201);
    }
    const shard = (name: string) => JSON.parse(fs.readFileSync(join(config.sdDir, name), 'utf8')) as Array<{ targets: string[] }>;
    await waitFor('both shards written', async () => fs.existsSync(join(config.sdDir, 'node/databases.json')) && shard('node/databases.json').length === 1);
    expect(shard('node/ml-training.json').map((e) => e.targets[0])).toEqual(['10.0.0.1:9100']);
    expect(fs.existsSync(join(config.sdDir, 'node.json'))).toBe(false);
    const job = await fetch(`${server.url}/api/v1/sd/prometheus?job=node`, { headers: auth });
    expect(job.status).toBe(200);
    expect(((await job.json()) as Array<{ targets: string[] }>).map((e) => e.targets[0]).sort()).toEqual(['10.0.0.1:9100', '10.0.0.2:9100']);
    // A job of aami.yaml with no targets has no shard: [] as with one file per job, never 404
    // (Prometheus would keep the last targets it had on a failed refresh).
    const empty = await fetch(`${server.url}/api/v1/sd/prometheus?job=dcgm`, { headers: auth });
    expect([empty.status, await empty.json()]).toEqual([200, []]);
    expect((await fetch(`${server.url}/api/v1/sd/prometheus?job=nope`, { headers: auth })).status).toBe(404);
  });

  it('removes at start the temp files a server killed mid-write left in the state directory, not a write at work', async () => {
    const lines: string[] = [];
    const config = serverConfig({ logger: createLogger((line) => lines.push(line)) });
    fs.mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
    const old = new Date(Date.now() - 10 * 60_000);
    const put = (name: string, age?: Date) => (fs.writeFileSync(join(config.stateDir, name), '{"partial'), age && fs.utimesSync(join(config.stateDir, name), age, age), name);
    const leftovers = [put('.heartbeats.json.4242.t0a1b2c3d.7.tmp', old), put('.catalog-state.json.4242.3.tmp', old)];
    const kept = [put('.heartbeats.json.4243.t0a1b2c4d.2.tmp'), put('notes.tmp', old)];
    await (await startServer(config)).close();
    expect(leftovers.filter((name) => fs.existsSync(join(config.stateDir, name)))).toEqual([]);
    expect(kept.filter((name) => fs.existsSync(join(config.stateDir, name)))).toEqual(kept);
    expect(lines.join('\n')).toContain('removed the temp files a server killed mid-write left in the state directory');
  });

  it('warns when others than the server can write the SD directory (Prometheus only reads it)', async () => {
    for (const mode of [0o777, 0o775, 0o755]) {
      const lines: string[] = [];
      const config = serverConfig({ logger: createLogger((line) => lines.push(line)) });
      fs.mkdirSync(config.sdDir, { recursive: true });
      fs.chmodSync(config.sdDir, mode);
      await (await startServer(config)).close();
      const warning = lines.find((line) => line.includes('the SD directory can be written by others than the server'));
      if (mode === 0o755) expect(warning, mode.toString(8)).toBeUndefined();
      else expect(warning, mode.toString(8)).toContain(`mode=${mode.toString(8)}`);
    }
  });

  it('takes writes at once after a restart that finds the branch lock a killed server left behind', async () => {
    const lines: string[] = [];
    const config = serverConfig({ logger: createLogger((line) => lines.push(line)) });
    await (await startServer(config)).close();
    // What kill -9 between taking the lock and renaming it over the branch leaves.
    const lock = join(config.repo, 'refs/heads/main.lock');
    fs.writeFileSync(lock, `${'0'.repeat(40)}\n`);
    const server = await startServer(config);
    onCleanup(() => server.close());
    expect(fs.existsSync(lock)).toBe(false);
    expect(lines.join('\n')).toContain('removed a lock on the branch left by a process that died holding it');
    const created = await fetch(`${server.url}/api/v1/targets`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` }, body: JSON.stringify({ hostname: 'after-crash', ip_address: '10.0.0.9', primary_group_id: 'ml-training' }) });
    expect(created.status).toBe(201);
  });

  it('takes the SD files on disk as they are after a restart with nothing changed, and compiles again when something did', async () => {
    const lines: string[] = [];
    const config = serverConfig({ logger: createLogger((line) => lines.push(line)) });
    let server = await startServer(config);
    await fetch(`${server.url}/api/v1/targets`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` }, body: JSON.stringify({ hostname: 'kept', ip_address: '10.0.0.1', primary_group_id: 'ml-training' }) });
    await server.close();
    const before = fs.readFileSync(join(config.sdDir, 'node.json'), 'utf8');
    server = await startServer(config);
    expect(lines.join('\n')).toContain("sd files on disk are this snapshot's");
    expect((await fetch(`${server.url}/api/v1/health`)).status).toBe(200);
    const served = await (await fetch(`${server.url}/api/v1/sd/prometheus?job=node`, { headers: { authorization: `Bearer ${ADMIN}` } })).text();
    expect(JSON.parse(served)).toEqual(JSON.parse(before));
    await server.close();
    // A push while it was down: the stamp no longer fits, and the SD files are compiled anew.
    pushFiles(config.repo, { 'targets/ml-training/added.yaml': 'hostname: added\nip_address: 10.0.0.2\nprimary_group: ml-training\n' }, 'added');
    lines.length = 0;
    server = await startServer(config);
    onCleanup(() => server.close());
    expect(lines.join('\n')).not.toContain("sd files on disk are this snapshot's");
    expect(fs.readFileSync(join(config.sdDir, 'node.json'), 'utf8')).toContain('10.0.0.2:9100');
  });

  it('answers http_sd with 503, never 200 [], before the first compile', async () => {
    const repo = await tmpConfigRepo();
    const fresh = new SdPublisher(repo.live, { fs, sdDir: join(repo.dir, '..', 'sd2'), logger: silentLogger });
    const app = createApp(appDeps(repo, { sd: fresh }));
    const sd = await app.request('/api/v1/sd/prometheus');
    expect(sd.status).toBe(503);
    expect(((await sd.json()) as any).error.code).toBe('not_ready');
    expect((await app.request('/api/v1/health')).status).toBe(503);
  });
});
