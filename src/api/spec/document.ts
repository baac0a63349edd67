import { z } from 'zod';
import { credentialCreate, groupCreate, groupPatch, groupReplace, nodeUpdate, registration, targetCreate, targetPatch, targetReplace, tokenCreate } from '../../schema/index.js';
import { ROUTES, type Access, type Reply, type RouteDoc } from './routes.js';
import { VERSION } from '../../package/files.js';
import * as answer from './schemas.js';

/**
 * The OpenAPI 3.1 document, generated from the route list and the zod schemas (zod 4's own
 * JSON Schema output, which is the dialect OpenAPI 3.1 uses). Request bodies are described
 * as the server reads them (zod's input side), answers as it writes them (the output side).
 */
const REQUESTS: Record<string, z.ZodType> = {
  GroupCreate: groupCreate,
  GroupReplace: groupReplace,
  GroupPatch: groupPatch,
  TokenCreate: tokenCreate,
  CredentialCreate: credentialCreate,
  TargetCreate: targetCreate,
  TargetReplace: targetReplace,
  TargetPatch: targetPatch,
  RegistrationRequest: registration,
  NodeUpdate: nodeUpdate,
};

const ANSWERS: Record<string, z.ZodType> = {
  Error: answer.errorEnvelope,
  Group: answer.group,
  Target: answer.target,
  BootstrapToken: answer.token,
  BootstrapTokenCreated: answer.tokenCreated,
  Credential: answer.credential,
  CredentialCreated: answer.credentialCreated,
  Registration: answer.registrationAnswer,
  Deleted: answer.deleted,
  HistoryEntry: answer.historyEntry,
  EffectiveCheck: answer.effectiveCheck,
  Check: answer.checkPolicy,
  NodeChecks: answer.nodeChecks,
  Heartbeat: answer.heartbeat,
  RemoteStatus: answer.remoteStatus,
  Health: answer.health,
  ServiceDiscovery: answer.sdEntries,
};

type JsonSchema = Record<string, unknown>;
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });

/** Named schemas as components, each referring to the others by $ref. */
function components(named: Record<string, z.ZodType>, io: 'input' | 'output'): { schemas: Record<string, JsonSchema>; names: Map<z.ZodType, string> } {
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(named)) registry.add(schema, { id });
  const { schemas } = z.toJSONSchema(registry, { io, unrepresentable: 'any', uri: (id) => ref(id).$ref });
  for (const schema of Object.values(schemas)) delete (schema as JsonSchema).$schema;
  return { schemas: schemas as Record<string, JsonSchema>, names: new Map(Object.entries(named).map(([id, schema]) => [schema, id])) };
}

const SECURITY: Record<Access, { security: Array<Record<string, string[]>>; note: string }> = {
  anyone: { security: [], note: 'No credential needed.' },
  anyone_more_to_credential: { security: [{ bearer: [] }, {}], note: 'No credential needed; with one (any role), or on a server run with --open-reads, what names hosts too. A credential that is not valid is refused.' },
  reader: { security: [{ bearer: [] }], note: 'A credential with the reader role (or editor, admin); anyone when the server runs with --open-reads.' },
  editor: { security: [{ bearer: [] }], note: 'A credential with the editor role (or admin).' },
  admin: { security: [{ bearer: [] }], note: 'A credential with the admin role.' },
  node: { security: [{ bearer: [] }], note: 'The node credential issued at registration (aami_node_…).' },
  reader_or_node: { security: [{ bearer: [] }], note: 'A reader (as above), or a node credential, which sees its own target only.' },
  bootstrap: { security: [{ bearer: [] }], note: 'A bootstrap token (aami_bootstrap_…).' },
  sync: { security: [{ bearer: [] }, {}], note: 'An editor credential, or no credential and a push webhook signature.' },
};

const STATUS_TEXT: Record<number, string> = {
  400: 'validation_failed or invalid_json: details name the fields (or query parameters) at fault',
  401: 'unauthorized: no credential, or one that is not valid',
  403: 'forbidden (the credential cannot do this), token_expired, token_revoked, token_exhausted or read_only',
  404: 'not_found, target_not_found or token_not_found',
  409: 'conflict, hostname_taken, group_in_use or remote_conflict',
  413: 'payload_too_large: bodies over 64 KiB',
  422: 'group_not_found or invalid_config',
  429: "rate_limited: too many wrong credentials from this address, a node's update past 30 changes of its own target in its ten-minute window, or history reads at once (each with Retry-After: when to try again); a download: two open on this connection already",
  503: 'not_ready, remote_unavailable, remote_locked, remote_refused, remote_diverged, primary_unavailable, repo_unavailable, storage_unavailable or repo_locked; to a caller without a credential the message says what happened and to try again later (the whole message is for a credential)',
};

const HEADERS: Record<NonNullable<Reply['headers']>[number], { description: string; schema: JsonSchema }> = {
  Location: { description: 'The path of what was created', schema: { type: 'string' } },
  ETag: { description: 'Send it back in If-None-Match: 304 while nothing changed', schema: { type: 'string' } },
  Link: { description: 'With limit: <…>; rel="next", the next page, while there is one', schema: { type: 'string' } },
};

