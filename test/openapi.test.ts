import { validate } from '@readme/openapi-parser';
import type { OpenAPIV3_1 } from 'openapi-types';
import { describe, expect, it } from 'vitest';
import { openApiPath } from '../src/api/spec/document.js';
import { ROUTES } from '../src/api/spec/routes.js';
import { apiHarness } from './api-helpers.js';

/**
 * The OpenAPI document: valid by a real OpenAPI 3.1 validator, and the same set of routes as
 * the app serves, both ways. That every answer matches it is checked by every API test
 * (api-helpers.ts runs each answer through openapi-contract.ts).
 */
async function servedDocument() {
  const api = await apiHarness();
  const served = await api.get('/api/v1/openapi.json', { token: null });
  expect(served.status).toBe(200);
  return { api, served, document: served.json as OpenAPIV3_1.Document };
}

const OPERATIONS = ['get', 'head', 'post', 'put', 'patch', 'delete'] as const;

describe('the OpenAPI document', () => {
  it('is valid OpenAPI 3.1 by @readme/openapi-parser', async () => {
    const { document } = await servedDocument();
    expect(document.openapi).toBe('3.1.0');
    // validate() takes the document apart: give it a copy.
    const result = await validate(structuredClone(document) as never);
    expect('errors' in result ? result.errors : []).toEqual([]);
    expect(result.valid).toBe(true);
    // and the validator does refuse a broken one: a parameter in no place, a response without a description
    const broken = structuredClone(document) as any;
    broken.paths['/api/v1/targets'].get.parameters[0].in = 'nowhere';
    delete broken.paths['/api/v1/groups'].get.responses['200'].description;
    expect((await validate(broken)).valid).toBe(false);
  });

  it('documents every route the app serves, and serves every route it documents', async () => {
    const { api, document } = await servedDocument();
    // The console's pages are HTML for people, outside the API's document.
    const served = new Set(api.app.routes.filter((r) => r.method !== 'ALL' && !r.path.startsWith('/console')).map((r) => `${r.method} ${openApiPath(r.path)}`));
    const documented = new Set(Object.entries(document.paths!).flatMap(([path, item]) => OPERATIONS.filter((m) => item![m]).map((m) => `${m.toUpperCase()} ${path}`)));
    expect(served.size).toBeGreaterThan(40);
    // HEAD is answered by the GET route (Hono runs GET and drops the body).
    const missingRoute = [...documented].filter((op) => !served.has(op) && !(op.startsWith('HEAD ') && served.has(op.replace(/^HEAD/, 'GET'))));
    expect([...served].filter((op) => !documented.has(op))).toEqual([]);
    expect(missingRoute).toEqual([]);
    expect(documented.size).toBe(ROUTES.length);
  });

  it('gives every operation its security, its errors as the error envelope, its bodies and its Location', async () => {
    const { document } = await servedDocument();
    expect(document.components!.securitySchemes!.bearer).toEqual(expect.objectContaining({ type: 'http', scheme: 'bearer' }));
    const operations = Object.entries(document.paths!).flatMap(([path, item]) => OPERATIONS.filter((m) => item![m]).map((m) => ({ path, method: m, op: item![m]! })));
    const ids = new Set<string>();
    for (const { path, method, op } of operations) {
      const where = `${method} ${path}`;
      expect(op.operationId, where).toBeTruthy();
      ids.add(op.operationId!);
      expect(op.security, where).toBeDefined();
      const responses = op.responses as Record<string, OpenAPIV3_1.ResponseObject>;
      expect(Object.keys(responses).some((s) => s.startsWith('2')), where).toBe(true);
      expect(responses['400'], `${where}: unknown query parameters answer 400`).toBeDefined();
      for (const [status, response] of Object.entries(responses)) {
        // Health answers 503 with its own body (status "unavailable"), the one exception.
        const errorBody = where === 'get /api/v1/health' && status === '503' ? 'Health' : 'Error';
        if (Number(status) >= 400 && method !== 'head') expect(response.content?.['application/json']?.schema, `${where} ${status}`).toEqual({ $ref: `#/components/schemas/${errorBody}` });
        if (status === '201') expect(response.headers?.Location, `${where}: a 201 documents Location`).toBeDefined();
      }
      if (op.security!.length && op.security![0]!.bearer) expect(responses['401'], where).toBeDefined();
      if (['post', 'put', 'patch'].includes(method) && op.requestBody) {
        const body = op.requestBody as OpenAPIV3_1.RequestBodyObject;
        expect(body.content['application/json']!.schema, where).toMatchObject({ $ref: expect.stringMatching(/^#\/components\/schemas\//) });
        expect(responses['413'], where).toBeDefined();
      }
    }
    expect(ids.size).toBe(operations.length);
    // Bodies are the zod schemas the routes parse with: a strict object, its fields and limits.
    const tokenCreate = document.components!.schemas!.TokenCreate!;
    expect(tokenCreate).toMatchObject({ type: 'object', additionalProperties: false, required: expect.arrayContaining(['name', 'default_group_id', 'max_uses', 'expires_at']) });
    expect((tokenCreate.properties as Record<string, unknown>).max_uses).toMatchObject({ type: 'integer', minimum: 1 });
    const list = document.paths!['/api/v1/targets']!.get!;
    expect((list.parameters as OpenAPIV3_1.ParameterObject[]).map((p) => p.name)).toEqual(['hostname', 'group', 'label', 'limit', 'cursor']);
  });

  it('is served with an ETag, and 304 for If-None-Match', async () => {
    const { api, served } = await servedDocument();
    const etag = served.headers.get('etag')!;
    expect(etag).toMatch(/^"[\w-]+"$/);
    const again = await api.get('/api/v1/openapi.json', { token: null, headers: { 'if-none-match': etag } });
    expect(again.status).toBe(304);
    expect(again.text).toBe('');
  });
});
