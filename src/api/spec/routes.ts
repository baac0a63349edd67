import type { z } from 'zod';
import { credentialCreate, groupCreate, groupPatch, groupReplace, nodeUpdate, registration, targetCreate, targetPatch, targetReplace, tokenCreate } from '../../schema/index.js';
import { groupsQuery, sdQuery, targetsQuery, type QuerySchema } from './query.js';
import * as answer from './schemas.js';

/**
 * Every route the API serves, with who may call it, what it takes and what it answers: the
 * source of the OpenAPI document (GET /api/v1/openapi.json) and of the query parameters the
 * server accepts. test/openapi.test.ts checks that this list and the app's routes are the
 * same, both ways.
 */
export type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/**
 * Who may call: `reader`, `editor`, `admin` are credential roles (each includes the ones
 * after it; reads are open to anyone with --open-reads); `anyone_more_to_credential`: anyone,
 * and a credential sees what names hosts too (health, /metrics); `node` is a node credential,
 * `bootstrap` a bootstrap token, `sync` an editor or a signed push webhook.
 */
export type Access = 'anyone' | 'anyone_more_to_credential' | 'reader' | 'editor' | 'admin' | 'node' | 'reader_or_node' | 'bootstrap' | 'sync';

export interface Reply {
  description: string;
  /** A JSON body of this schema (a list of it with `list`). */
  json?: z.ZodType;
  list?: boolean;
  /** A body of another media type. */
  media?: string;
  /** Response headers it sets, by name. */
  headers?: Array<'Location' | 'ETag' | 'Link'>;
}

export interface RouteDoc {
  method: Method;
  /** In Hono's syntax: /api/v1/targets/:id */
  path: string;
  operationId: string;
  tag: string;
  summary: string;
  description?: string;
  access: Access;
  query?: QuerySchema;
  body?: z.ZodType;
  /** Media types of the body besides application/json (any is read as JSON). */
  bodyTypes?: string[];
  replies: Partial<Record<number, Reply>>;
  /** Error statuses besides the ones every route of its kind can answer (400; 401, 403, 429 with a credential; 413 with a body; 409, 503 for writes). */
  errors?: number[];
}

const history = (what: string): Reply => ({ description: `The commits that changed the ${what}, newest first`, json: answer.historyEntry, list: true });
const created = (description: string, json: z.ZodType): Reply => ({ description, json, headers: ['Location'] });
const SHELL = 'text/x-shellscript';

