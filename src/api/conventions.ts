import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { HttpBindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import type { Context, Hono, MiddlewareHandler } from 'hono';
import { matchedRoutes } from 'hono/route';
import type { z } from 'zod';
import { AamiError } from '../errors.js';
import { describeZodError } from '../schema/describe.js';
import type { BulkReads, Lane } from './bulk.js';
import { cutShort, faultAfterHead, sendError } from './errors.js';
import { routeDoc } from './spec/routes.js';

/**
 * HTTP conventions every route keeps: query parameters checked against the route's
 * declaration, 405 with Allow for a known path and another method, Location on 201, ETag
 * and If-None-Match on cached reads.
 */

/** The route pattern that answers the request (`/api/v1/targets/:id`), or undefined when none does. */
export function routeOf(c: Context): { method: string; path: string } | undefined {
  const handler = matchedRoutes(c).filter((route) => route.method !== 'ALL').at(-1);
  return handler && { method: handler.method, path: handler.path };
}

const QUERY = 'aami.query';

/**
 * Checks the query string against the parameters the route declares (spec/routes.ts): an
 * unknown or repeated parameter, or a bad value, answers 400 naming it. The parsed values
 * are what `query(c)` gives the route. test/openapi.test.ts keeps every API route documented.
 */
export function checkQuery(): MiddlewareHandler {
  return async (c, next) => {
    const route = routeOf(c);
    const doc = route && routeDoc(route.method, route.path);
    // Routes outside the API's document (the console's pages) read their own query.
    if (route && doc) {
      const schema = doc.query;
      const params = new URL(c.req.url).searchParams;
      const known = Object.keys(schema?.shape ?? {});
      const unknown = [...new Set(params.keys())].filter((name) => !known.includes(name));
      if (unknown.length) {
        const takes = known.length ? `; it takes ${known.join(', ')}` : '; it takes none';
        throw new AamiError('validation_failed', `unknown query parameter${unknown.length > 1 ? 's' : ''} ${unknown.map((n) => `"${n}"`).join(', ')} for ${route.method} ${route.path}${takes}`, unknown.map((field) => ({ field, message: 'is not a query parameter of this route' })));
      }
      if (schema) {
        const values: Record<string, string | string[]> = {};
        const repeated: string[] = [];
        for (const name of known) {
          const all = params.getAll(name);
          if (!all.length) continue;
          const list = isList(schema.shape[name]!);
          if (!list && all.length > 1) repeated.push(name);
          values[name] = list ? all : all[0]!;
        }
        if (repeated.length) throw new AamiError('validation_failed', `query parameter ${repeated.join(', ')} given more than once`, repeated.map((field) => ({ field, message: 'may be given once' })));
        const parsed = schema.safeParse(values);
        if (!parsed.success) {
          const details = describeZodError(parsed.error, values);
          throw new AamiError('validation_failed', `the query is invalid: ${details.map((d) => `${d.field} ${d.message}`).join('; ')}`, details);
        }
        c.set(QUERY as never, parsed.data as never);
      }
    }
    await next();
  };
}

function isList(schema: z.ZodType): boolean {
  const def = (schema as { def?: { type?: string; innerType?: z.ZodType } }).def;
  if (def?.type === 'optional' || def?.type === 'nullable') return isList(def.innerType!);
  return def?.type === 'array';
}

/** The route's query parameters, parsed by checkQuery. */
export function query<S extends z.ZodType>(c: Context, _schema: S): z.output<S> {
  return (c.get(QUERY as never) ?? {}) as z.output<S>;
}

/**
 * The app's answer for a request no route takes: 405 with Allow when the path is served by
 * other methods, else 404. Paths are matched against the app's own routes. It answers rather
 * than throws, so the middleware around it sees the answer.
 */
export function notFound(app: Hono) {
  let patterns: Array<{ method: string; pattern: RegExp }> | undefined;
  return (c: Context): Response => {
    patterns ??= app.routes
      .filter((route) => route.method !== 'ALL')
      .map((route) => ({ method: route.method, pattern: new RegExp(`^${route.path.split('/').map((part) => (part.startsWith(':') ? '[^/]+' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))).join('/')}$`) }));
    const allowed = new Set(patterns.filter(({ pattern }) => pattern.test(c.req.path)).map(({ method }) => method));
    if (allowed.size) {
      if (allowed.has('GET')) allowed.add('HEAD');
      const allow = [...allowed].sort().join(', ');
      c.header('Allow', allow);
      return sendError(c, new AamiError('method_not_allowed', `${c.req.method} is not allowed on ${c.req.path}; allowed: ${allow}`, { allowed: [...allowed].sort() }));
    }
    return sendError(c, new AamiError('not_found', `no route for ${c.req.method} ${c.req.path}`));
  };
}

/** 201 with the Location of what was created. */
export function created(c: Context, location: string, body: unknown): Response {
  c.header('Location', location);
  return c.json(body, 201);
}

/**
 * Bytes that stay the same while `etag` does: 304 when the client has them (If-None-Match),
 * else the bytes. `no-cache` makes caches ask every time, so nobody is served a stale list.
 */
export function cachedBody(c: Context, bytes: Bytes, etag: string): Response | Promise<Response> {
  const headers = { ETag: etag, 'Cache-Control': 'no-cache' };
  if (etagMatches(c.req.header('if-none-match'), etag)) return c.body(null, 304, headers);
  return jsonBytes(c, bytes, headers);
}

/**
 * Waits for the turn of a big answer of `bytes` in `lane` (BulkReads; a client that goes
 * away gives it back). A HEAD gets no body: it books nothing and goes at once.
 */
export async function paced(c: Context, bulk: BulkReads, lane: Lane, bytes: number): Promise<void> {
  if (c.req.method !== 'HEAD') await bulk.turn(lane, bytes, c.req.raw.signal);
}

/**
 * A big cached answer (the target list, http_sd): 304 at once when the client has it;
 * otherwise it waits for its turn and sends the bytes current by then.
 */
export async function bulkBody(c: Context, bulk: BulkReads, lane: Lane, current: () => { parts: Bytes; etag: string }): Promise<Response> {
  const { parts, etag } = current();
  if (!etagMatches(c.req.header('if-none-match'), etag)) await paced(c, bulk, lane, lengthOf(parts));
  const now = current();
  return cachedBody(c, now.parts, now.etag);
}

const view = (bytes: Buffer) => new Uint8Array(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength);

/**
 * Parts of a body made in turn as the client takes them, their length known before: a part is
 * good only until the next is asked for (the target list inflates each chunk into one buffer).
 */
export interface Streamed {
  byteLength: number;
  read(): Iterable<Buffer>;
}

/** A big answer's bytes: one buffer, parts in order, or parts made as they are sent. */
export type Bytes = Buffer | Buffer[] | Streamed;

const lengthOf = (bytes: Bytes): number => (Array.isArray(bytes) ? bytes.reduce((sum, part) => sum + part.length, 0) : bytes.byteLength);

/**
 * JSON bytes as the body, never copied (an inventory is megabytes): one buffer as it is,
 * parts written out one after the other. Streamed parts are written to the socket each once
 * the one before is flushed; where the app runs outside node-server (app.request in tests),
 * each is copied into the body. A HEAD makes none.
 */
export function jsonBytes(c: Context, bytes: Bytes, headers: Record<string, string> = {}, stallMs = SEND_STALL_MS): Response | Promise<Response> {
  const type = { 'Content-Type': 'application/json', ...headers };
  if (Buffer.isBuffer(bytes)) return c.body(view(bytes), 200, type);
  const sized = { ...type, 'Content-Length': String(lengthOf(bytes)) };
  if (c.req.method === 'HEAD') return c.body(null, 200, sized);
  const node = c.env as Partial<HttpBindings> | undefined;
  if (!Array.isArray(bytes) && node?.outgoing) return writeStreamed(c, node.outgoing, node.incoming?.socket ?? null, c.body(null, 200, sized), bytes, stallMs);
  const parts = (Array.isArray(bytes) ? bytes : bytes.read())[Symbol.iterator]();
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      const next = parts.next();
      if (next.done) controller.close();
      else controller.enqueue(Array.isArray(bytes) ? view(next.value) : new Uint8Array(next.value));
    },
    cancel: () => void parts.return?.(),
  });
  return c.body(stream, 200, sized);
}

