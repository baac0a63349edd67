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

  /** The sum of the file open as `fd`; `fd` is closed as soon as it is not needed (at once when the sum is known or being read). */
  of(fd: number, stat: Stats): Promise<string> {
    // ctime too: `touch -r` or `cp -p` can set mtime back, not ctime.
    const key = `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeMs}:${stat.ctimeMs}`;
    let found = this.known.get(key);
    if (found) closeSync(fd);
    else {
      const hash = createHash('sha256');
      found = new Promise<string>((resolve, reject) => {
        // The bytes a GET of this version sends, not what an append in place added since
        // (an empty one: none, read or not).
        if (stat.size === 0) {
          closeSync(fd);
          return resolve(hash.digest('hex'));
        }
        createReadStream('', { fd, start: 0, end: stat.size - 1 })
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

/** Download answers a connection may have open at once: a client reads one, and pipelines one more. */
const OPEN_PER_CONNECTION = 2;

/**
 * The download answers open on each connection, released when it closes. Answers queued
 * behind another on a keep-alive connection (pipelined requests) are never cancelled when the
 * connection drops, only by its close; and a client that pipelines thousands and reads none
 * held a descriptor and a first chunk for each (2,340 descriptors and 261 MB on one
 * connection): past OPEN_PER_CONNECTION the next gets 429. One 'close' listener a connection.
 */
class OpenDownloads {
  private readonly bySocket = new WeakMap<Socket, Set<() => void>>();

  /** Whether `socket` may open another answer. */
  admits(socket: Socket): boolean {
    return (this.bySocket.get(socket)?.size ?? 0) < OPEN_PER_CONNECTION;
  }

  /** `gone` runs when the connection closes, unless the returned function has taken it off first. */
  add(socket: Socket, gone: () => void): () => void {
    let open = this.bySocket.get(socket);
    if (!open) {
      const answers = (open = new Set());
      this.bySocket.set(socket, answers);
      socket.once('close', () => {
        this.bySocket.delete(socket);
        for (const answer of [...answers]) answer();
      });
    }
    open.add(gone);
    return () => open.delete(gone);
  }
}

/**
 * The first `size` bytes of an open file, read as the client takes them (Content-Length
 * holds if the file grows meanwhile). The descriptor is closed at the end, when the answer
 * is cancelled, or when `watch` says the connection closed; that close ends the stream, not
 * errors it (an error is a line in the server's log: one for each answer a client drops).
 */
function fileBody(fd: number, size: number, watch?: (gone: () => void) => () => void): ReadableStream<Uint8Array> {
  let at = 0;
  let open = true;
  let reading = false;
  let ended: (() => void) | undefined;
  // Closed once, and never under a read in flight (the number could be another file's by then).
  const release = () => {
    if (!open) return;
    open = false;
    unwatch?.();
    if (!reading) closeSync(fd);
  };
  const unwatch = watch?.(() => {
    release();
    ended?.();
  });
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
        // An I/O error, or a file cut short in place: the answer fails (the connection is
        // dropped), rather than end short of its Content-Length on a connection kept alive.
        const failure = 'error' in result ? result.error : result.bytesRead === 0 ? new Error(`the file was cut to ${at} of its ${size} bytes while it was sent`) : undefined;
        if (failure) {
          release();
          throw failure;
        }
        const { bytesRead } = result as { bytesRead: number };
        at += bytesRead;
        controller.enqueue(chunk.subarray(0, bytesRead));
        if (at >= size) {
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
  const downloads = new OpenDownloads();
  app.get('/downloads/:file', async (c) => {
    const requested = c.req.param('file');
    const name = fileName(requested);
    const socket = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming?.socket;
    if (socket && !downloads.admits(socket)) {
      throw new AamiError('rate_limited', `${OPEN_PER_CONNECTION} downloads are open on this connection already: read them first, or use another connection`);
    }
    const file = options.downloadsDir ? openRegularFile(options.downloadsDir, name) : undefined;
    if (!file) throw new AamiError('not_found', `no file "${name}"`);
    if (requested.endsWith('.sha256')) return c.text(sumLine(await hashes.of(file.fd, file.stat), name));
    const headers = { 'Content-Type': 'application/octet-stream', 'Content-Length': String(file.stat.size) };
    // HEAD (answered by this GET route) and an empty file send no body: no stream to close the descriptor.
    if (c.req.method === 'HEAD' || file.stat.size === 0) {
      closeSync(file.fd);
      return c.body(null, 200, headers);
    }
    return c.body(fileBody(file.fd, file.stat.size, socket && ((gone) => downloads.add(socket, gone))), 200, headers);
  });
  return app;
}