export const ROUTES: RouteDoc[] = [
  // System
  {
    method: 'GET',
    path: '/api/v1/health',
    operationId: 'getHealth',
    tag: 'system',
    summary: 'Health: healthy, degraded (with the reason) or unavailable',
    description: 'For a caller without a credential (unless the server runs with --open-reads) the lists that name hosts (invalid files, stale nodes) are empty and messages only say that there is one; a wrong credential is refused.',
    access: 'anyone_more_to_credential',
    replies: { 200: { description: 'Serving', json: answer.health }, 503: { description: 'Starting, stopping, or not compiled yet', json: answer.health } },
  },
  { method: 'HEAD', path: '/api/v1/health', operationId: 'headHealth', tag: 'system', summary: 'Health as a status code only', access: 'anyone', replies: { 200: { description: 'Serving' }, 503: { description: 'Not serving' } } },
  {
    method: 'GET',
    path: '/metrics',
    operationId: 'getMetrics',
    tag: 'system',
    summary: "The server's metrics in the Prometheus text format",
    description: 'aami_* (registrations, commits, compiles, invalid files, queue, targets, node heartbeats, HTTP requests by route and status), process_* and nodejs_*, aami_build_info. The series that name hosts (node heartbeats) only for a credential, or with --open-reads; a wrong credential is refused.',
    access: 'anyone_more_to_credential',
    replies: { 200: { description: 'Prometheus text exposition format 0.0.4', media: 'text/plain' } },
  },
  {
    method: 'GET',
    path: '/api/v1/openapi.json',
    operationId: 'getOpenApi',
    tag: 'system',
    summary: 'This document',
    access: 'anyone',
    replies: { 200: { description: 'OpenAPI 3.1', media: 'application/json', headers: ['ETag'] }, 304: { description: 'Unchanged since the ETag in If-None-Match' } },
  },
  {
    method: 'GET',
    path: '/api/v1/sd/prometheus',
    operationId: 'getHttpSd',
    tag: 'system',
    summary: 'Prometheus http_sd: the same entries as the file_sd files',
    description: 'Served from the bytes the SD compiler last wrote, with an ETag; If-None-Match answers 304. 503, never 200 [], before the first compile. While writes are queued, http_sd answers go out one after the other at 5 MB/s, never behind target list reads.',
    access: 'reader',
    query: sdQuery,
    replies: { 200: { description: 'Scrape targets with their labels', json: answer.sdEntries, headers: ['ETag'] }, 304: { description: 'Unchanged since the ETag in If-None-Match' } },
    errors: [404],
  },

  // Groups
  { method: 'GET', path: '/api/v1/groups', operationId: 'listGroups', tag: 'groups', summary: 'Every group, by id', access: 'reader', query: groupsQuery, replies: { 200: { description: 'Groups', json: answer.group, list: true } } },
  { method: 'POST', path: '/api/v1/groups', operationId: 'createGroup', tag: 'groups', summary: 'Create a group (the id defaults to the name as a slug)', access: 'editor', body: groupCreate, replies: { 201: created('Created', answer.group) }, errors: [409, 422] },
  { method: 'GET', path: '/api/v1/groups/:id', operationId: 'getGroup', tag: 'groups', summary: 'One group', access: 'reader', replies: { 200: { description: 'The group', json: answer.group } }, errors: [404] },
  { method: 'PUT', path: '/api/v1/groups/:id', operationId: 'replaceGroup', tag: 'groups', summary: 'Replace a group', access: 'editor', body: groupReplace, replies: { 200: { description: 'The group', json: answer.group } }, errors: [404, 409, 422] },
  { method: 'PATCH', path: '/api/v1/groups/:id', operationId: 'patchGroup', tag: 'groups', summary: 'Change some fields of a group', access: 'editor', body: groupPatch, replies: { 200: { description: 'The group', json: answer.group } }, errors: [404, 409, 422] },
  {
    method: 'DELETE',
    path: '/api/v1/groups/:id',
    operationId: 'deleteGroup',
    tag: 'groups',
    summary: 'Delete a group nothing uses',
    description: '409 group_in_use names the targets, child groups and tokens that hold it.',
    access: 'editor',
    replies: { 200: { description: 'Deleted', json: answer.deleted } },
    errors: [404, 409],
  },
  { method: 'GET', path: '/api/v1/groups/:id/history', operationId: 'groupHistory', tag: 'groups', summary: "The group file's commits", access: 'reader', replies: { 200: history('group') }, errors: [404] },

  // Bootstrap tokens
  { method: 'GET', path: '/api/v1/bootstrap-tokens', operationId: 'listTokens', tag: 'bootstrap-tokens', summary: 'Every bootstrap token (never a secret)', access: 'editor', replies: { 200: { description: 'Tokens', json: answer.token, list: true } } },
  {
    method: 'POST',
    path: '/api/v1/bootstrap-tokens',
    operationId: 'createToken',
    tag: 'bootstrap-tokens',
    summary: 'Create a bootstrap token; its secret is in the answer once',
    access: 'editor',
    body: tokenCreate,
    replies: { 201: created('Created; only the hash of `token` is kept', answer.tokenCreated) },
    errors: [422],
  },
  { method: 'GET', path: '/api/v1/bootstrap-tokens/:id', operationId: 'getToken', tag: 'bootstrap-tokens', summary: 'One token: uses, remaining, expiry, state', access: 'editor', replies: { 200: { description: 'The token', json: answer.token } }, errors: [404] },
  { method: 'DELETE', path: '/api/v1/bootstrap-tokens/:id', operationId: 'deleteToken', tag: 'bootstrap-tokens', summary: 'Revoke a token (the same as POST …/revoke)', access: 'editor', replies: { 200: { description: 'The revoked token', json: answer.token } }, errors: [404] },
  { method: 'POST', path: '/api/v1/bootstrap-tokens/:id/revoke', operationId: 'revokeToken', tag: 'bootstrap-tokens', summary: 'Revoke a token: no node can enrol with it any more', access: 'editor', replies: { 200: { description: 'The revoked token', json: answer.token } }, errors: [404] },
  { method: 'GET', path: '/api/v1/bootstrap-tokens/:id/history', operationId: 'tokenHistory', tag: 'bootstrap-tokens', summary: "The token file's commits", access: 'editor', replies: { 200: history('token') }, errors: [404] },

  // Credentials
  { method: 'GET', path: '/api/v1/credentials', operationId: 'listCredentials', tag: 'credentials', summary: 'Every named API credential (never a secret)', access: 'admin', replies: { 200: { description: 'Credentials', json: answer.credential, list: true } } },
  { method: 'POST', path: '/api/v1/credentials', operationId: 'createCredential', tag: 'credentials', summary: 'Create a named credential with a role; its secret is in the answer once', access: 'admin', body: credentialCreate, replies: { 201: created('Created; only the hash of `credential` is kept', answer.credentialCreated) } },
  { method: 'GET', path: '/api/v1/credentials/:id', operationId: 'getCredential', tag: 'credentials', summary: 'One credential', access: 'admin', replies: { 200: { description: 'The credential', json: answer.credential } }, errors: [404] },
  { method: 'POST', path: '/api/v1/credentials/:id/revoke', operationId: 'revokeCredential', tag: 'credentials', summary: 'Revoke a credential', access: 'admin', replies: { 200: { description: 'The revoked credential', json: answer.credential } }, errors: [404] },
  { method: 'GET', path: '/api/v1/credentials/:id/history', operationId: 'credentialHistory', tag: 'credentials', summary: "The credential file's commits", access: 'admin', replies: { 200: history('credential') }, errors: [404] },

  // Targets
  {
    method: 'GET',
    path: '/api/v1/targets',
    operationId: 'listTargets',
    tag: 'targets',
    summary: 'Targets by host name: a JSON array, filtered and paged on request',
    description:
      'Without parameters: every target, served from bytes rendered once per catalog change and heartbeat, with an ETag (If-None-Match answers 304). ' +
      'With limit (and cursor from the Link header) the array holds one page; Link: <…>; rel="next" points to the next page while there is one. ' +
      'A node credential sees its own target only. While writes are queued, lists and pages go out one after the other at 5 MB/s (http_sd has 5 MB/s of its own).',
    access: 'reader_or_node',
    query: targetsQuery,
    replies: { 200: { description: 'Targets (one page with limit)', json: answer.target, list: true, headers: ['ETag', 'Link'] }, 304: { description: 'Unchanged since the ETag in If-None-Match' } },
  },
  {
    method: 'POST',
    path: '/api/v1/targets',
    operationId: 'createTarget',
    tag: 'targets',
    summary: 'Register a target by hand',
    access: 'editor',
    body: targetCreate,
    replies: { 201: created('Created', answer.target) },
    errors: [409, 422],
  },
  {
    method: 'GET',
    path: '/api/v1/targets/:id',
    operationId: 'getTarget',
    tag: 'targets',
    summary: 'One target with its effective labels and last heartbeat',
    access: 'reader_or_node',
    replies: { 200: { description: 'The target', json: answer.target } },
    errors: [404],
  },
  {
    method: 'PUT',
    path: '/api/v1/targets/:id',
    operationId: 'replaceTarget',
    tag: 'targets',
    summary: "Replace what an admin owns of a target (the node's and its token's labels are kept)",
    access: 'editor',
    body: targetReplace,
    replies: { 200: { description: 'The target', json: answer.target } },
    errors: [404, 409, 422],
  },
  {
    method: 'PATCH',
    path: '/api/v1/targets/:id',
    operationId: 'patchTarget',
    tag: 'targets',
    summary: 'JSON merge patch (RFC 7396): a label set to null is removed, labels not named are kept',
    access: 'editor',
    body: targetPatch,
    bodyTypes: ['application/merge-patch+json'],
    replies: { 200: { description: 'The target', json: answer.target } },
    errors: [404, 409, 422],
  },
  { method: 'DELETE', path: '/api/v1/targets/:id', operationId: 'deleteTarget', tag: 'targets', summary: 'Remove a target', access: 'editor', replies: { 200: { description: 'Deleted', json: answer.deleted } }, errors: [404] },
  { method: 'GET', path: '/api/v1/targets/:id/history', operationId: 'targetHistory', tag: 'targets', summary: "The target file's commits", access: 'reader', replies: { 200: history('target') }, errors: [404] },
  { method: 'GET', path: '/api/v1/targets/:id/checks', operationId: 'targetChecks', tag: 'checks', summary: 'The checks that apply to a target, with their settings', access: 'reader', replies: { 200: { description: 'Checks', json: answer.effectiveCheck, list: true } }, errors: [404] },

  // Nodes
  {
    method: 'POST',
    path: '/api/v1/bootstrap/register',
    operationId: 'register',
    tag: 'nodes',
    summary: 'A node enrols itself with a bootstrap token',
    description: '201 for a new host (with a node credential, shown once), 200 when an existing registration is updated or unchanged.',
    access: 'bootstrap',
    body: registration,
    replies: { 201: created('Enrolled; Location is the target', answer.registrationAnswer), 200: { description: 'Updated or unchanged', json: answer.registrationAnswer } },
    errors: [409, 422],
  },
  { method: 'GET', path: '/api/v1/nodes/self', operationId: 'getSelf', tag: 'nodes', summary: "The calling node's own target", access: 'node', replies: { 200: { description: 'The target', json: answer.target } }, errors: [404] },
  { method: 'PUT', path: '/api/v1/nodes/self', operationId: 'updateSelf', tag: 'nodes', summary: 'A node updates what it owns of its target', access: 'node', body: nodeUpdate, replies: { 200: { description: 'Updated or unchanged', json: answer.registrationAnswer } }, errors: [404, 409] },
  { method: 'DELETE', path: '/api/v1/nodes/self', operationId: 'deregisterSelf', tag: 'nodes', summary: 'A node removes its own target', access: 'node', replies: { 200: { description: 'Deleted', json: answer.deleted } }, errors: [404] },
  { method: 'POST', path: '/api/v1/nodes/heartbeat', operationId: 'heartbeat', tag: 'nodes', summary: 'Record the node\'s last_seen (not a commit)', access: 'node', replies: { 200: { description: 'Recorded', json: answer.heartbeat } } },
  { method: 'GET', path: '/api/v1/checks/node', operationId: 'nodeChecks', tag: 'checks', summary: "The node's effective checks", access: 'node', replies: { 200: { description: 'Checks', json: answer.nodeChecks } }, errors: [404] },
  { method: 'GET', path: '/api/v1/checks/node/:name/script', operationId: 'nodeCheckScript', tag: 'checks', summary: "A check's script, for a node it applies to", access: 'node', replies: { 200: { description: 'The script', media: SHELL } }, errors: [404] },
  { method: 'GET', path: '/api/v1/checks', operationId: 'listChecks', tag: 'checks', summary: 'Every check with its policy', access: 'reader', replies: { 200: { description: 'Checks', json: answer.checkPolicy, list: true } } },

  // Scripts
  { method: 'GET', path: '/bootstrap.sh', operationId: 'getBootstrapScript', tag: 'scripts', summary: 'The node bootstrap script', access: 'anyone', replies: { 200: { description: 'bootstrap.sh', media: SHELL } } },
  { method: 'GET', path: '/bootstrap.sh.sha256', operationId: 'getBootstrapScriptHash', tag: 'scripts', summary: "bootstrap.sh's hash, as sha256sum -c reads it", access: 'anyone', replies: { 200: { description: 'The sha256 line', media: SHELL } } },
  {
    method: 'GET',
    path: '/scripts/:file',
    operationId: 'getScript',
    tag: 'scripts',
    summary: 'A node script, or NAME.sha256: its hash as sha256sum -c reads it',
    access: 'anyone',
    replies: { 200: { description: 'The script, or its sha256 line', media: SHELL } },
    errors: [404],
  },
  {
    method: 'GET',
    path: '/downloads/:file',
    operationId: 'getDownload',
    tag: 'scripts',
    summary: 'A file from --downloads-dir (a node_exporter tarball for air-gapped nodes), or NAME.sha256',
    access: 'anyone',
    replies: { 200: { description: 'The file', media: 'application/octet-stream' } },
    errors: [404, 429],
  },

  // Git remote
  {
    method: 'POST',
    path: '/api/v1/sync',
    operationId: 'sync',
    tag: 'system',
    summary: 'Pull from the Git remote now (an editor, or a push webhook signed with AAMI_WEBHOOK_SECRET)',
    description: 'Webhooks: GitHub X-Hub-Signature-256, Gitea X-Gitea-Signature, GitLab X-Gitlab-Token. 404 when the server follows no remote.',
    access: 'sync',
    replies: { 200: { description: 'The remote status after the pull', json: answer.remoteStatus } },
    errors: [404],
  },
];

/** `GET /api/v1/targets/:id` → its entry. HEAD is answered by a GET route. */
const BY_KEY = new Map(ROUTES.map((route) => [`${route.method} ${route.path}`, route]));
export const routeDoc = (method: string, path: string) => BY_KEY.get(`${method} ${path}`);
