import * as fs from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/log.js';
import { startServer } from '../src/server.js';
import { onCleanup, pushFiles } from './helpers.js';
import { serverConfig, waitFor } from './node-helpers.js';

const ADMIN = 'node-test-admin-credential-0123'; // serverConfig()'s
const auth = { authorization: `Bearer ${ADMIN}` };
const TAKEN = 'started from the snapshot saved when the server last stopped';

/** A server whose log lines are kept, and what it serves: every target and every problem. */
function restartable() {
  const lines: string[] = [];
  const config = serverConfig({ logger: createLogger((line) => lines.push(line)) });
  const image = join(config.stateDir, 'restart-image');
  let server: Awaited<ReturnType<typeof startServer>> | undefined;
  onCleanup(() => server?.close());
  return {
    config,
    image,
    lines,
    async start() {
      lines.length = 0;
      server = await startServer(config);
      return server;
    },
    async stop() {
      await server!.close();
      server = undefined;
    },
    async served() {
      const targets = await (await fetch(`${server!.url}/api/v1/targets`, { headers: auth })).json();
      const health = (await (await fetch(`${server!.url}/api/v1/health`)).json()) as { status: string; compiler: { invalid_files: unknown[] } };
      return { targets, status: health.status, problems: health.compiler.invalid_files };
    },
    create: (hostname: string, ip: string) =>
      fetch(`${server!.url}/api/v1/targets`, { method: 'POST', headers: auth, body: JSON.stringify({ hostname, ip_address: ip, primary_group_id: 'ml-training' }) }),
  };
}

describe('the restart image', () => {
  it('gives a restart at the same commit what the server served when it stopped, a broken file\'s last good version included', async () => {
    const s = restartable();
    await s.start();
    expect((await s.create('kept', '10.0.0.1')).status).toBe(201);
    // A push breaks the file: its last good version stays served, and it is reported.
    pushFiles(s.config.repo, { 'targets/ml-training/kept.yaml': 'hostname: kept\nip_address: not-an-ip\nprimary_group: ml-training\n' }, 'broken');
    await waitFor('the broken push followed', async () => (await s.served()).problems.length > 0);
    const before = await s.served();
    expect(before.status).toBe('degraded');
    await s.stop();
    // Only its owner reads it, nor the parse cache: they hold the catalog (credential hashes among it).
    expect(fs.statSync(s.image).mode & 0o777).toBe(0o600);
    expect(fs.statSync(join(s.config.stateDir, 'parse-cache.log')).mode & 0o777).toBe(0o600);
    // What a save killed half-way leaves is cleared at the next start.
    const leftover = join(s.config.stateDir, '.restart-image.4242.0.tmp');
    fs.writeFileSync(leftover, 'half');

    await s.start();
    expect(s.lines.join('\n')).toContain(TAKEN);
    expect(fs.existsSync(s.image)).toBe(false);
    expect(fs.existsSync(leftover)).toBe(false);
    // The first thing asked: an address the broken file's last good version holds (a catalog
    // from the image makes its address index after the start, or at the first write).
    const clash = await s.create('clash', '10.0.0.1');
    expect(clash.status).toBe(409);
    expect(JSON.stringify(await clash.json())).toContain('kept');
    expect(await s.served()).toEqual(before);
    // It takes writes, and they reach the SD file.
    expect((await s.create('after', '10.0.0.2')).status).toBe(201);
    await waitFor('the SD file', async () => fs.readFileSync(join(s.config.sdDir, 'node.json'), 'utf8').includes('10.0.0.2:9100'));
    const after = await s.served();
    await s.stop();

    // A start without the image (as after a kill -9) builds the same from Git, the state and the parse cache.
    fs.rmSync(s.image);
    await s.start();
    expect(s.lines.join('\n')).not.toContain(TAKEN);
    expect(await s.served()).toEqual(after);
  });

  it('takes the long way when the image does not fit: cut short, another commit, another program', async () => {
    const s = restartable();
    await s.start();
    expect((await s.create('one', '10.0.0.1')).status).toBe(201);
    const one = await s.served();
    await s.stop();

    // Cut short: the last line lost.
    const text = fs.readFileSync(s.image, 'utf8');
    fs.writeFileSync(s.image, text.slice(0, text.trimEnd().lastIndexOf('\n') + 1));
    await s.start();
    expect(s.lines.join('\n')).not.toContain(TAKEN);
    expect(s.lines.join('\n')).toContain('the image was cut short');
    expect(fs.existsSync(s.image)).toBe(false);
    expect(await s.served()).toEqual(one);
    await s.stop();

    // Another commit: a push while it was down.
    pushFiles(s.config.repo, { 'targets/ml-training/two.yaml': 'hostname: two\nip_address: 10.0.0.2\nprimary_group: ml-training\n' }, 'two');
    await s.start();
    expect(s.lines.join('\n')).not.toContain(TAKEN);
    expect(s.lines.join('\n')).toMatch(/it shows commit [0-9a-f]{40}, and the branch is at [0-9a-f]{40}/);
    const two = await s.served();
    expect((two.targets as Array<{ hostname: string }>).map((t) => t.hostname).sort()).toEqual(['one', 'two']);
    await s.stop();

    // Another program saved it.
    const [header, ...rest] = fs.readFileSync(s.image, 'utf8').split('\n');
    const fields = JSON.parse(header!) as unknown[];
    fields[1] = 'another build';
    fs.writeFileSync(s.image, [JSON.stringify(fields), ...rest].join('\n'));
    await s.start();
    expect(s.lines.join('\n')).not.toContain(TAKEN);
    expect(s.lines.join('\n')).toContain('another build of the server saved it');
    expect(await s.served()).toEqual(two);
    await s.stop();

    // And with nothing wrong, it is taken.
    await s.start();
    expect(s.lines.join('\n')).toContain(TAKEN);
    expect(await s.served()).toEqual(two);
  });
});