/**
 * How long a slice of a streamed answer may wait for the client to take it: a client that
 * reads nothing holds the buffers its answer is made in (1-4 MB) for as long. A minute, as
 * nginx's send_timeout.
 */
const SEND_STALL_MS = 60_000;

/** Bytes written at a time: the stall time counts from each, so a client that takes ~4 KB a second or more is never cut off. */
const WRITE_SLICE = 256 * 1024;

/**
 * Writes the head of `head` and the parts to node-server's response, a slice at a time, each
 * once the one before is flushed (its write's callback), and tells node-server the answer
 * is sent (so headers middleware sets after the handler do not reach it). An answer queued
 * behind another on its connection (pipelined requests) makes no part before it has the
 * connection: one behind an answer the client does not take holds no buffer. Stops when the
 * client goes away, and ends the connection when a slice is not flushed within `stallMs`
 * (the request's log line says so). A part that throws once the head is out ends the
 * connection short of the length it was told, and the request's log line says 500 and why.
 */
async function writeStreamed(c: Context, outgoing: ServerResponse, socket: Socket | null, head: Response, streamed: Streamed, stallMs: number): Promise<Response> {
  outgoing.writeHead(head.status, Object.fromEntries(head.headers));
  const stall = { ms: stallMs, ended: false };
  let whole = false;
  try {
    whole = await connected(outgoing, socket);
    parts: for (const part of whole ? streamed.read() : []) {
      for (let at = 0; at < part.length; at += WRITE_SLICE) if (!(whole = await flushed(outgoing, socket, part.subarray(at, at + WRITE_SLICE), stall))) break parts;
    }
    if (stall.ended) cutShort(c, `the client took less than ${WRITE_SLICE / 1024} KB in ${stallMs / 1000} s: its connection was ended`);
  } catch (error) {
    outgoing.destroy();
    faultAfterHead(c, error);
    return new Response(null, { status: 500, headers: RESPONSE_ALREADY_SENT.headers });
  }
  // Cut short, it is not finished: ended, it would say it was sent, and hand its dead connection to an answer queued behind it.
  if (whole) outgoing.end();
  else outgoing.destroy();
  return RESPONSE_ALREADY_SENT;
}

