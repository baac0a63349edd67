import { createHash } from 'node:crypto';
import { closeSync, constants, createReadStream, fstatSync, openSync, read, readFileSync, realpathSync, type Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { Hono, type Context } from 'hono';
import { AamiError } from '../../errors.js';

export const NODE_SCRIPTS = ['bootstrap.sh', 'preflight-check.sh', 'dynamic-check.sh', 'uninstall.sh'];
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** A requested name without its `.sha256`, if it may name a file at all. */
function fileName(requested: string): string {
  const name = requested.replace(/\.sha256$/, '');
  if (!SAFE_NAME.test(name)) throw new AamiError('not_found', `no file "${name}"`);
  return name;
}

/** The line `sha256sum -c` reads. */
const sumLine = (hex: string, name: string) => `${hex}  ${name}\n`;

/**
 * A regular file directly inside `dir`, opened, or nothing: a symlink (O_NOFOLLOW), a
 * directory, a FIFO (O_NONBLOCK: never waits for a writer) or a device is not served, so a
 * link planted in the downloads directory cannot hand out /etc/shadow or the state
 * directory. The caller closes the descriptor.
 */
function openRegularFile(dir: string, name: string): { fd: number; stat: Stats } | undefined {
  const path = join(dir, name);
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const stat = fstatSync(fd);
    // The name has no slash, so the second holds; checked anyway, after the open that matters.
    if (stat.isFile() && dirname(realpathSync(path)) === realpathSync(dir)) return { fd, stat };
  } catch {
    // gone meanwhile: not served
  }
  closeSync(fd);
  return undefined;
}

/**
 * The sha256 of downloads, by file version (device, inode, size, times): read once, as a
 * stream, whatever the number of nodes asking. A tarball read whole and hashed in one call
 * at each request (anyone may ask, unauthenticated) cost its size in memory per request and
 * held the event loop for seconds at 400 MB.
 */
class DownloadHashes {
  private readonly known = new Map<string, Promise<string>>();

  of(fd: number, stat: Stats): Promise<string> {
    // ctime too: `touch -r` or `cp -p` can set mtime back, not ctime.
    const key = `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeMs}:${stat.ctimeMs}`;
    let found = this.known.get(key);
    if (!found) {
      const hash = createHash('sha256');
      found = new Promise<string>((resolve, reject) => {
        // The bytes a GET of this version sends, not what an append in place added since.
        createReadStream('', { fd, autoClose: false, start: 0, end: Math.max(stat.size - 1, 0) })
          .on('data', (chunk) => hash.update(chunk))
          .on('end', () => resolve(hash.digest('hex')))
          .on('error', reject);
      });
      found.catch(() => this.known.delete(key));
      // A few versions of a few files: the oldest goes past 64.
      if (this.known.size >= 64) this.known.delete(this.known.keys().next().value!);
      this.known.set(key, found);
    }
    return found;
  }
}

/** Bytes a download's answer reads at a time. */
const CHUNK = 64 * 1024;

/**
 * The first `size` bytes of an open file, read as the client takes them (Content-Length
 * holds if the file grows meanwhile). The descriptor is closed at the end, when the answer
 * is cancelled, or when the client's connection closes: an answer queued behind another
 * on a keep-alive connection (pipelined requests) is never cancelled when the connection
 * drops, and held its descriptor for good. That close ends the stream, not errors it: an
 * error would be a line in the server's log for each answer a client drops.
 */
function fileBody(fd: number, size: number, socket: Socket | undefined): ReadableStream<Uint8Array> {
  let at = 0;
  let open = true;
  let reading = false;
  let ended: (() => void) | undefined;
  // Closed once, and never under a read in flight (the number could be another file's by then).
  const release = () => {
    if (!open) return;
    open = false;
    socket?.off('close', gone);
    if (!reading) closeSync(fd);
  };
  // Still called after release took it off the socket when that happened during the socket's
  // 'close' (an emit calls the listeners it started with): the answer may be cancelled already.
  const gone = () => {
    if (!open) return;
    release();
    ended?.();
  };
  socket?.once('close', gone);
  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
        ended = () => controller.close();
      },
      async pull(controller) {
        if (!open) return;
        const chunk = Buffer.allocUnsafe(Math.min(CHUNK, size - at));
        reading = true;
        const result = await new Promise<{ bytesRead: number } | { error: Error }>((resolve) => read(fd, chunk, 0, chunk.length, at, (error, bytesRead) => resolve(error ? { error } : { bytesRead })));
        reading = false;
        if (!open) return closeSync(fd); // the client went while it read
        if ('error' in result) {
          release(); // an I/O error: the answer ends in it
          throw result.error;
        }
        const { bytesRead } = result;
        at += bytesRead;
        if (bytesRead > 0) controller.enqueue(chunk.subarray(0, bytesRead));
        // Done, or cut short by a truncation in place (the client sees fewer bytes than announced).
        if (at >= size || bytesRead === 0) {
          release();
          controller.close();
        }
      },
      cancel: release,
    },
    { highWaterMark: 0 },
  );
}

/**
 * The node scripts, from the project's own files (small: held in memory), and optional
 * downloads (a node_exporter tarball for sites without internet access; streamed from the
 * file, never read whole). Nothing is fetched from elsewhere.
 */
export function scriptRoutes(options: { scriptsDir: string; downloadsDir?: string }) {
  const app = new Hono();
  const scripts = new Map(NODE_SCRIPTS.map((name) => [name, readFileSync(join(options.scriptsDir, name))]));
  const shell = 'text/x-shellscript; charset=utf-8';
  // `GET name` gives the script, `GET name.sha256` its hash.
  const script = (c: Context, requested: string) => {
    const name = fileName(requested);
    const body = scripts.get(name);
    if (!body) throw new AamiError('not_found', `no file "${name}"`);
    if (requested.endsWith('.sha256')) return c.text(sumLine(createHash('sha256').update(body).digest('hex'), name));
    return c.body(new Uint8Array(body), 200, { 'Content-Type': shell });
  };
  // The guide's one-liner fetches /bootstrap.sh; its checksum sits beside it, as for /scripts/.
  app.get('/bootstrap.sh', (c) => script(c, 'bootstrap.sh'));
  app.get('/bootstrap.sh.sha256', (c) => script(c, 'bootstrap.sh.sha256'));
  app.get('/scripts/:file', (c) => script(c, c.req.param('file')));

  const hashes = new DownloadHashes();
  app.get('/downloads/:file', async (c) => {
    const requested = c.req.param('file');
    const name = fileName(requested);
    const file = options.downloadsDir ? openRegularFile(options.downloadsDir, name) : undefined;
    if (!file) throw new AamiError('not_found', `no file "${name}"`);
    if (requested.endsWith('.sha256')) {
      try {
        return c.text(sumLine(await hashes.of(file.fd, file.stat), name));
      } finally {
        closeSync(file.fd);
      }
    }
    const headers = { 'Content-Type': 'application/octet-stream', 'Content-Length': String(file.stat.size) };
    // HEAD (answered by this GET route) and an empty file send no body: no stream to close the descriptor.
    if (c.req.method === 'HEAD' || file.stat.size === 0) {
      closeSync(file.fd);
      return c.body(null, 200, headers);
    }
    const socket = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming?.socket;
    return c.body(fileBody(file.fd, file.stat.size, socket), 200, headers);
  });
  return app;
}
