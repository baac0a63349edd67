import { renameSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consoleServer, launchChromium, screenshot, signIn } from './console-helpers.js';
import { fixedClock, gitCli, onCleanup, pushFiles, targetYaml, tempDir } from './helpers.js';
import { ADMIN, freePort, runningNodeExporter, waitFor } from './node-helpers.js';
import { startPrometheus } from './prometheus-helpers.js';

/** A label value written to run script if it were ever put into a page as HTML. */
const HOSTILE = `<script>window.__xss=1</script><img src=x onerror="window.__xss=2">"'&`;

let browser: Browser;
beforeAll(async () => {
  browser = await launchChromium();
}, 60_000);
afterAll(async () => {
  await browser?.close();
});

/** A page in a browser context of its own: cookies of one test never reach another. */
async function newPage(): Promise<Page> {
  const context = await browser.newContext();
  onCleanup(() => context.close());
  return context.newPage();
}

const rowOf = (page: Page, host: string) => page.locator(`tr[data-host="${host}"]`);

/**
 * Three nodes of ml-training enrolled by bootstrap token: silent-node beats once, then the
 * server's clock moves 11 minutes (past the 10-minute stale threshold) and fresh-node beats;
 * mute-node never does. No real time passes.
 */
async function silentAndFreshNodes(server: Awaited<ReturnType<typeof consoleServer>>, clock: ReturnType<typeof fixedClock>) {
  const { json: token } = await server.api('POST', '/api/v1/bootstrap-tokens', { name: 'beats', default_group_id: 'ml-training', max_uses: 3, expires_at: '2099-01-01T00:00:00Z' });
  const enrol = async (hostname: string, ip: string) => {
    const response = await server.register(token.token, hostname, ip);
    expect(response.status).toBe(201);
    return ((await response.json()) as { node_credential: string }).node_credential;
  };
  const beat = async (credential: string) => {
    const { status, json } = await server.api('POST', '/api/v1/nodes/heartbeat', undefined, credential);
    expect(status).toBe(200);
    return json.last_seen as string;
  };
  const silent = await enrol('silent-node', '10.0.5.1');
  const fresh = await enrol('fresh-node', '10.0.5.2');
  await enrol('mute-node', '10.0.5.3');
  const silentAt = await beat(silent);
  clock.advance(11 * 60_000);
  const freshAt = await beat(fresh);
  return { silentAt, freshAt };
}

