import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
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
 * A regular file directly inside `dir`, or nothing: a symlink (O_NOFOLLOW), a directory, a
 * FIFO (O_NONBLOCK: never waits for a writer) or a device is not served, so a link planted in
 * the downloads directory cannot hand out /etc/shadow or the state directory.
 */
function readRegularFile(dir: string, name: string): Buffer | undefined {
  const path = join(dir, name);
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    if (!fstatSync(fd).isFile()) return undefined;
    // The name has no slash, so this holds; checked anyway, after the open that matters.
    if (dirname(realpathSync(path)) !== realpathSync(dir)) return undefined;
    return readFileSync(fd);
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/**
 * The node scripts, from the project's own files, and optional downloads (a node_exporter
 * tarball for sites without internet access). Nothing is fetched from elsewhere.
 */
export function scriptRoutes(options: { scriptsDir: string; downloadsDir?: string }) {
  const app = new Hono();
  const scripts = new Map(NODE_SCRIPTS.map((name) => [name, readFileSync(join(options.scriptsDir, name))]));
  const shell = 'text/x-shellscript; charset=utf-8';
  const download = (name: string) => (options.downloadsDir ? readRegularFile(options.downloadsDir, name) : undefined);
  // The guide's one-liner fetches /bootstrap.sh; its checksum sits beside it, as for /scripts/.
  app.get('/bootstrap.sh', (c) => serve(c, 'bootstrap.sh', (name) => scripts.get(name), shell));
  app.get('/bootstrap.sh.sha256', (c) => serve(c, 'bootstrap.sh.sha256', (name) => scripts.get(name), shell));
  app.get('/scripts/:file', (c) => serve(c, c.req.param('file'), (name) => scripts.get(name), shell));
  app.get('/downloads/:file', (c) => serve(c, c.req.param('file'), download, 'application/octet-stream'));
  return app;
}
