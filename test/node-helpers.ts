import { execFile, spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { silentLogger } from '../src/log.js';
import { startServer, type ServerConfig } from '../src/server.js';
import { onCleanup, ROOT, STARTER, tempDir } from './helpers.js';

/** Real output of nvidia-smi and friends on an H100 host (a copy of shared/fixtures/gpu-host). */
export const GPU_FIXTURES = join(ROOT, 'test/fixtures/gpu-host');
export const ADMIN = 'node-test-admin-credential-0123';

/** A binary the suite runs for real; .ci/run installs it, and a missing one says so. */
export function requireBinary(name: string, debianPackage: string): string {
  const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).stdout.trim();
  if (!found) throw new Error(`${name} is not installed: apt-get install ${debianPackage} (.ci/run does)`);
  return found;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
    server.once('error', reject);
  });
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, tries = 100, everyMs = 100): Promise<T> {
  for (let i = 0; i < tries; i++) {
    const value = await probe().catch(() => undefined);
    if (value) return value;
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** `aami serve` on 127.0.0.1, a free port and a fresh temp directory, with the test admin credential. */
export function serverConfig(overrides: Partial<ServerConfig> = {}): ServerConfig {
  const base = tempDir();
  return {
    repo: join(base, 'repo'),
    sdDir: join(base, 'sd'),
    stateDir: join(base, 'state'),
    host: '127.0.0.1',
    port: 0,
    adminToken: ADMIN,
    openReads: false,
    starterDir: STARTER,
    scriptsDir: join(ROOT, 'scripts'),
    logger: silentLogger,
    announce: () => {},
    ...overrides,
  };
}

/** A real `aami serve` on loopback with a fresh repo, and helpers to drive it as an admin. */
export async function configServer() {
  const config = serverConfig();
  const { repo } = config;
  const server = await startServer(config);
  let running = true;
  const stop = async () => {
    if (running) await server.close();
    running = false;
  };
  onCleanup(stop);
  const admin = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${server.url}${path}`, { method, headers: { authorization: `Bearer ${ADMIN}` }, body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: response.status, json: (await response.json()) as any };
  };
  return {
    url: server.url,
    repo,
    stop,
    admin,
    async token(body: Record<string, unknown> = {}) {
      const { json } = await admin('POST', '/api/v1/bootstrap-tokens', {
        name: 'nodes',
        default_group_id: 'ml-training',
        max_uses: 10,
        expires_at: '2099-01-01T00:00:00Z',
        labels: { environment: 'production' },
        ...body,
      });
      return json as { token: string; id: string };
    },
  };
}

/** A node: an install prefix (AAMI_ROOT), a PATH with the stubs it should have, a token file. */
export function fakeNode(options: { gpu: boolean; cron?: boolean }) {
  const base = tempDir('aami-node-');
  const root = join(base, 'root');
  const bin = join(base, 'bin');
  mkdirSync(root, { recursive: true });
  if (options.cron) mkdirSync(join(root, 'etc/cron.d'), { recursive: true });
  mkdirSync(bin, { recursive: true });
  if (options.gpu) {
    writeFileSync(join(bin, 'nvidia-smi'), readFileSync(join(ROOT, 'test/stubs/nvidia-smi')));
    chmodSync(join(bin, 'nvidia-smi'), 0o755);
  }
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH}`, AAMI_ROOT: root, AAMI_GPU_FIXTURES: GPU_FIXTURES };
  delete (env as Record<string, string | undefined>).AAMI_BOOTSTRAP_TOKEN;
  return {
    root,
    env,
    path: (p: string) => join(root, p),
    tokenFile(token: string) {
      const file = join(base, 'token');
      writeFileSync(file, `${token}\n`, { mode: 0o600 });
      return file;
    },
    /** Run a shell command line as the node would (async: the server runs in this process). */
    sh(command: string, extraEnv: Record<string, string> = {}) {
      return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
        execFile('bash', ['-c', command], { env: { ...env, ...extraEnv }, timeout: 60_000 }, (error, stdout, stderr) => {
          resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
        });
      });
    },
    /** Put a stub command first on the node's PATH. */
    addStub(name: string, script: string) {
      writeFileSync(join(bin, name), script, { mode: 0o755 });
    },
    /** Kill what bootstrap.sh started in the background (its pid file). */
    stopExporter() {
      try {
        process.kill(Number(readFileSync(join(root, 'etc/aami/node_exporter.pid'), 'utf8')));
      } catch {
        // not started, or already gone
      }
    },
  };
}

/** A real node exporter on a free loopback port, stopped at the end of the test. */
export async function runningNodeExporter(textfileDir: string) {
  const binary = requireBinary('prometheus-node-exporter', 'prometheus-node-exporter');
  const port = await freePort();
  mkdirSync(textfileDir, { recursive: true });
  const child = spawn(binary, [`--web.listen-address=127.0.0.1:${port}`, `--collector.textfile.directory=${textfileDir}`], { stdio: 'ignore' });
  onCleanup(() => {
    child.kill();
  });
  await waitFor('node exporter', async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).ok);
  return port;
}
