import { serve } from '@hono/node-server';
import * as net from 'node:net';
import { describe, expect, it } from 'vitest';
import { ADMIN_TOKEN } from './api-helpers.js';
import { onCleanup, targetYaml } from './helpers.js';
import { holdWriter, pacedApi, watched } from './pacing-helpers.js';

describe('paced big answers over a real socket', () => {
  it('clients that hang up while they wait their turn give it back', async () => {
    const { clock, api } = await pacedApi();
    await api.push({ 'targets/ml-training/h-1.yaml': targetYaml('h-1', '10.7.0.1') });
    const size = (await api.get('/api/v1/targets')).text.length;
    clock.advance(1e6);
    const server = serve({ fetch: api.app.fetch, port: 0, hostname: '127.0.0.1' });
    await new Promise((resolve) => server.once('listening', resolve));
    onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as net.AddressInfo).port;
    const auth = `Bearer ${ADMIN_TOKEN}`;
    // Every ghost's answer closed (the first sent, the rest hung up): the server has seen every hang-up.
    let closed = 0;
    const allClosed = new Promise<void>((resolve) => server.on('request', (_request, response) => response.once('close', () => ++closed === 30 && resolve())));
    const release = holdWriter(api.writer);
    const sockets = await Promise.all(Array.from({ length: 30 }, () => new Promise<net.Socket>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.write(`GET /api/v1/targets HTTP/1.1\r\nHost: x\r\nAuthorization: ${auth}\r\n\r\n`);
        resolve(socket);
      });
      socket.on('error', () => undefined);
    })));
    await clock.sleeping(29); // the first is sending, 29 wait
    for (const socket of sockets) socket.destroy();
    await allClosed;
    expect(clock.waiting()).toBe(0); // every hang-up gave its turn back
    const honest = watched(fetch(`http://127.0.0.1:${port}/api/v1/targets`, { headers: { authorization: auth } }));
    await clock.sleeping(1);
    expect(clock.slept.at(-1)).toBe(size); // the first hang-up's turn only, not 30
    clock.advance(size);
    const answer = await honest.promise;
    expect(answer.status).toBe(200);
    expect(await answer.json()).toHaveLength(1);
    await release();
  });
});
