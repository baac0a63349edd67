import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { openApiDocument, openApiPath } from '../src/api/spec/document.js';
import { ROUTES, type RouteDoc } from '../src/api/spec/routes.js';

/**
 * Checks an answer against the OpenAPI document the server serves: the status must be one
 * the operation documents, a JSON body must match the documented schema (strict objects: an
 * undocumented field fails), every 201 must carry Location. The API tests run every call
 * they make through this, so the document cannot drift from what the server sends.
 */
const document = JSON.parse(openApiDocument().toString('utf8'));
const ajv = new Ajv2020({ strict: false, validateFormats: false, allErrors: true });
const compiled = new Map<unknown, ValidateFunction>();

const patterns = ROUTES.map((route) => ({ route, pattern: new RegExp(`^${route.path.replace(/:\w+/g, '[^/]+')}$`), params: (route.path.match(/:/g) ?? []).length })).sort((a, b) => a.params - b.params);

export function documentedRoute(method: string, path: string): RouteDoc | undefined {
  return patterns.find(({ route, pattern }) => route.method === method && pattern.test(path))?.route;
}

function validator(schema: unknown): ValidateFunction {
  let validate = compiled.get(schema);
  if (!validate) {
    validate = ajv.compile({ ...(schema as object), components: document.components });
    compiled.set(schema, validate);
  }
  return validate;
}

export function checkAnswer(method: string, url: string, answer: { status: number; text: string; headers: Headers }): void {
  const path = new URL(url, 'http://x').pathname;
  const route = documentedRoute(method, path);
  const where = `${method} ${path} → ${answer.status}`;
  let media: Record<string, { schema?: unknown }> | undefined;
  if (route) {
    const operation = document.paths[openApiPath(route.path)][method.toLowerCase()];
    const response = operation.responses[String(answer.status)];
    if (!response) throw new Error(`${where}: the document does not list this status for ${route.operationId} (it lists ${Object.keys(operation.responses).join(', ')})`);
    media = response.content;
  } else if (answer.status === 404 || answer.status === 405) {
    media = { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } };
  } else {
    throw new Error(`${where}: no documented route`);
  }
  if (answer.status === 201 && !answer.headers.get('location')) throw new Error(`${where}: a 201 without Location`);
  const schema = media?.['application/json']?.schema;
  if (!schema || method === 'HEAD' || answer.status === 304) return;
  const validate = validator(schema);
  if (!validate(JSON.parse(answer.text))) {
    throw new Error(`${where}: the answer does not match the document: ${ajv.errorsText(validate.errors, { separator: '; ' })}\n${answer.text.slice(0, 400)}`);
  }
}
