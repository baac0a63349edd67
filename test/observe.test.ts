import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { FailureLines } from '../src/api/observe.js';
import { createLogger } from '../src/log.js';
import { apiHarness, ADMIN_TOKEN } from './api-helpers.js';
import { ROOT, tempDir } from './helpers.js';
import { ADMIN, configServer, requireBinary } from './node-helpers.js';
import { PROCESS_ADMIN, serverProcess } from './process-helpers.js';

/** A logfmt line as key → value (quoted values unquoted). */
function parse(line: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const [, key, quoted, bare] of line.matchAll(/(\w+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))/g)) fields[key!] = quoted === undefined ? bare! : JSON.parse(`"${quoted}"`);
  return fields;
}

describe('the request log', () => {
  it('writes one line per write, refusal, authentication failure and rate limit, and never a secret', async () => {
    const log: string[] = [];
    const api = await apiHarness({ log, maxFailures: 3 });
    const secrets = [ADMIN_TOKEN];
    const lines = () => log.map(parse);

    await api.get('/api/v1/groups'); // a read that succeeds: no line
    expect(log).toEqual([]);

    const group = await api.post('/api/v1/groups', { name: 'gpu-fleet', namespace: 'logical' });
    expect(lines()).toEqual([expect.objectContaining({ level: 'info', msg: 'write', method: 'POST', route: '/api/v1/groups', status: '201', by: 'credential:admin', address: 'local', location: '/api/v1/groups/gpu-fleet' })]);
    expect(group.status).toBe(201);

    const credential = (await api.post('/api/v1/credentials', { name: 'alice', role: 'editor' })).json;
    secrets.push(credential.credential);
    const { token, id: tokenId } = await api.token({ max_uses: 1 });
    secrets.push(token);
    log.length = 0;
    const enrolled = await api.register(token, { hostname: 'gpu-01', ip_address: '10.0.0.1' });
    secrets.push(enrolled.json.node_credential);
    await api.call('PATCH', '/api/v1/targets/gpu-01', { token: credential.credential, body: { labels: { rack: 'r1' } } });
    await api.register(token, { hostname: 'gpu-02', ip_address: '10.0.0.2' }); // used up
    await api.post('/api/v1/groups', { name: 'gpu-fleet', namespace: 'logical' }, { token: credential.credential }); // exists
    expect(lines()).toEqual([
      expect.objectContaining({ msg: 'write', route: '/api/v1/bootstrap/register', status: '201', by: `token:${tokenId}`, hostname: 'gpu-01', outcome: 'created', location: '/api/v1/targets/gpu-01' }),
      expect.objectContaining({ msg: 'write', method: 'PATCH', route: '/api/v1/targets/:id', id: 'gpu-01', status: '200', by: `credential:alice/${credential.id}` }),
      expect.objectContaining({ level: 'warn', msg: 'write refused', status: '403', code: 'token_exhausted', by: `token:${tokenId}` }),
      expect.objectContaining({ level: 'warn', msg: 'write refused', status: '409', code: 'conflict', by: `credential:alice/${credential.id}` }),
    ]);

    // Wrong secrets: 401 each, then 429 once the address is over its limit; also a secret pasted where an id goes.
    log.length = 0;
    const wrong = `aami_cred_zzzzzzzz_${'w'.repeat(40)}`;
    secrets.push(wrong);
    for (let i = 0; i < 4; i++) await api.get('/api/v1/targets', { token: wrong });
    await api.post(`/api/v1/bootstrap-tokens/${token}/revoke`);
    await api.post(`/api/v1/groups?token=${token}`, { name: 'x', namespace: 'logical' });
    await api.get('/api/v1/credentials', { token: enrolled.json.node_credential });
    expect(lines().map((l) => [l.msg, l.status, l.code, l.by])).toEqual([
      ['authentication failed', '401', 'unauthorized', 'a secret that is not valid'],
      ['authentication failed', '401', 'unauthorized', 'a secret that is not valid'],
      ['authentication failed', '401', 'unauthorized', 'a secret that is not valid'],
      ['rate limited', '429', 'rate_limited', 'a secret that is not valid'],
      ['write refused', '404', 'token_not_found', 'credential:admin'],
      ['write refused', '400', 'validation_failed', 'unauthenticated'],
      ['forbidden', '403', 'forbidden', 'node:gpu-01'],
    ]);
    expect(lines()[4]!.id).toBeUndefined(); // the pasted secret is not an id: left out
    const text = log.join('\n');
    for (const secret of secrets) expect(text).not.toContain(secret);
  });

  it('writes ten authentication failures an address a minute, and tells how many it left out', async () => {
    const log: string[] = [];
    const api = await apiHarness({ log }); // no rate limit to speak of: every wrong secret is a 401
    const lines = () => log.map(parse);
    const wrong = `aami_cred_zzzzzzzz_${'w'.repeat(40)}`;
    for (let i = 0; i < 25; i++) expect((await api.get('/api/v1/targets', { token: wrong })).status).toBe(401);
    expect(lines()).toHaveLength(10);
    expect(new Set(lines().map((l) => `${l.msg} ${l.status} ${l.address}`))).toEqual(new Set(['authentication failed 401 local']));
    // Other lines are never held back.
    await api.post('/api/v1/groups', { name: 'gpu-fleet', namespace: 'logical' });
    expect(lines().at(-1)).toMatchObject({ msg: 'write', status: '201' });

    log.length = 0;
    api.advance(60_000);
    await api.get('/api/v1/targets', { token: wrong });
    expect(lines()).toEqual([
      expect.objectContaining({ level: 'warn', msg: 'lines left out of the log', like: 'authentication failed', address: 'local', count: '15', seconds: '60' }),
      expect.objectContaining({ msg: 'authentication failed', status: '401' }),
    ]);
    expect(log.join('\n')).not.toContain(wrong);
  });

  it('tells the addresses past its limit apart no more, and tells what it left out once the minute is over even if the client stopped', () => {
    vi.useFakeTimers();
    try {
      const log: string[] = [];
      let now = 0;
      const failures = new FailureLines(createLogger((line) => log.push(line)), () => now, { burst: 1, addresses: 2 });
      // Past two addresses, the others share one burst: the first of them is still written, with its address.
      for (const address of ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.1']) failures.write('authentication failed', { address });
      failures.write('rate limited', { address: '10.0.0.1' });
      expect(log.map(parse).map((l) => `${l.msg} ${l.address}`)).toEqual(['authentication failed 10.0.0.1', 'authentication failed 10.0.0.2', 'authentication failed 10.0.0.3', 'rate limited 10.0.0.1']);
      now = 60_000;
      vi.advanceTimersByTime(60_000);
      expect(log.map(parse).slice(4)).toEqual([
        expect.objectContaining({ msg: 'lines left out of the log', like: 'authentication failed', address: '10.0.0.1', count: '1' }),
        expect.objectContaining({ msg: 'lines left out of the log', like: 'authentication failed', address: 'other addresses', count: '2' }),
      ]);
      expect(log).toHaveLength(6);
      // A new minute: written again.
      failures.write('rate limited', { address: '10.0.0.3' });
      expect(log.map(parse).at(-1)).toMatchObject({ msg: 'rate limited', address: '10.0.0.3' });
    } finally {
      vi.useRealTimers();
    }
  });

  it('ends its minute when the clock steps back, rather than staying quiet for as long as the step', () => {
    const log: string[] = [];
    let now = 3_600_000;
    const failures = new FailureLines(createLogger((line) => log.push(line)), () => now, { burst: 1 });
    failures.write('authentication failed', { address: 'a' });
    failures.write('authentication failed', { address: 'a' }); // counted
    now -= 3_000_000; // an NTP step back of 50 minutes
    failures.write('authentication failed', { address: 'a' });
    expect(log.map(parse).map((l) => l.msg)).toEqual(['authentication failed', 'lines left out of the log', 'authentication failed']);
    failures.flush();
  });

  it('health names hosts (invalid files, stale nodes) to a credential or with --open-reads; to others it gives the counts', async () => {
    for (const openReads of [false, true]) {
      const api = await apiHarness({ openReads });
      await api.push({ 'targets/ml-training/secret-host.yaml': 'hostname: secret-host\nip_address: [broken\n' });
      await api.nextCompile();
      const listed = { invalid_file_count: 1, invalid_files: [expect.objectContaining({ file: 'targets/ml-training/secret-host.yaml' })] };
      expect((await api.get('/api/v1/health')).json).toMatchObject({ status: 'degraded', compiler: listed, withheld: null });
      const anonymous = await api.get('/api/v1/health', { token: null });
      if (openReads) expect(anonymous.json).toMatchObject({ compiler: listed, withheld: null });
      else {
        expect(anonymous.json).toMatchObject({ status: 'degraded', compiler: { invalid_file_count: 1, problem_count: 1, invalid_files: [] }, withheld: expect.stringContaining('--open-reads') });
        expect(anonymous.text).not.toContain('secret-host');
      }
    }
  });

  it('counts requests by route pattern, never by raw path', async () => {
    const api = await apiHarness();
    for (let i = 0; i < 3; i++) await api.get(`/api/v1/targets/host-${i}`);
    await api.get('/no/such/path/aami_bootstrap_secret');
    const metrics = (await api.get('/metrics', { token: null })).text;
    expect(metrics).toContain('aami_http_requests_total{method="GET",route="/api/v1/targets/:id",status="404"} 3');
    expect(metrics).toContain('aami_http_requests_total{method="GET",route="unmatched",status="404"} 1');
    expect(metrics).toMatch(/aami_http_request_duration_seconds_bucket\{le="0\.1",method="GET",route="\/api\/v1\/targets\/:id",status="404"\} 3/);
    expect(metrics).not.toContain('host-0');
    expect(metrics).not.toContain('aami_bootstrap_secret');
  });
});

describe('/metrics of aami serve', () => {
  it('passes promtool check metrics, with process, Node.js, build, HTTP and every aami metric; the log has no secret', { timeout: 60_000 }, async () => {
    const promtool = requireBinary('promtool', 'prometheus');
    const dir = tempDir();
    const server = await serverProcess(['--repo', join(dir, 'repo'), '--sd-dir', join(dir, 'sd'), '--state-dir', join(dir, 'state')]);
    const token = await server.call('POST', '/api/v1/bootstrap-tokens', { name: 't', default_group_id: 'ml-training', max_uses: 5, expires_at: '2099-01-01T00:00:00Z' });
    const node = await server.call('POST', '/api/v1/bootstrap/register', { hostname: 'gpu-01', ip_address: '10.0.0.1' }, token.json.token);
    expect(node.status).toBe(201);
    await server.call('POST', '/api/v1/nodes/heartbeat', undefined, node.json.node_credential);
    // Wrong secrets past the log's burst: the lines left out are told at the stop, not lost with the process.
    const wrong = 'aami_cred_wrongwro_wrongwrongwrongwrongwrongwrongwrongwrong';
    const refused = new Map<number, number>();
    for (let i = 0; i < 25; i++) {
      const { status } = await server.call('GET', '/api/v1/targets', undefined, wrong);
      refused.set(status, (refused.get(status) ?? 0) + 1);
    }

    const text = await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${PROCESS_ADMIN}` } })).text();
    // Without a credential: the same but for the series that name hosts.
    const anonymous = await (await fetch(`${server.url}/metrics`)).text();
    // promtool reads the page on stdin; exit 0 means no format error and no lint problem.
    for (const page of [text, anonymous]) expect(execFileSync(promtool, ['check', 'metrics'], { input: page, encoding: 'utf8' })).toBe('');
    expect(anonymous).not.toContain('gpu-01');
    expect(anonymous).not.toContain('aami_node_last_seen_timestamp_seconds');
    expect(anonymous).toContain('aami_targets 1');
    const families = new Set([...text.matchAll(/^# TYPE (\S+) (\S+)/gm)].map((m) => `${m[1]} ${m[2]}`));
    for (const family of [
      'process_cpu_seconds_total counter',
      'process_resident_memory_bytes gauge',
      'process_start_time_seconds gauge',
      'nodejs_heap_size_used_bytes gauge',
      'nodejs_eventloop_lag_seconds gauge',
      'nodejs_gc_duration_seconds histogram',
      'aami_build_info gauge',
      'aami_http_requests_total counter',
      'aami_http_request_duration_seconds histogram',
      'aami_registrations_total counter',
      'aami_commit_duration_seconds histogram',
      'aami_compile_duration_seconds histogram',
      'aami_memory_release_seconds histogram',
      'aami_invalid_files gauge',
      'aami_writer_queue_depth gauge',
      'aami_targets gauge',
      'aami_node_last_seen_timestamp_seconds gauge',
      'aami_stale_targets gauge',
      'aami_ephemeral_targets_removed_total counter',
    ]) {
      expect(families, family).toContain(family);
    }
    const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(text).toContain(`aami_build_info{version="${version}",nodejs_version="${process.versions.node}"} 1`);
    expect(text).toContain('aami_registrations_total{outcome="created"} 1');
    expect(text).toContain('aami_targets 1');
    expect(text).toMatch(/^aami_node_last_seen_timestamp_seconds\{hostname="gpu-01"\} \d+(\.\d+)?$/m);
    expect(text).toContain('aami_http_requests_total{method="POST",route="/api/v1/bootstrap/register",status="201"} 1');

    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    const log = server.log();
    expect(log).toMatch(/level=info msg=write method=POST route=\/api\/v1\/bootstrap\/register status=201 by=token:\w+ address=127\.0\.0\.1 location=\/api\/v1\/targets\/gpu-01 hostname=gpu-01 outcome=created/);
    expect(log).toMatch(/level=warn msg="authentication failed" method=GET route=\/api\/v1\/targets status=401 code=unauthorized/);
    // Each kind: up to ten lines, the rest told in one line at the stop.
    for (const [status, like] of [[401, 'authentication failed'], [429, 'rate limited']] as const) {
      const count = refused.get(status) ?? 0;
      expect(log.match(new RegExp(`msg="${like}"`, 'g'))?.length ?? 0, like).toBe(Math.min(10, count));
      if (count > 10) expect(log).toMatch(new RegExp(`msg="lines left out of the log" like="${like}" address=127\\.0\\.0\\.1 count=${count - 10} seconds=60`));
      else expect(log).not.toContain(`like="${like}"`);
    }
    expect([...refused.values()].some((count) => count > 10)).toBe(true);
    for (const secret of [PROCESS_ADMIN, token.json.token, node.json.node_credential, wrong]) expect(log).not.toContain(secret);
  });

  it("drops a node's aami_node_last_seen_timestamp_seconds series when an admin deletes its target, and keeps the others", async () => {
    const server = await configServer();
    const { token } = await server.token();
    for (const hostname of ['gpu-01', 'gpu-02']) {
      const node = await fetch(`${server.url}/api/v1/bootstrap/register`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: JSON.stringify({ hostname, ip_address: hostname === 'gpu-01' ? '10.0.0.1' : '10.0.0.2' }) });
      expect(node.status).toBe(201);
      const { node_credential: credential } = (await node.json()) as { node_credential: string };
      expect((await fetch(`${server.url}/api/v1/nodes/heartbeat`, { method: 'POST', headers: { authorization: `Bearer ${credential}` } })).status).toBe(200);
    }
    const series = async () => [...(await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } })).text()).matchAll(/^aami_node_last_seen_timestamp_seconds\{hostname="([^"]+)"\} \d/gm)].map((m) => m[1]);
    expect(await series()).toEqual(['gpu-01', 'gpu-02']);
    expect(await server.admin('DELETE', '/api/v1/targets/gpu-01')).toMatchObject({ status: 200, json: { deleted: 'gpu-01' } });
    expect(await series()).toEqual(['gpu-02']);
  });
});
