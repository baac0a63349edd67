import { createServer, type IncomingMessage } from 'node:http';
import { connect, createServer as createTcpServer } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { onCleanup, ROOT, tempDir } from './helpers.js';
import { configServer, fakeNode, freePort, padTextfiles, runningNodeExporter } from './node-helpers.js';

const BOOTSTRAP = join(ROOT, 'scripts/bootstrap.sh');
const PREFLIGHT = join(ROOT, 'scripts/preflight-check.sh');

/** A real node exporter whose /metrics page is as big as a real 8-GPU host's, or bigger. */
async function bigNodeExporter(bytes: number) {
  const textfiles = tempDir('aami-textfiles-');
  padTextfiles(textfiles, bytes);
  const port = await runningNodeExporter(textfiles);
  const page = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  expect(page.length).toBeGreaterThanOrEqual(bytes);
  // The probes look for node_* lines: they come after the padding, far past a pipe buffer.
  expect(page.indexOf('\nnode_')).toBeGreaterThan(bytes - 1024);
  return port;
}

/**
 * A TCP port that forwards to PORT: fifty nodes on one machine share 127.0.0.1, and the
 * server refuses two targets with the same address and port, so each node gets its own
 * port onto the one real exporter.
 */
async function forwardedPort(port: number) {
  const server = createTcpServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    client.pipe(upstream).pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.address() as { port: number }).port;
}

type Canned = { status: number; body: unknown } | undefined;

/**
 * A stand-in HTTP server in front of the real config server: registrations get the canned
 * answers `answer(n)` gives for the n-th attempt (undefined: passed through); everything
 * else is passed through.
 */
async function flakyServer(upstream: string, answer: (attempt: number) => Canned) {
  let attempts = 0;
  const read = async (request: IncomingMessage) => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  };
  const server = createServer(async (request, response) => {
    const body = await read(request);
    const canned = request.method === 'POST' && request.url === '/api/v1/bootstrap/register' ? answer(++attempts) : undefined;
    if (canned) {
      response.writeHead(canned.status, { 'content-type': 'application/json' }).end(JSON.stringify(canned.body));
      return;
    }
    const headers: Record<string, string> = {};
    for (const name of ['authorization', 'content-type']) if (request.headers[name]) headers[name] = String(request.headers[name]);
    const passed = await fetch(`${upstream}${request.url}`, { method: request.method, headers, body: body.length ? body : undefined });
    response.writeHead(passed.status, { 'content-type': passed.headers.get('content-type') ?? 'application/octet-stream' }).end(Buffer.from(await passed.arrayBuffer()));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, attempts: () => attempts };
}

const refusal = (status: number, code: string, details: Record<string, unknown> = {}) => ({ status, body: { error: { code, message: `test stand-in says ${code}`, details } } });

