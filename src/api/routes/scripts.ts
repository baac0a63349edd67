import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Hono, type Context } from 'hono';
import { AamiError } from '../../errors.js';

export const NODE_SCRIPTS = ['bootstrap.sh', 'preflight-check.sh', 'dynamic-check.sh', 'uninstall.sh'];
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** `GET name` gives the file, `GET name.sha256` its hash in the form `sha256sum -c` reads. */
function serve(c: Context, requested: string, read: (name: string) => Buffer | undefined, type: string): Response {
  const name = requested.replace(/\.sha256$/, '');
  const body = SAFE_NAME.test(name) ? read(name) : undefined;
  if (!body) throw new AamiError('not_found', `no file "${name}"`);
  if (requested.endsWith('.sha256')) return c.text(`${createHash('sha256').update(body).digest('hex')}  ${name}\n`);
  return c.body(new Uint8Array(body), 200, { 'Content-Type': type });
}

/**
 * The node scripts, from the project's own files, and optional downloads (a node_exporter
 * tarball for sites without internet access). Nothing is fetched from elsewhere.
 */
export function scriptRoutes(options: { scriptsDir: string; downloadsDir?: string }) {
  const app = new Hono();
  const scripts = new Map(NODE_SCRIPTS.map((name) => [name, readFileSync(join(options.scriptsDir, name))]));
  const shell = 'text/x-shellscript; charset=utf-8';
  const download = (name: string) => {
    const path = options.downloadsDir && join(options.downloadsDir, name);
    return path && existsSync(path) ? readFileSync(path) : undefined;
  };
  // The guide's one-liner fetches /bootstrap.sh; its checksum sits beside it, as for /scripts/.
  app.get('/bootstrap.sh', (c) => serve(c, 'bootstrap.sh', (name) => scripts.get(name), shell));
  app.get('/bootstrap.sh.sha256', (c) => serve(c, 'bootstrap.sh.sha256', (name) => scripts.get(name), shell));
  app.get('/scripts/:file', (c) => serve(c, c.req.param('file'), (name) => scripts.get(name), shell));
  app.get('/downloads/:file', (c) => serve(c, c.req.param('file'), download, 'application/octet-stream'));
  return app;
}
