import { createServer, type IncomingMessage } from 'node:http';
import { onCleanup } from './helpers.js';

/**
 * The one network peer of the admin CLI tests that a real `aami serve` cannot play: it holds
 * a request unanswered while the test looks at the client process (is the credential in
 * `ps`?), then answers `[]`. No API: every other test runs against the real server.
 */
export interface HeldRequest {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  release(): void;
}

export async function holdingPeer() {
  const waiting: Array<(request: HeldRequest) => void> = [];
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const release = () => void res.writeHead(200, { 'content-type': 'application/json' }).end('[]');
      const take = waiting.shift();
      if (take) take({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, release });
      else release();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    /** The next request, held until `release` is called. */
    nextRequest: () => new Promise<HeldRequest>((resolve) => waiting.push(resolve)),
  };
}
