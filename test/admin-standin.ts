import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { onCleanup } from './helpers.js';

/**
 * A stand-in for the parts of the API another engineer is adding now, implementing exactly
 * the agreed contract: credentials (create, list, revoke), targets PATCH as a JSON merge
 * patch (RFC 7396), tokens with `ephemeral` and `ttl_after_last_seen`. Everything that
 * exists in `aami serve` is tested against the real server instead. Every request is kept,
 * and the next one can be held unanswered while a test looks at the client process.
 */
export interface SeenRequest {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

const ROLES = ['admin', 'editor', 'reader'];

/** RFC 7396: null removes, an object merges into an object, anything else replaces. */
export function mergePatch(target: Json, patch: Json): Json {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return patch;
  const result: { [key: string]: Json } = typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key] ?? null, value);
  }
  return result;
}

export async function standInServer(credential: string) {
  const requests: SeenRequest[] = [];
  const credentials = new Map<string, { id: string; name: string; role: string; expires_at: string | null; revoked: boolean; created_at: string }>();
  const targets = new Map<string, Json>([['gpu-node-01', { id: 'gpu-node-01', hostname: 'gpu-node-01', ip_address: '10.0.1.21', primary_group_id: 'ml-training', labels: { rack: 'r1', old: 'x', keep: 'k' } }]]);
  let holdNext: ((request: SeenRequest, release: () => void) => void) | undefined;

  const send = (res: ServerResponse, status: number, body: unknown): void => void res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  const refuse = (res: ServerResponse, status: number, code: string, message: string, details: unknown = []): void => send(res, status, { error: { code, message, details } });

  function answer(request: SeenRequest, res: ServerResponse): void {
    if (request.headers.authorization !== `Bearer ${credential}`) return refuse(res, 401, 'unauthorized', 'this call needs a valid credential');
    let body: Record<string, Json> = {};
    if (request.body) {
      try {
        body = JSON.parse(request.body);
      } catch {
        return refuse(res, 400, 'invalid_json', 'the request body is not JSON');
      }
    }
    const [, id, verb] = /^\/api\/v1\/(?:credentials|targets|bootstrap-tokens)(?:\/([^/]+))?(?:\/(revoke))?$/.exec(request.path) ?? [];
    const route = `${request.method} ${request.path.split('/')[3]}${id ? '/:id' : ''}${verb ? `/${verb}` : ''}`;
    switch (route) {
      case 'POST credentials': {
        const details = [
          ...(typeof body.name === 'string' && body.name ? [] : [{ field: 'name', message: 'is required' }]),
          ...(ROLES.includes(body.role as string) ? [] : [{ field: 'role', message: 'must be admin, editor or reader' }]),
          ...Object.keys(body).filter((k) => !['name', 'role', 'expires_at'].includes(k)).map((field) => ({ field, message: 'is not a known field' })),
        ];
        if (details.length) return refuse(res, 400, 'validation_failed', 'the request body is invalid', details);
        const view = { id: randomBytes(4).toString('hex'), name: body.name as string, role: body.role as string, expires_at: (body.expires_at as string) ?? null, revoked: false, created_at: new Date().toISOString() };
        credentials.set(view.id, view);
        return send(res, 201, { id: view.id, name: view.name, role: view.role, credential: `aami_cred_${randomBytes(24).toString('base64url')}`, expires_at: view.expires_at, created_at: view.created_at });
      }
      case 'GET credentials':
        return send(res, 200, [...credentials.values()]);
      case 'POST credentials/:id/revoke': {
        const found = credentials.get(id!);
        if (!found) return refuse(res, 404, 'not_found', `credential "${id}" does not exist`);
        found.revoked = true;
        return send(res, 200, found);
      }
      case 'PATCH targets/:id': {
        const target = targets.get(id!);
        if (!target) return refuse(res, 404, 'target_not_found', `target "${id}" does not exist`, { target_id: id });
        const patched = mergePatch(target, body);
        targets.set(id!, patched);
        return send(res, 200, patched);
      }
      case 'POST bootstrap-tokens':
        return send(res, 201, { id: 'tok00001', ...body, token: 'aami_bootstrap_tok00001_standinsecret' });
      default:
        return refuse(res, 404, 'not_found', `no route for ${request.method} ${request.path}`);
    }
  }

  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      const request = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body };
      requests.push(request);
      const hold = holdNext;
      holdNext = undefined;
      if (hold) hold(request, () => answer(request, res));
      else answer(request, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    target: (id: string) => targets.get(id),
    /** Resolves when the next request arrives; it is answered only when `release` is called. */
    holdNextRequest: () => new Promise<{ request: SeenRequest; release: () => void }>((resolve) => (holdNext = (request, release) => resolve({ request, release }))),
  };
}