/**
 * Waits until the answer has its connection (at once, unless queued behind another on it):
 * false if the connection closed first. Without the request's socket to hear close, it does
 * not wait (what it writes waits in the answer, and the stall time ends it).
 */
function connected(outgoing: ServerResponse, socket: Socket | null): Promise<boolean> {
  return new Promise((resolve) => {
    if (outgoing.destroyed || socket?.destroyed) return resolve(false);
    if (outgoing.socket || !socket) return resolve(true);
    const done = (ok: boolean) => {
      outgoing.off('socket', given);
      outgoing.off('close', closed);
      unheard();
      resolve(ok);
    };
    // Handed a connection that went meanwhile (an answer before it ended all the same): not to be written to.
    const given = (connection: Socket) => done(!connection.destroyed && !outgoing.destroyed);
    const closed = () => done(false);
    outgoing.once('socket', given);
    outgoing.once('close', closed);
    const unheard = onClose(socket, closed);
  });
}

/**
 * Whether `bytes` were written out (false: the connection closed first: a write's callback
 * then never comes). Not written out within `stall.ms`, the connection is ended (and
 * `stall.ended` set: a write the end cuts short may still call back as if it went out).
 * The answer has its connection (connected()): the connection's close is the answer's.
 */
function flushed(outgoing: ServerResponse, socket: Socket | null, bytes: Buffer, stall: { ms: number; ended: boolean }): Promise<boolean> {
  return new Promise((resolve) => {
    if (outgoing.destroyed || socket?.destroyed) return resolve(false);
    const timer = setTimeout(() => {
      stall.ended = true;
      (socket ?? outgoing).destroy();
    }, stall.ms).unref();
    const done = (ok: boolean) => {
      clearTimeout(timer);
      outgoing.off('close', closed);
      resolve(ok && !stall.ended);
    };
    const closed = () => done(false);
    outgoing.once('close', closed);
    outgoing.write(bytes, (error) => done(!error));
  });
}

/** Per connection, what waits for it to close: one listener on the socket, however many answers are queued on it (connected()). */
const closing = new WeakMap<Socket, Set<() => void>>();

/** Calls `heard` when `socket` closes; what it returns stops that. */
function onClose(socket: Socket, heard: () => void): () => void {
  let waiting = closing.get(socket);
  if (!waiting) {
    const all = (waiting = new Set());
    closing.set(socket, all);
    socket.once('close', () => all.forEach((call) => call()));
  }
  waiting.add(heard);
  return () => waiting.delete(heard);
}

function etagMatches(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  return header.split(',').some((tag) => {
    const trimmed = tag.trim();
    return trimmed === '*' || trimmed.replace(/^W\//, '') === etag;
  });
}
