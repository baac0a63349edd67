import * as fs from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { gitCli, pushFiles, targetYaml, tempDir } from './helpers.js';
import { waitFor } from './node-helpers.js';
import { serverProcess, type ServerProcess } from './process-helpers.js';

/**
 * `clients` concurrent clients registering hosts `prefix-0…` at addresses 10.`net`.x.y with
 * one token until told to stop or done. Each storm needs a `net` of its own: the server
 * refuses a second target at an address and port already taken.
 */
function storm(server: ServerProcess, token: string, prefix: string, net: number, total: number, clients = 64) {
  const acknowledged: string[] = [];
  const statuses = new Map<number, number>();
  let next = 0;
  let stopped = false;
  const done = Promise.all(
    Array.from({ length: clients }, async () => {
      for (let i = next++; i < total && !stopped; i = next++) {
        const hostname = `${prefix}-${i}`;
        // A refusal that says "try again" (503, or 409 remote_conflict when the branch kept
        // moving) is tried again, as bootstrap.sh does; anything else is final.
        for (let attempt = 0; attempt < 10 && !stopped; attempt++) {
          let status: number;
          let again: boolean;
          try {
            const response = await fetch(`${server.url}/api/v1/bootstrap/register`, {
              method: 'POST',
              headers: { authorization: `Bearer ${token}` },
              body: JSON.stringify({ hostname, ip_address: `10.${net}.${i >> 8}.${i & 255}` }),
            });
            const body = await response.text();
            status = response.status;
            again = status === 503 || (status === 409 && body.includes('"remote_conflict"'));
          } catch {
            break; // the server died mid-request: not acknowledged
          }
          statuses.set(status, (statuses.get(status) ?? 0) + 1);
          if (status === 201) acknowledged.push(hostname);
          if (!again) break;
          await new Promise((resolve) => setTimeout(resolve, 50 * (attempt + 1)));
        }
      }
    }),
  );
  return { acknowledged, statuses, done, stop: () => (stopped = true) };
}

async function newToken(server: ServerProcess, maxUses: number): Promise<{ token: string; id: string }> {
  const created = await server.call('POST', '/api/v1/bootstrap-tokens', { name: 'storm', default_group_id: 'ml-training', max_uses: maxUses, expires_at: '2099-01-01T00:00:00Z' });
  if (created.status !== 201) throw new Error(JSON.stringify(created.json));
  return created.json;
}

/** Every acknowledged host is in the branch's tree, in the API and in the SD file; the repository is sound. */
async function expectAllPresent(server: ServerProcess, repo: string, sdDir: string, hostnames: string[]) {
  const tree = new Set(gitCli(repo, 'ls-tree', '-r', '--name-only', 'main', 'targets').trim().split('\n').map((p) => p.split('/').at(-1)!.replace(/\.yaml$/, '')));
  const api = new Set(((await server.call('GET', '/api/v1/targets')).json as Array<{ hostname: string }>).map((t) => t.hostname));
  const sd = () => new Set((JSON.parse(fs.readFileSync(join(sdDir, 'node.json'), 'utf8')) as Array<{ labels: Record<string, string> }>).map((e) => e.labels.hostname));
  await waitFor('the SD file to hold every acknowledged host', async () => hostnames.every((h) => sd().has(h)));
  expect(hostnames.filter((h) => !tree.has(h))).toEqual([]);
  expect(hostnames.filter((h) => !api.has(h))).toEqual([]);
  gitCli(repo, 'fsck', '--strict', '--no-progress');
}

describe('under load', () => {
  it('keeps every acknowledged registration and every pushed change when people push into the repository during a 64-client storm', { timeout: 180_000 }, async () => {
    const base = tempDir();
    const [repo, sdDir, stateDir] = ['repo', 'sd', 'state'].map((d) => join(base, d)) as [string, string, string];
    const server = await serverProcess(['--repo', repo, '--sd-dir', sdDir, '--state-dir', stateDir]);
    const { token, id } = await newToken(server, 1000);
    const load = storm(server, token, 'storm', 50, 600);
    const pushed: string[] = [];
    // Five pull requests merged while the storm runs, each a person's clone, commit and push.
    for (let i = 0; i < 5; i++) {
      await new Promise((resolve) => setTimeout(resolve, 150));
      pushFiles(repo, { [`targets/databases/pr-${i}.yaml`]: targetYaml(`pr-${i}`, `10.99.0.${i}`, 'databases') }, `Merge pull request #${i}`);
      pushed.push(`pr-${i}`);
    }
    await load.done;
    expect(load.acknowledged, JSON.stringify([...load.statuses])).toHaveLength(600);
    await expectAllPresent(server, repo, sdDir, [...load.acknowledged, ...pushed]);
    // The token's use count moved with every enrolment, in the same commits.
    expect((await server.call('GET', `/api/v1/bootstrap-tokens/${id}`)).json.uses).toBe(600);
  });

  it('loses no acknowledged write to kill -9 at random moments of a registration storm', { timeout: 300_000 }, async () => {
    const base = tempDir();
    const [repo, sdDir, stateDir] = ['repo', 'sd', 'state'].map((d) => join(base, d)) as [string, string, string];
    const args = ['--repo', repo, '--sd-dir', sdDir, '--state-dir', stateDir];
    let server = await serverProcess(args);
    const { token, id } = await newToken(server, 100_000);
    const acknowledged: string[] = [];
    for (let round = 0; round < 4; round++) {
      const load = storm(server, token, `r${round}`, 60 + round, 100_000);
      // Once writes are being acknowledged, let the storm run a random while more, then kill the server without warning.
      await waitFor('the first acknowledged registrations', async () => load.acknowledged.length >= 5, 300);
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 800));
      server.child.kill('SIGKILL');
      await server.exited;
      load.stop();
      await load.done;
      expect(load.acknowledged.length, JSON.stringify([...load.statuses])).toBeGreaterThan(0);
      acknowledged.push(...load.acknowledged);
      server = await serverProcess(args);
      await expectAllPresent(server, repo, sdDir, acknowledged);
      // The token counted exactly the hosts that are there.
      const targets = (await server.call('GET', '/api/v1/targets')).json as unknown[];
      expect((await server.call('GET', `/api/v1/bootstrap-tokens/${id}`)).json.uses).toBe(targets.length);
    }
    expect(fs.readdirSync(join(repo, 'refs/heads'))).toEqual(['main']);
  });
});
