import { UsageError } from '../command.js';
import { configPath, readConfig } from './config.js';

/** A 2xx answer: its exact text (what --json prints), the parsed JSON and the headers (Link, Location). */
export interface Answer {
  status: number;
  text: string;
  json: unknown;
  headers: Headers;
}

export interface FieldDetail {
  field: string;
  message: string;
}

/** The server answered, but not with success: its error envelope, or what stood in for one. Exit 1. */
export class Refused extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: unknown = [],
  ) {
    super(message);
  }
}

/** No answer at all: connection refused, DNS, TLS, timeout. Exit 3. */
export class Unreachable extends Error {}

const TIMEOUT_MS = 30_000;

/** Header-safe: visible ASCII only, so a pasted newline or space cannot split or corrupt the request. */
const CREDENTIAL = /^[\x21-\x7e]+$/;

/** A client of the HTTP API for one server and credential. */
export class Api {
  constructor(
    readonly server: URL,
    private readonly credential: string | undefined,
  ) {}

  /** A repeated query parameter (`label=a&label=b`) is given as a list. */
  get(path: string, query: Record<string, string | string[] | undefined> = {}): Promise<Answer> {
    const params = new URLSearchParams(Object.entries(query).flatMap(([name, value]) => (value === undefined ? [] : [value].flat().map((v): [string, string] => [name, v]))));
    return this.request('GET', params.size ? `${path}?${params}` : path);
  }

  post(path: string, body?: unknown): Promise<Answer> {
    return this.request('POST', path, body);
  }

  patch(path: string, body: unknown, contentType = 'application/json'): Promise<Answer> {
    return this.request('PATCH', path, body, contentType);
  }

  delete(path: string): Promise<Answer> {
    return this.request('DELETE', path);
  }

  private async request(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<Answer> {
    const url = `${this.server.href.replace(/\/$/, '')}${path}`;
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.credential) headers.authorization = `Bearer ${this.credential}`;
    if (body !== undefined) headers['content-type'] = contentType;
    let response: Response;
    let text: string;
    try {
      // redirect: 'manual': following one would resend the credential to wherever it points.
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        redirect: 'manual',
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
      text = await response.text();
    } catch (error) {
      throw new Unreachable(`cannot reach the server at ${this.server.href}: ${reason(error)}`);
    }
    if (response.status >= 300 && response.status < 400) {
      throw new Refused(response.status, 'redirected', `the server redirects to ${response.headers.get('location') ?? '(no location)'}; use that address as --server`);
    }
    const json = parseJson(text);
    if (!response.ok) throw refusal(response.status, json);
    if (json === undefined) throw new Refused(response.status, 'not_json', `the answer to ${method} ${path} is not JSON: is ${this.server.href} the aami API?`);
    return { status: response.status, text, json, headers: response.headers };
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function refusal(status: number, json: unknown): Refused {
  const error = (json as { error?: { code?: unknown; message?: unknown; details?: unknown } } | undefined)?.error;
  if (error && typeof error.code === 'string' && typeof error.message === 'string') return new Refused(status, error.code, error.message, error.details);
  return new Refused(status, `http_${status}`, `the server answered HTTP ${status} without an aami error: is this the aami API?`);
}

function reason(error: unknown): string {
  if (error instanceof Error && error.name === 'TimeoutError') return `no answer within ${TIMEOUT_MS / 1000} s`;
  // undici hides the useful part (ECONNREFUSED, ENOTFOUND, a TLS error) in `cause`
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
  return cause instanceof Error ? cause.message : String(cause);
}

/** One URL path segment: `..` and `.` would be resolved away by the URL parser, anything else is escaped. */
export function segment(id: string, what: string): string {
  if (id === '' || id === '.' || id === '..') throw new UsageError(`"${id}" is not a valid ${what}`);
  return encodeURIComponent(id);
}

/**
 * Server: --server, then AAMI_SERVER, then the config file. Credential: AAMI_CREDENTIAL,
 * then the config file; never a flag, which anyone on the host could read in `ps`. The
 * saved credential goes only to the saved server: `--server` pointing elsewhere must not
 * carry it there. The config file is read only when something is still missing.
 */
export function connect(serverFlag: string | undefined, env: NodeJS.ProcessEnv): Api {
  const given = serverFlag || env.AAMI_SERVER || undefined;
  let server = given === undefined ? undefined : serverUrl(given);
  let credential = env.AAMI_CREDENTIAL || undefined;
  if (!server || !credential) {
    const saved = readConfig(configPath(env));
    const savedServer = saved?.server === undefined ? undefined : serverUrl(saved.server);
    server ??= savedServer;
    if (savedServer?.href === server?.href) credential ??= saved?.credential;
  }
  if (!server) throw new UsageError(`no server: give --server URL, set AAMI_SERVER, or run 'aami login'`);
  return new Api(server, checkCredential(credential));
}

export function serverUrl(value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new UsageError(`the server "${value}" is not a URL such as http://config-server:8080`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`the server must be an http:// or https:// URL`);
  // Printed in messages and kept in the config file: a password in it would leak both ways.
  if (url.username || url.password) throw new UsageError('the server URL must not carry a user name or password; the credential goes in AAMI_CREDENTIAL');
  if (url.search || url.hash) throw new UsageError('the server URL must not have a query or fragment');
  return url;
}

export function checkCredential(credential: string | undefined): string | undefined {
  if (credential !== undefined && !CREDENTIAL.test(credential)) throw new UsageError('the credential has spaces or characters a credential cannot have (check AAMI_CREDENTIAL or the config file)');
  return credential;
}