const isWrite = (route: RouteDoc) => !['GET', 'HEAD'].includes(route.method);

function errorStatuses(route: RouteDoc): number[] {
  const statuses = new Set([400, ...(route.errors ?? [])]);
  if (route.access === 'anyone_more_to_credential') [401, 429].forEach((s) => statuses.add(s));
  else if (route.access !== 'anyone') [401, 403, 429].forEach((s) => statuses.add(s));
  if (route.body) statuses.add(413);
  // Any write can meet a remote that kept moving (409 remote_conflict) or a store that cannot take it (503).
  if (isWrite(route)) [409, 503].forEach((s) => statuses.add(s));
  if (route.path === '/api/v1/sd/prometheus') statuses.add(503);
  // A follower forwards a read with a credential it has not pulled yet to its primary: 503 primary_unavailable while that is away.
  if (route.access !== 'anyone' && route.access !== 'anyone_more_to_credential' && route.path.startsWith('/api/')) statuses.add(503);
  return [...statuses].sort();
}

function querySchema(schema: z.ZodType): { schema: JsonSchema; list: boolean } {
  const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
  delete json.$schema;
  return { schema: json, list: json.type === 'array' };
}

function operation(route: RouteDoc, requests: Map<z.ZodType, string>, answers: Map<z.ZodType, string>) {
  const bodySchema = (schema: z.ZodType, names: Map<z.ZodType, string>) => {
    const name = names.get(schema);
    if (!name) throw new Error(`${route.method} ${route.path}: a body schema without a name in the OpenAPI components`);
    return ref(name);
  };
  const parameters = [
    ...[...route.path.matchAll(/:(\w+)/g)].map(([, name]) => ({ name, in: 'path', required: true, schema: { type: 'string' } })),
    ...Object.entries(route.query?.shape ?? {}).map(([name, schema]) => {
      const { schema: json, list } = querySchema(schema);
      return { name, in: 'query', required: false, description: schema.description, schema: json, ...(list ? { style: 'form', explode: true } : {}) };
    }),
  ];
  const responses: Record<string, unknown> = {};
  for (const [status, reply] of Object.entries(route.replies) as Array<[string, Reply]>) {
    const schema = reply.json && (reply.list ? { type: 'array', items: bodySchema(reply.json, answers) } : bodySchema(reply.json, answers));
    responses[status] = {
      description: reply.description,
      ...(reply.headers ? { headers: Object.fromEntries(reply.headers.map((h) => [h, HEADERS[h]])) } : {}),
      ...(schema ? { content: { 'application/json': { schema } } } : reply.media ? { content: { [reply.media]: { schema: { type: reply.media === 'application/json' ? 'object' : 'string' } } } } : {}),
    };
  }
  for (const status of errorStatuses(route)) {
    // HEAD answers carry no body.
    responses[status] ??= { description: STATUS_TEXT[status] ?? 'An error', ...(route.method === 'HEAD' ? {} : { content: { 'application/json': { schema: ref('Error') } } }) };
  }
  const security = SECURITY[route.access];
  return {
    operationId: route.operationId,
    tags: [route.tag],
    summary: route.summary,
    description: [route.description, `Who: ${security.note}`].filter(Boolean).join('\n\n'),
    security: security.security,
    ...(parameters.length ? { parameters } : {}),
    ...(route.body
      ? {
          requestBody: {
            required: true,
            description: 'JSON, whatever the Content-Type says (the guide sends it with a bare curl -d).',
            content: Object.fromEntries(['application/json', ...(route.bodyTypes ?? [])].map((type) => [type, { schema: bodySchema(route.body!, requests) }])),
          },
        }
      : {}),
    responses,
  };
}

export const openApiPath = (path: string) => path.replace(/:(\w+)/g, '{$1}');

let built: Buffer | undefined;

/** The document as JSON bytes, built once. */
export function openApiDocument(): Buffer {
  if (built) return built;
  const requests = components(REQUESTS, 'input');
  const answers = components(ANSWERS, 'output');
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of ROUTES) (paths[openApiPath(route.path)] ??= {})[route.method.toLowerCase()] = operation(route, requests.names, answers.names);
  const document = {
    openapi: '3.1.0',
    info: {
      title: 'AAMI Config API',
      version: VERSION,
      description:
        'Registration server of the AAMI GPU-cluster monitoring stack. Errors are always {"error": {"code", "message", "details"}}. ' +
        'Unknown query parameters answer 400, a known path with another method 405 with Allow, every 201 carries Location.',
    },
    tags: [...new Set(ROUTES.map((r) => r.tag))].map((name) => ({ name })),
    paths,
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'Authorization: Bearer <credential>' } },
      schemas: { ...requests.schemas, ...answers.schemas },
    },
  };
  built = Buffer.from(JSON.stringify(document));
  return built;
}
