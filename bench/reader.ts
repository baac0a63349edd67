// A client reading URL in a loop, as `watch curl` or a polling http_sd client does (no
// If-None-Match), in a process of its own so its work is not charged to the clients it
// runs beside. Reads each whole answer; prints "ready" and a newline once the first has
// come (its start-up, ~0.5 s of CPU for node and tsx, is then behind it); stops when its
// standard input closes and prints {"count", "bytes"}. The credential comes from AAMI_CREDENTIAL.
import { Agent, get } from 'node:http';

const url = process.argv[2]!;
const agent = new Agent({ keepAlive: true });
let stopped = false;
process.stdin.on('end', () => (stopped = true)).resume();

let count = 0;
let bytes = 0;
while (!stopped) {
  await new Promise<void>((resolve, reject) => {
    get(url, { agent, headers: { authorization: `Bearer ${process.env.AAMI_CREDENTIAL}` } }, (response) => {
      if (response.statusCode !== 200) reject(new Error(`${url}: HTTP ${response.statusCode}`));
      response.on('data', (chunk: Buffer) => (bytes += chunk.length));
      response.on('end', () => resolve());
    }).on('error', reject);
  });
  if (++count === 1) process.stdout.write('ready\n');
}
process.stdout.write(JSON.stringify({ count, bytes }));
agent.destroy();
