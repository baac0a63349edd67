import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { createLogger } from '../src/log.js';
import { startServer, type ServerConfig } from '../src/server.js';
import { onCleanup, ROOT } from './helpers.js';
import { ADMIN, requireBinary, serverConfig } from './node-helpers.js';

/** Where the console tests leave screenshots for a reviewer (git ignores test-output/). */
export const SCREENSHOTS = join(ROOT, 'test-output/console');

/**
 * Debian's Chromium, headless, never a downloaded browser. Playwright gives it a fresh
 * --user-data-dir of its own. Without the background-networking flags Chromium dials out
 * at start, and this machine's closed network refuses it.
 */
export async function launchChromium(): Promise<Browser> {
  const executablePath = requireBinary('chromium', 'chromium');
  return chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** A real `aami serve` on 127.0.0.1 whose log lines are kept, so a test can look for secrets in them. */
export async function consoleServer(overrides: Partial<ServerConfig> = {}) {
  const log: string[] = [];
  const config = serverConfig({ logger: createLogger((line) => log.push(line)), ...overrides });
  const server = await startServer(config);
  onCleanup(() => server.close());
  const api = async (method: string, path: string, body?: unknown, credential = ADMIN) => {
    const response = await fetch(`${server.url}${path}`, { method, headers: { authorization: `Bearer ${credential}` }, body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: response.status, json: (await response.json()) as any };
  };
  return {
    url: server.url,
    config,
    log,
    api,
    /** A named credential with this role, made by the admin through the API. */
    async credential(name: string, role: 'admin' | 'editor' | 'reader'): Promise<string> {
      const { status, json } = await api('POST', '/api/v1/credentials', { name, role });
      if (status !== 201) throw new Error(`creating credential ${name}: ${JSON.stringify(json)}`);
      return json.credential as string;
    },
    /** A node's self-registration, as bootstrap.sh sends it. */
    register(token: string, hostname: string, ip: string, labels: Record<string, string> = {}) {
      return fetch(`${server.url}/api/v1/bootstrap/register`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: JSON.stringify({ hostname, ip_address: ip, labels }) });
    },
  };
}

export async function signIn(page: Page, url: string, credential: string): Promise<void> {
  await page.goto(`${url}/console/sign-in`);
  await page.fill('input[name=credential]', credential);
  await Promise.all([page.waitForURL(`${url}/console/fleet`), page.click('button[type=submit]')]);
}

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}