describe('node scripts on a real fleet', { timeout: 60_000 }, () => {
  it('see a node exporter whose /metrics passes 256 KB on every one of ten runs, in bootstrap and preflight', async () => {
    const port = await bigNodeExporter(300 * 1024);
    const server = await configServer();
    const node = fakeNode({ gpu: false });
    const { token } = await server.token();
    const dcgmPort = await freePort();
    for (let run = 1; run <= 10; run++) {
      const bootstrap = await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --hostname probe-01 --node-exporter-port ${port} --skip-install --no-checks`);
      expect(bootstrap.code, `run ${run}: ${bootstrap.stderr}`).toBe(0);
      expect(bootstrap.stdout, `run ${run}`).toContain(`node exporter: already running on :${port}, reusing it`);
      const preflight = await node.sh(`bash ${PREFLIGHT} --mode node --server ${server.url} --node-exporter-port ${port} --dcgm-exporter-port ${dcgmPort}`);
      expect(preflight.stdout, `run ${run}`).toMatch(new RegExp(`^PASS +port_${port} +held by a running node_exporter \\(it will be reused\\)$`, 'm'));
    }
    expect((await server.admin('GET', '/api/v1/targets/probe-01')).json.exporters).toEqual([expect.objectContaining({ type: 'node_exporter', port })]);
  });

  it('registers fifty nodes booting at once with one token', async () => {
    const port = await bigNodeExporter(300 * 1024);
    const server = await configServer();
    const { token, id } = await server.token({ max_uses: 100 });
    const nodes = await Promise.all(Array.from({ length: 50 }, async () => ({ node: fakeNode({ gpu: true }), port: await forwardedPort(port) })));
    const dcgmPort = await freePort();
    const runs = await Promise.all(
      nodes.map(({ node, port }, i) =>
        node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${server.url} --hostname gpu-node-${String(i).padStart(2, '0')} --node-exporter-port ${port} --dcgm-exporter-port ${dcgmPort} --skip-install --no-checks`, {}, 240_000),
      ),
    );
    for (const [i, run] of runs.entries()) {
      expect(run.code, `node ${i}: ${run.stderr}`).toBe(0);
      expect(run.stdout, `node ${i}: ${run.stderr}`).toContain(`node exporter: already running on :${nodes[i]!.port}, reusing it`);
      expect(run.stdout, `node ${i}`).toMatch(/registered: target gpu-node-\d\d \(created\)/);
    }
    const targets = (await server.admin('GET', '/api/v1/targets')).json as Array<{ id: string }>;
    expect(targets.map((t) => t.id).sort()).toEqual(nodes.map((_, i) => `gpu-node-${String(i).padStart(2, '0')}`));
    expect((await server.admin('GET', `/api/v1/bootstrap-tokens/${id}`)).json.uses).toBe(50);
  }, 300_000);

  it('retries a busy server (503, 429 with retry_after_seconds, 409 remote_conflict), saying so, then registers', async () => {
    const server = await configServer();
    const answers: Canned[] = [refusal(503, 'not_ready'), refusal(429, 'rate_limited', { retry_after_seconds: 2 }), refusal(409, 'remote_conflict')];
    const flaky = await flakyServer(server.url, (attempt) => answers[attempt - 1]);
    const node = fakeNode({ gpu: false });
    const { token } = await server.token();
    const run = await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${flaky.url} --hostname busy-01 --skip-install --no-checks`);
    expect(run.code, run.stderr).toBe(0);
    const retries = run.stderr.split('\n').filter((line) => line.includes('retrying in'));
    expect(retries).toHaveLength(3);
    expect(retries[0]).toMatch(/the server refused for now \(HTTP 503 not_ready\); retrying in 0\.\d{3}s \(attempt 2\)$/);
    expect(retries[1]).toMatch(/\(HTTP 429 rate_limited\); retrying in 2\.000s \(attempt 3\)$/);
    expect(retries[2]).toMatch(/\(HTTP 409 remote_conflict\); retrying in \d\.\d{3}s \(attempt 4\)$/);
    expect(flaky.attempts()).toBe(4);
    expect(run.stdout).toContain('registered: target busy-01 (created)');
  });

  it('gives up after AAMI_RETRY_SECONDS with one line, and never retries a real refusal', async () => {
    const server = await configServer();
    const busy = await flakyServer(server.url, () => refusal(503, 'remote_unavailable'));
    const node = fakeNode({ gpu: false });
    const { token } = await server.token();
    const run = await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${busy.url} --hostname busy-02 --skip-install --no-checks`, { AAMI_RETRY_SECONDS: '3' });
    expect(run.code).toBe(1);
    const errors = run.stderr.split('\n').filter((line) => line.includes('ERROR'));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^\[aami\] ERROR: registration failed \(HTTP 503, remote_unavailable\) after \d+ attempts in \d+s: test stand-in says remote_unavailable$/);
    expect(run.stderr.split('\n').filter((line) => line.includes('retrying in')).length).toBe(busy.attempts() - 1);

    const conflict = await flakyServer(server.url, () => refusal(409, 'conflict'));
    const refused = await node.sh(`bash ${BOOTSTRAP} --token-file ${node.tokenFile(token)} --server ${conflict.url} --hostname busy-02 --skip-install --no-checks`);
    expect(refused.code).toBe(1);
    expect(refused.stderr).not.toContain('retrying');
    expect(conflict.attempts()).toBe(1);
    expect((await server.admin('GET', '/api/v1/targets')).json).toEqual([]);
  });
});