describe('the operator console in Chromium', () => {
  it('signs in, creates a token whose secret is shown once, and follows a 20-node rollout to 20/20 without reloading', { timeout: 90_000 }, async () => {
    const server = await consoleServer();
    const page = await newPage();

    await page.goto(`${server.url}/console/fleet`);
    expect(page.url()).toBe(`${server.url}/console/sign-in`);
    await screenshot(page, '1-sign-in');
    await signIn(page, server.url, ADMIN);

    await page.click('header nav >> text=Tokens');
    await page.fill('form.create input[name=name]', 'batch-01');
    await page.selectOption('form.create select[name=default_group_id]', 'ml-training');
    await page.fill('form.create input[name=max_uses]', '20');
    await page.fill('form.create input[name=expires]', '30d');
    await page.fill('form.create textarea[name=labels]', 'environment=production\ncluster=batch-01');
    await page.click('form.create button[type=submit]');
    await page.waitForSelector('#secret');
    const secret = await page.inputValue('#secret');
    expect(secret).toMatch(/^aami_bootstrap_/);
    await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.url });
    await page.click('button[data-copy]');
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(secret);
    await screenshot(page, '2-token-created');

    // Shown once: the tokens page, the API and the repository never show it again.
    await page.goto(`${server.url}/console/tokens`);
    expect(await page.content()).not.toContain(secret);
    const row = page.locator('tr[data-token]', { hasText: 'batch-01' });
    expect(await row.locator('.taken').textContent()).toBe('0');
    await page.evaluate(() => ((window as unknown as { notReloaded: boolean }).notReloaded = true));

    const enrol = async (from: number, to: number) => {
      const responses = await Promise.all(
        Array.from({ length: to - from + 1 }, (_, i) => from + i).map((n) => server.register(secret, `gpu-node-${String(n).padStart(2, '0')}`, `10.0.1.${n}`, { rack: `r${n % 4}` })),
      );
      expect(responses.map((r) => r.status)).toEqual(responses.map(() => 201));
    };
    const taken = (n: number) => page.waitForFunction((expected) => document.querySelector('tr[data-token] .taken')?.textContent === String(expected), n, { timeout: 20_000 });
    await enrol(1, 10);
    await taken(10);
    await enrol(11, 20);
    await taken(20);
    expect(await row.locator('progress').evaluate((bar: HTMLProgressElement) => [bar.value, bar.max])).toEqual([20, 20]);
    expect(await row.locator('.state').textContent()).toBe('used up');
    expect(await page.evaluate(() => (window as unknown as { notReloaded?: boolean }).notReloaded)).toBe(true);
    await screenshot(page, '3-tokens-rollout-done');

    const secretPart = secret.slice(secret.lastIndexOf('_') + 1);
    expect(server.log.join('\n')).not.toContain(secretPart);
    expect(gitCli(server.config.repo, 'log', '-p', '--all')).not.toContain(secretPart);
    expect(gitCli(server.config.repo, 'log', '-1', '--format=%an', '--', 'tokens')).toBe(`token ${secret.split('_')[2]}\n`);
  });

  it('finds targets by label, shows where each label comes from, and renders a hostile value as text', { timeout: 60_000 }, async () => {
    const server = await consoleServer();
    const { json: token } = await server.api('POST', '/api/v1/bootstrap-tokens', { name: 'lab', default_group_id: 'ml-training', max_uses: 10, expires_at: '2099-01-01T00:00:00Z', labels: { environment: 'production' } });
    for (let n = 1; n <= 6; n++) expect((await server.register(token.token, `node-${n}`, `10.0.2.${n}`, { rack: n <= 2 ? 'r9' : 'r1' })).status).toBe(201);
    expect((await server.register(token.token, 'evil-node', '10.0.2.66', { note: HOSTILE })).status).toBe(201);

    const page = await newPage();
    await signIn(page, server.url, ADMIN);
    await page.fill('form.filter input[name=label]', 'rack=r9');
    await Promise.all([page.waitForURL(/label=rack%3Dr9/), page.click('form.filter button')]);
    expect(await page.locator('tr[data-host]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-host')))).toEqual(['node-1', 'node-2']);
    expect(await page.textContent('.summary')).toContain('2 of 7 targets match');
    await screenshot(page, '4-fleet-by-label');

    await page.click('a >> text=node-1');
    await page.waitForURL(`${server.url}/console/targets/node-1`);
    const source = async (label: string) => page.locator('table tr', { has: page.locator(`td:text-is("${label}")`) }).locator('td').allTextContents();
    expect(await source('rack')).toEqual(['rack', 'r9', 'node']);
    expect(await source('environment')).toEqual(['environment', 'production', `token ${token.id}`]);
    expect(await source('role')).toEqual(['role', 'ml-training', 'group ml-training']);
    expect(await source('aami_group')).toEqual(['aami_group', 'ml-training', 'aami']);
    expect(await page.locator('td:text-is("disk-usage") + td + td + td').textContent()).toBe('/ /data');
    expect(await page.locator('h2:text-is("History") + table tbody tr').first().textContent()).toContain(`token ${token.id}`);
    await screenshot(page, '5-target');

    await page.goto(`${server.url}/console/fleet?q=evil`);
    expect(await rowOf(page, 'evil-node').locator('.label', { hasText: 'note=' }).textContent()).toBe(`note=${HOSTILE}`);
    await page.goto(`${server.url}/console/targets/evil-node`);
    expect(await page.locator('td:text-is("note") + td').textContent()).toBe(HOSTILE);
    expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
    expect(await page.locator('main script, main img').count()).toBe(0);
    await screenshot(page, '6-target-hostile-label');
  });

  it('reports a broken file pushed into the repository, with its reason', { timeout: 60_000 }, async () => {
    const server = await consoleServer();
    pushFiles(server.config.repo, { 'groups/broken.yaml': 'id: broken\nname: [not yaml\n' }, 'Break a group file');
    await waitFor('health to list the broken file', async () => (await server.api('GET', '/api/v1/health')).json.compiler.invalid_file_count === 1);

    const page = await newPage();
    await signIn(page, server.url, ADMIN);
    expect(await page.textContent('header nav a[href="/console/problems"] .badge')).toBe('1');
    await page.click('header nav >> text=Problems');
    const row = page.locator('table.problems tbody tr');
    expect(await row.count()).toBe(1);
    const [file, , reason] = await row.locator('td').allTextContents();
    expect(file).toBe('groups/broken.yaml');
    expect(reason).toMatch(/yaml|flow|sequence/i);
    expect(await page.textContent('.summary')).toContain('1 invalid file');
    await screenshot(page, '7-problems');
  });

  it('keeps the tokens from a reader, as the API does: no Tokens link, 403 for the page and its progress, and for a forged POST', { timeout: 60_000 }, async () => {
    const server = await consoleServer();
    const { json: token } = await server.api('POST', '/api/v1/bootstrap-tokens', { name: 'prod', default_group_id: 'ml-training', max_uses: 5, expires_at: '2099-01-01T00:00:00Z' });
    const reader = await server.credential('night-shift', 'reader');

    const page = await newPage();
    await signIn(page, server.url, reader);
    await page.goto(`${server.url}/console/fleet`);
    expect(await page.textContent('header .who')).toContain('night-shift reader');
    expect(await page.locator('header nav a').allTextContents()).toEqual(['Fleet', expect.stringMatching(/^Problems/)]);
    const refused = await page.goto(`${server.url}/console/tokens`);
    expect(refused!.status()).toBe(403);
    expect(await page.textContent('main')).toContain('this needs the editor role (or higher); night-shift is a reader');
    expect(await page.content()).not.toContain(token.id);
    await screenshot(page, '8-tokens-as-reader');
    expect((await page.request.get(`${server.url}/console/tokens/progress`)).status()).toBe(403);
    // A target the token enrolled names it, with no link to the page the reader may not see.
    expect((await server.register(token.token, 'enrolled-01', '10.0.9.1')).status).toBe(201);
    await page.goto(`${server.url}/console/targets/enrolled-01`);
    expect(await page.textContent('main')).toContain(`by token ${token.id}`);
    expect(await page.locator('a[href^="/console/tokens"]').count()).toBe(0);
    await page.goto(`${server.url}/console/fleet`);

    // The page's own session and CSRF token, used as a reader who crafted the requests by hand.
    const statuses = await page.evaluate(async (tokenId) => {
      const csrf = (document.querySelector('input[name=_csrf]') as HTMLInputElement).value;
      const post = async (path: string, fields: Record<string, string>) => (await fetch(path, { method: 'POST', body: new URLSearchParams({ _csrf: csrf, ...fields }) })).status;
      return [await post('/console/tokens', { name: 'forged', default_group_id: 'ml-training', max_uses: '5', expires: '30d', labels: '' }), await post(`/console/tokens/${tokenId}/revoke`, {})];
    }, token.id);
    expect(statuses).toEqual([403, 403]);
    const { json: tokens } = await server.api('GET', '/api/v1/bootstrap-tokens');
    expect(tokens.map((t: { name: string; revoked: boolean }) => [t.name, t.revoked])).toEqual([['prod', false]]);
  });

  it('refuses a form that a page on another origin posts to the console, even with the session CSRF token', { timeout: 60_000 }, async () => {
    const server = await consoleServer();
    const page = await newPage();
    await signIn(page, server.url, ADMIN);
    await page.goto(`${server.url}/console/tokens`);
    const csrf = await page.inputValue('input[name=_csrf] >> nth=0');

    // Another port of the same host: the same site, so the SameSite=Strict cookie goes along.
    const attacker = createServer((_, response) => {
      response.setHeader('content-type', 'text/html');
      response.end(`<!DOCTYPE html><form method="post" action="${server.url}/console/tokens">
        <input name="_csrf" value="${csrf}"><input name="name" value="stolen"><input name="default_group_id" value="ml-training">
        <input name="max_uses" value="1000"><input name="expires" value="30d"><input name="labels" value=""></form>
        <script>document.forms[0].submit()</script>`);
    });
    await new Promise<void>((resolve) => attacker.listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise<void>((resolve) => attacker.close(() => resolve())));
    const attackerUrl = `http://127.0.0.1:${(attacker.address() as { port: number }).port}/`;

    const answer = page.waitForResponse((r) => r.url() === `${server.url}/console/tokens` && r.request().method() === 'POST');
    await page.goto(attackerUrl);
    expect((await answer).status()).toBe(403);
    await page.waitForURL(`${server.url}/console/tokens`);
    expect(await page.textContent('main')).toContain('another site');
    await screenshot(page, '9-cross-site-refused');
    expect((await server.api('GET', '/api/v1/bootstrap-tokens')).json).toEqual([]);
  });

  it('shows whether Prometheus scrapes each target up, asking Prometheus from the server', { timeout: 90_000 }, async () => {
    const exporterPort = await runningNodeExporter(join(tempDir(), 'textfile'));
    const closedPort = await freePort();
    const sdDir = join(tempDir(), 'sd');
    const prometheus = await startPrometheus(`global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: node\n    file_sd_configs: [{files: ['${sdDir}/node.json'], refresh_interval: 1s}]\n`);
    const server = await consoleServer({ sdDir, prometheusUrl: prometheus.url });
    for (const [hostname, port] of [['scraped-node', exporterPort], ['silent-node', closedPort]] as const) {
      const { status } = await server.api('POST', '/api/v1/targets', { hostname, ip_address: '127.0.0.1', primary_group_id: 'ml-training', exporters: [{ type: 'node_exporter', port }] });
      expect(status).toBe(201);
    }
    await waitFor('Prometheus to scrape both targets', async () => (await prometheus.query('up{aami_group!=""}')).length === 2, 300);

    const page = await newPage();
    await signIn(page, server.url, ADMIN);
    expect(await rowOf(page, 'scraped-node').locator('.scrape').textContent()).toBe('up');
    expect(await rowOf(page, 'silent-node').locator('.scrape').textContent()).toBe('down (node)');
    await screenshot(page, '10-fleet-with-prometheus');
    await page.click('a >> text=silent-node');
    expect(await page.locator('dt:text-is("Prometheus") + dd').textContent()).toBe('down (node)');
  });

  it('lets an admin revoke a token after confirming; the token then refuses a registration', { timeout: 60_000 }, async () => {
    const server = await consoleServer();
    const { json: token } = await server.api('POST', '/api/v1/bootstrap-tokens', { name: 'batch-02', default_group_id: 'ml-training', max_uses: 5, expires_at: '2099-01-01T00:00:00Z' });
    expect((await server.register(token.token, 'before-revoke', '10.0.3.1')).status).toBe(201);

    const page = await newPage();
    await signIn(page, server.url, ADMIN);
    await page.goto(`${server.url}/console/tokens`);
    const row = page.locator('tr[data-token]', { hasText: 'batch-02' });
    // Declining the confirmation sends nothing.
    page.once('dialog', (dialog) => void dialog.dismiss());
    await row.locator('button:text-is("Revoke")').click();
    expect((await server.api('GET', `/api/v1/bootstrap-tokens/${token.id}`)).json.revoked).toBe(false);

    page.once('dialog', (dialog) => {
      expect(dialog.message()).toBe('Revoke batch-02? Nodes can no longer enrol with it.');
      void dialog.accept();
    });
    await Promise.all([page.waitForURL(`${server.url}/console/tokens?revoked=${token.id}`), row.locator('button:text-is("Revoke")').click()]);
    expect(await page.textContent('p.notice')).toBe(`Token batch-02 (${token.id}) is revoked: no node can enrol with it any more.`);
    expect(await row.locator('.state').textContent()).toBe('revoked');
    expect(await row.locator('button:text-is("Revoke")').count()).toBe(0);
    await screenshot(page, '12-token-revoked');

    const refused = await server.register(token.token, 'after-revoke', '10.0.3.2');
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('token_revoked');
    expect((await server.api('GET', '/api/v1/targets')).json.map((t: { hostname: string }) => t.hostname)).toEqual(['before-revoke']);
    // The revocation is a commit by the signed-in admin, not by the token or by aami.
    expect(gitCli(server.config.repo, 'log', '-1', '--format=%an', '--', 'tokens')).toBe('admin\n');
  });

  it('filters the fleet by group, child groups included, counts targets per namespace, and marks stale nodes', { timeout: 60_000 }, async () => {
    const clock = fixedClock(Date.now());
    const server = await consoleServer({ clock: () => new Date(clock.now()) });
    const targets: Array<[string, string, string[]]> = [
      ['seoul-a-1', 'seoul-zone-a', ['ml-training']],
      ['seoul-b-1', 'seoul-zone-b', []],
      ['seoul-1', 'datacenter-seoul', []],
      ['tokyo-1', 'datacenter-tokyo', []],
      ['trainer-1', 'ml-training', ['production-critical']],
      ['standard-1', 'production-standard', []],
    ];
    for (const [n, [hostname, group, also]] of targets.entries()) {
      const { status } = await server.api('POST', '/api/v1/targets', { hostname, ip_address: `10.0.4.${n + 1}`, primary_group_id: group, group_ids: also });
      expect(status).toBe(201);
    }
    const nodes = await silentAndFreshNodes(server, clock);

    const page = await newPage();
    await signIn(page, server.url, ADMIN);
    const hosts = () => page.locator('tr[data-host]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-host')));
    const namespaceCount = (namespace: string) => page.locator('aside details summary', { hasText: namespace }).locator('.count').textContent();
    // A target in groups of two namespaces counts once in each; the three nodes are in ml-training.
    expect(await namespaceCount('infrastructure')).toBe('4');
    expect(await namespaceCount('logical')).toBe('5');
    expect(await namespaceCount('environment')).toBe('2');
    expect(await page.locator('aside a[href="/console/fleet?group=datacenter-seoul"] + .count').textContent()).toBe('3');

    await Promise.all([page.waitForURL(`${server.url}/console/fleet?group=datacenter-seoul`), page.click('aside a[href="/console/fleet?group=datacenter-seoul"]')]);
    expect(await hosts()).toEqual(['seoul-1', 'seoul-a-1', 'seoul-b-1']);
    expect(await page.textContent('.summary')).toBe('3 of 9 targets match in group datacenter-seoul');
    await screenshot(page, '13-fleet-by-group');
    await page.goto(`${server.url}/console/fleet?group=production`);
    expect(await hosts()).toEqual(['standard-1', 'trainer-1']);
    await page.goto(`${server.url}/console/fleet?group=seoul-zone-a`);
    expect(await hosts()).toEqual(['seoul-a-1']);
    // The text filter keeps the group.
    await page.goto(`${server.url}/console/fleet?group=ml-training`);
    expect(await hosts()).toEqual(['fresh-node', 'mute-node', 'seoul-a-1', 'silent-node', 'trainer-1']);
    await page.fill('form.filter input[name=q]', 'node');
    await Promise.all([page.waitForURL(/q=node/), page.click('form.filter button')]);
    expect(await hosts()).toEqual(['fresh-node', 'mute-node', 'silent-node']);

    const heartbeat = (host: string) => rowOf(page, host).locator('.heartbeat');
    expect(await heartbeat('silent-node').locator('time').getAttribute('datetime')).toBe(nodes.silentAt);
    expect(await heartbeat('silent-node').locator('.badge').textContent()).toBe('stale');
    expect(await heartbeat('fresh-node').locator('time').getAttribute('datetime')).toBe(nodes.freshAt);
    expect(await heartbeat('fresh-node').locator('.badge').count()).toBe(0);
    expect(await heartbeat('mute-node').textContent()).toBe('never');
    await screenshot(page, '14-fleet-stale');
  });

  it('shows on the Problems page a Git remote it cannot reach and the nodes gone silent', { timeout: 60_000 }, async () => {
    const clock = fixedClock(Date.now());
    const remote = join(tempDir('aami-remote-'), 'config.git');
    gitCli(tempDir(), 'init', '-q', '--bare', '--initial-branch=main', remote);
    const server = await consoleServer({ clock: () => new Date(clock.now()), remote: { url: remote, branch: 'main', syncIntervalMs: 3_600_000 } });
    await silentAndFreshNodes(server, clock);

    const page = await newPage();
    await signIn(page, server.url, ADMIN);
    await page.goto(`${server.url}/console/problems`);
    expect(await page.textContent('.summary')).toBe('Needs attention: 1 stale node.');
    expect(await page.locator('dt:text-is("Remote") + dd').textContent()).toBe(`${remote} (main)`);
    expect(await page.locator('h2:text-is("Remote") ~ .error').count()).toBe(0);
    // The pull at the start, on the server's clock (the nodes' silence moved it on since).
    const field = (name: string) => page.locator(`dt:text-is("${name}") + dd`).textContent();
    expect(await field('Last pull')).toMatch(/^current, 1\d min ago$/);
    expect(await field('Remote last answered')).toMatch(/^1\d min ago$/);
    expect(await field('Last push')).toMatch(/^pushed, 1\d min ago$/);
    expect(await page.locator('ul.stale li').allTextContents()).toEqual([expect.stringMatching(/^silent-node 1\d min ago$/)]);

    renameSync(remote, `${remote}.away`);
    onCleanup(() => renameSync(`${remote}.away`, remote));
    expect((await server.api('POST', '/api/v1/sync')).status).toBeGreaterThanOrEqual(500);
    await page.reload();
    expect(await page.textContent('.summary')).toBe('Needs attention: remote, 1 stale node.');
    const error = await page.locator('h2:text-is("Remote") ~ .error').first().textContent();
    expect(error).toMatch(/^the Git remote is not reachable: /);
    expect(error).toContain(remote);
    // The pull that failed is told apart from when the remote last answered.
    expect(await field('Last pull')).toBe('failed, just now');
    expect(await field('Remote last answered')).toMatch(/^1\d min ago$/);
    await screenshot(page, '15-problems-remote-stale');
  });

  it('pages a fleet of 10,000 targets: each page renders 100 rows', { timeout: 120_000 }, async () => {
    const server = await consoleServer();
    const files: Record<string, string> = {};
    const host = (n: number) => `host-${String(n).padStart(5, '0')}`;
    for (let n = 0; n < 10_000; n++) files[`targets/ml-training/${host(n)}.yaml`] = targetYaml(host(n), `10.1.${Math.floor(n / 250)}.${(n % 250) + 1}`);
    pushFiles(server.config.repo, files, 'Add 10,000 targets');
    await waitFor('10,000 targets', async () => (await server.api('GET', `/api/v1/targets?hostname=${host(9999)}`)).json.length === 1, 600);

    const page = await newPage();
    await signIn(page, server.url, ADMIN);
    const started = performance.now();
    const response = await page.goto(`${server.url}/console/fleet?page=2`);
    const html = await response!.text();
    console.log(`console: fleet page 2 of 10,000 targets: ${Math.round(performance.now() - started)} ms, ${Math.round(html.length / 1024)} KiB`);
    expect(await page.locator('tr[data-host]').count()).toBe(100);
    expect(await page.locator('tr[data-host]').first().getAttribute('data-host')).toBe(host(100));
    expect(await page.textContent('.pager')).toContain('page 2 of 100');
    expect(await page.textContent('aside')).toContain('ml-training 10000');
    expect(html.length).toBeLessThan(200_000);
    await screenshot(page, '11-fleet-10k');

    await page.fill('form.filter input[name=q]', 'host-0999');
    await Promise.all([page.waitForURL(/q=host-0999/), page.click('form.filter button')]);
    expect(await page.locator('tr[data-host]').count()).toBe(10);
    expect(await page.textContent('.summary')).toContain('10 of 10000 targets match');
  });
});
