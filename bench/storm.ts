// A registration storm: the client side of the benches that measure the server under load.

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
  const started = performance.now();
  await Promise.all(
    Array.from({ length: options.clients }, async (_, client) => {
      const server = urls[client % urls.length]!;
      for (let i = next++; i < options.requests; i = next++) {
        const t0 = performance.now();
        const hostname = `${options.prefix}-${i}`;
        const response = await fetch(`${server}/api/v1/bootstrap/register`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}` },
          body: JSON.stringify({ hostname, ip_address: `10.${options.net}.${i >> 8}.${i & 255}`, facts: { gpu_model: 'H100', gpu_count: 8 } }),
        });
        await response.arrayBuffer();
        latencies.push(performance.now() - t0);
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
        if (response.status === 201) acknowledged.push(hostname);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  return { rate: options.requests / seconds, latencies: latencies.sort((a, b) => a - b), statuses, acknowledged };
}
