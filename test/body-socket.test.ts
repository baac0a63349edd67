import { serve } from '@hono/node-server';
import { createHmac } from 'node:crypto';
import * as net from 'node:net';
import { describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, apiHarness } from './api-helpers.js';
import { onCleanup } from './helpers.js';

/**
 * Over a real socket the API reads request bodies straight from Node's IncomingMessage
 * (src/api/body.ts); app.request() in the other tests takes hono's path. These hold the two
 * to the same answers: the limit, chunked bodies, a BOM, a client gone mid-body.
 */
describe('request bodies over a real socket', () => {
  async function listening(options: Parameters<typeof apiHarness>[0] = {}) {
    const api = await apiHarness(options);
    const server = serve({ fetch: api.app.fetch, port: 0, hostname: '127.0.0.1' });
    await new Promise((resolve) => server.once('listening', resolve));
    onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as net.AddressInfo).port;
    /** One raw HTTP/1.1 exchange on its own connection; the whole answer, read to the end. */
    const exchange = (head: string, body: Buffer | string = '') =>
      new Promise<{ status: number; json: any }>((resolve, reject) => {
        const chunks: Buffer[] = [];
        const socket = net.connect(port, '127.0.0.1', () => socket.write(Buffer.concat([Buffer.from(head), Buffer.from(body)])));
        socket.on('data', (chunk) => chunks.push(chunk));
        socket.on('error', reject);
        socket.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const [status, rest] = [Number(text.split(' ')[1]), text.slice(text.indexOf('\r\n\r\n') + 4)];
          resolve({ status, json: JSON.parse(rest.includes('{') ? rest.slice(rest.indexOf('{'), rest.lastIndexOf('}') + 1) : 'null') });
        });
      });
    const post = (path: string, body: Buffer | string, headers: string[] = []) => {
      const declared = headers.some((h) => /^transfer-encoding/i.test(h)) ? [] : [`Content-Length: ${Buffer.byteLength(body)}`];
      return exchange([`POST ${path} HTTP/1.1`, 'Host: x', 'Connection: close', `Authorization: Bearer ${ADMIN_TOKEN}`, 'Content-Type: application/json', ...declared, ...headers, '', ''].join('\r\n'), body);
    };
    return { api, port, post, exchange };
  }

  let hosts = 0;
  const target = (hostname: string, extra: Record<string, unknown> = {}) => JSON.stringify({ hostname, ip_address: `10.0.0.${++hosts}`, primary_group_id: 'ml-training', ...extra });
  const chunked = (text: string, size = 1000) => {
    const parts: string[] = [];
    for (let at = 0; at < text.length; at += size) parts.push(`${Buffer.byteLength(text.slice(at, at + size)).toString(16)}\r\n${text.slice(at, at + size)}\r\n`);
    return `${parts.join('')}0\r\n\r\n`;
  };

  it('takes a body by Content-Length and by chunks, and one with a BOM, as Request.text() would', async () => {
    const { api, post } = await listening();
    expect((await post('/api/v1/targets', target('by-length'))).status).toBe(201);
    const labels = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`note_${i}`, `${i}`.repeat(1000)]));
    expect((await post('/api/v1/targets', chunked(target('by-chunks', { labels })), ['Transfer-Encoding: chunked'])).status).toBe(201);
    expect((await post('/api/v1/targets', `\uFEFF${target('with-bom')}`)).status).toBe(201);
    const listed = (await api.get('/api/v1/targets')).json.map((t: { hostname: string }) => t.hostname);
    expect(listed).toEqual(expect.arrayContaining(['by-length', 'by-chunks', 'with-bom']));
    expect((await api.get('/api/v1/targets/by-chunks')).json.labels).toEqual(labels);
  });

  it('refuses a body over the limit with 413, by its Content-Length or as its chunks pass it, and commits nothing', async () => {
    const { api, post } = await listening();
    const before = api.commits();
    const big = target('too-big', { labels: { big: 'x'.repeat(70_000) } });
    const byLength = await post('/api/v1/targets', big);
    expect(byLength.status).toBe(413);
    expect(byLength.json.error.code).toBe('payload_too_large');
    const byChunks = await post('/api/v1/targets', chunked(big, 8192), ['Transfer-Encoding: chunked']);
    expect(byChunks.status).toBe(413);
    expect(byChunks.json.error.code).toBe('payload_too_large');
    // Exactly at the limit is read (and refused for what it says, not for its size).
    const atLimit = JSON.stringify({ hostname: 'at-limit', ip_address: '10.0.0.5', primary_group_id: 'ml-training', labels: { pad: '' } });
    const padded = atLimit.replace('"pad":""', `"pad":"${'y'.repeat(64 * 1024 - Buffer.byteLength(atLimit))}"`);
    expect(Buffer.byteLength(padded)).toBe(64 * 1024);
    expect((await post('/api/v1/targets', padded)).status).not.toBe(413);
    expect(api.commits()).toBe(before);
  });

  it('answers a malformed or empty body with 400, and keeps serving after a client hangs up mid-body', async () => {
    const { api, port, post } = await listening();
    expect((await post('/api/v1/targets', '{"hostname": ')).json.error.code).toBe('invalid_json');
    expect((await post('/api/v1/targets', '')).json.error.code).toBe('invalid_json');
    const before = api.commits();
    // Says 5000 bytes, sends 20 and hangs up.
    await new Promise<void>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.write(`POST /api/v1/targets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ADMIN_TOKEN}\r\nContent-Length: 5000\r\n\r\n{"hostname": "gone",`, () => {
          socket.destroy();
          resolve();
        });
      });
    });
    expect((await post('/api/v1/targets', target('after-hang-up'))).status).toBe(201);
    expect(api.commits()).toBe(before + 1);
    expect((await api.get('/api/v1/targets/gone')).status).toBe(404);
  });

  it("checks a webhook signature over the body's bytes as sent, a BOM or bytes that are not UTF-8 included", async () => {
    const secret = 'a-webhook-secret-of-length-32-xx';
    const { exchange } = await listening({ remote: { webhookSecret: secret } });
    const json = Buffer.from('{"ref":"refs/heads/main"}');
    for (const body of [json, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), json]), Buffer.from([0x7b, 0x22, 0xff, 0xc3, 0x22, 0x7d])]) {
      const signature = `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
      const head = ['POST /api/v1/sync HTTP/1.1', 'Host: x', 'Connection: close', `X-Hub-Signature-256: ${signature}`, `Content-Length: ${body.length}`, '', ''].join('\r\n');
      expect((await exchange(head, body)).status, body.toString('hex')).toBe(200);
    }
  });
});
