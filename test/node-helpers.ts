import { execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { silentLogger } from '../src/log.js';
import { startServer, type ServerConfig } from '../src/server.js';
import { onCleanup, ROOT, STARTER, tempDir } from './helpers.js';

/** Real output of nvidia-smi and friends on an H100 host (a copy of shared/fixtures/gpu-host). */
export const GPU_FIXTURES = join(ROOT, 'test/fixtures/gpu-host');
/** rocm-smi output of an 8× MI300X host (see its README). */
export const AMD_FIXTURES = join(ROOT, 'test/fixtures/amd-host');
/** A stand-in for NVIDIA's dcgm-exporter: DCGM_* metrics for 8 GPUs on the --address it is given. */
export const DCGM_STAND_IN = join(ROOT, 'test/stubs/dcgm-exporter');
/** Debian's name for the machine, as bootstrap.sh names its downloads (node_exporter-linux-<arch>.tar.gz). */
export const ARCH = process.arch === 'x64' ? 'amd64' : process.arch;
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
export async function configServer(overrides: Partial<ServerConfig> = {}) {
  const config = serverConfig(overrides);
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

/**
 * A node: an install prefix (AAMI_ROOT) holding its etc/machine-id, a PATH with the GPU tool
 * it should have (`gpu: true`: nvidia-smi of the captured H100 host; 'amd': rocm-smi of an
 * 8× MI300X host), a token file. Exporters it starts listen on 127.0.0.1 only.
 */
export function fakeNode(options: { gpu: boolean | 'amd'; cron?: boolean; machineId?: string }) {
  const base = tempDir('aami-node-');
  const root = join(base, 'root');
  const bin = join(base, 'bin');
  mkdirSync(join(root, 'etc'), { recursive: true });
  const machineId = options.machineId ?? randomBytes(16).toString('hex');
  writeFileSync(join(root, 'etc/machine-id'), `${machineId}\n`);
  // A host with cron installed: its /etc/cron.d and its daemon (bootstrap looks for both).
  if (options.cron) {
    mkdirSync(join(root, 'etc/cron.d'), { recursive: true });
    mkdirSync(join(root, 'usr/sbin'), { recursive: true });
    writeFileSync(join(root, 'usr/sbin/cron'), '#!/bin/sh\n', { mode: 0o755 });
  }
  mkdirSync(bin, { recursive: true });
  if (options.gpu) copyFileSync(join(ROOT, 'test/stubs/captured'), join(bin, options.gpu === 'amd' ? 'rocm-smi' : 'nvidia-smi'));
  const fixtures = options.gpu === 'amd' ? AMD_FIXTURES : GPU_FIXTURES;
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH}`, AAMI_ROOT: root, AAMI_GPU_FIXTURES: fixtures, AAMI_LISTEN_ADDRESS: '127.0.0.1' };
  for (const name of ['AAMI_BOOTSTRAP_TOKEN', 'AAMI_HOSTNAME', 'AAMI_SERVER', 'AAMI_ASSUME_SYSTEMD', 'AAMI_JSON_TOOL']) delete (env as Record<string, string | undefined>)[name];
  onCleanup(() => stopStarted(root));
  return {
    root,
    bin,
    env,
    machineId,
    path: (p: string) => join(root, p),
    tokenFile(token: string) {
      const file = join(base, 'token');
      writeFileSync(file, `${token}\n`, { mode: 0o600 });
      return file;
    },
    /** Run a shell command line as the node would (async: the server runs in this process). */
    sh(command: string, extraEnv: Record<string, string> = {}, timeoutMs = 60_000) {
      return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
        execFile('bash', ['-c', command], { env: { ...env, ...extraEnv }, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
          resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
        });
      });
    },
    /** Put a stub command first on the node's PATH. */
    addStub(name: string, script: string) {
      writeFileSync(join(bin, name), script, { mode: 0o755 });
    },
    /** Every file and directory under the node's root, relative to it, sorted. */
    tree() {
      return readdirSync(root, { recursive: true, encoding: 'utf8' }).sort();
    },
  };
}

/** Kill what bootstrap.sh started in the background (its pid files), if uninstall.sh did not. */
function stopStarted(root: string) {
  const dir = join(root, 'etc/aami');
  if (!existsSync(dir)) return;
  for (const file of readdirSync(dir).filter((name) => name.endsWith('.pid'))) {
    try {
      process.kill(Number(readFileSync(join(dir, file), 'utf8')));
    } catch {
      // already gone
    }
  }
}

/**
 * Pads a textfile directory so the node exporter's /metrics page passes `bytes`, as on a
 * real 8-GPU host (hundreds of KB); the padding sorts before every node_* line.
 */
export function padTextfiles(textfileDir: string, bytes: number) {
  mkdirSync(textfileDir, { recursive: true });
  const lines = ['# HELP aami_test_padding Padding that makes /metrics as big as a real GPU host\'s.', '# TYPE aami_test_padding gauge'];
  for (let i = 0, size = 0; size < bytes; i++) {
    const line = `aami_test_padding{series="${i}",filler="${'x'.repeat(200)}"} ${i}`;
    lines.push(line);
    size += line.length + 1;
  }
  writeFileSync(join(textfileDir, 'padding.prom'), `${lines.join('\n')}\n`);
}

/** The dcgm-exporter stand-in packed as the server offers exporters: a tarball in its downloads directory. */
export function dcgmTarball(downloadsDir: string) {
  const staging = join(tempDir('aami-dcgm-'), `dcgm-exporter-4.2.3/usr/bin`);
  mkdirSync(staging, { recursive: true });
  copyFileSync(DCGM_STAND_IN, join(staging, 'dcgm-exporter'));
  mkdirSync(downloadsDir, { recursive: true });
  execFileSync('tar', ['-czf', join(downloadsDir, `dcgm-exporter-linux-${ARCH}.tar.gz`), '-C', join(staging, '../../..'), 'dcgm-exporter-4.2.3']);
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
