// A registration storm: the client side of the benches that measure the server under load.
// The clients speak HTTP/1.1 through node:http with kept-alive connections: fetch (undici)
// cost ~2 ms of CPU a request here, as much as the server's whole registration, and on a
// 2-core machine a client that heavy measures itself. In production the clients are other machines.
import { Agent, request } from 'node:http';

export interface Storm {
  rate: number;
  latencies: number[];
  statuses: Map<number, number>;
  /** Host names answered 201. */
  acknowledged: string[];
}

/**
 * `requests` self-registrations from `clients` concurrent clients with one token; latencies
 * sorted. With several servers' URLs, the clients are spread over them.
 */
export async function registrationStorm(url: string | string[], token: string, options: { clients: number; requests: number; prefix: string; net: number }): Promise<Storm> {
  const urls = Array.isArray(url) ? url : [url];
  const latencies: number[] = [];
  const statuses = new Map<number, number>();
  const acknowledged: string[] = [];
  let next = 0;
  const agent = new Agent({ keepAlive: true, maxSockets: options.clients });
  const started = performance.now();
  await Promise.all(
    Array.from({ length: options.clients }, async (_, client) => {
      const server = urls[client % urls.length]!;
      for (let i = next++; i < options.requests; i = next++) {
        const t0 = performance.now();
        const hostname = `${options.prefix}-${i}`;
        const body = JSON.stringify({ hostname, ip_address: `10.${options.net}.${i >> 8}.${i & 255}`, facts: { gpu_model: 'H100', gpu_count: 8 } });
        const status = await post(agent, `${server}/api/v1/bootstrap/register`, token, body);
        latencies.push(performance.now() - t0);
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        if (status === 201) acknowledged.push(hostname);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  agent.destroy();
  return { rate: options.requests / seconds, latencies: latencies.sort((a, b) => a - b), statuses, acknowledged };
}

/** POST `body` and read the whole answer; resolves its status. */
function post(agent: Agent, url: string, token: string, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (response) => {
      response.on('data', () => undefined);
      response.on('end', () => resolve(response.statusCode ?? 0));
      response.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}
