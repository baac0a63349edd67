import { serve } from '@hono/node-server';
import * as net from 'node:net';
import { describe, expect, it } from 'vitest';
import { apiHarness } from './api-helpers.js';
import { onCleanup, targetYaml } from './helpers.js';

describe('paced big answers over a real socket', () => {
  it('clients that hang up while they wait their turn give it back', { timeout: 60_000 }, async () => {
    const api = await apiHarness();
    const files: Record<string, string> = {};
    const big = 'x'.repeat(1000);
    for (let i = 0; i < 300; i++) files[`targets/ml-training/h-${i}.yaml`] = targetYaml(`h-${i}`, `10.7.${i >> 8}.${i & 255}`, 'ml-training', `labels: {a: ${big}, b: ${big}, c: ${big}}\n`);
    await api.push(files);
    const server = serve({ fetch: api.app.fetch, port: 0, hostname: '127.0.0.1' });
    await new Promise((resolve) => server.once('listening', resolve));
    onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as net.AddressInfo).port;
    const auth = { authorization: 'Bearer test-admin-credential-0123456789' };
    let release!: () => void;
    const held = api.writer.exclusive(() => new Promise<void>((resolve) => (release = resolve)));
    try {
      const sockets = await Promise.all(Array.from({ length: 30 }, () => new Promise<net.Socket>((resolve) => {
        const socket = net.connect(port, '127.0.0.1', () => {
          socket.write(`GET /api/v1/targets HTTP/1.1\r\nHost: x\r\nAuthorization: ${auth.authorization}\r\n\r\n`);
          resolve(socket);
        });
        socket.on('error', () => undefined);
      })));
      await new Promise((resolve) => setTimeout(resolve, 100));
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => setTimeout(resolve, 50));
      const started = performance.now();
      const honest = await fetch(`http://127.0.0.1:${port}/api/v1/targets`, { headers: auth });
      await honest.arrayBuffer();
      expect(honest.status).toBe(200);
      expect(performance.now() - started).toBeLessThan(2000);
    } finally {
      release();
      await held;
    }
  });
});
