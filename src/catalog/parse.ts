import jsYaml from 'js-yaml';
import type { z } from 'zod';
import { createHash } from 'node:crypto';
import {
  checkFile,
  credentialFile,
  describeZodError,
  groupFile,
  hostname,
  protoKeys,
  settingsFile,
  slug,
  targetFile,
  tokenFile,
  type Group,
  type Settings,
  type Target,
  type Token,
  type CheckPolicy,
  type CheckScript,
  type Credential,
} from '../schema/index.js';
import { DUMP_OPTIONS, emitFast } from './emit.js';
import { readFast } from './read.js';
import type { Problem } from './problem.js';

export type Entity =
  | { kind: 'settings'; id: 'aami'; value: Settings }
  | { kind: 'group'; id: string; value: Group }
  | { kind: 'target'; id: string; value: Target }
  | { kind: 'token'; id: string; value: Token }
  | { kind: 'credential'; id: string; value: Credential }
  | { kind: 'check'; id: string; value: CheckPolicy }
  | { kind: 'script'; id: string; value: CheckScript };

export const SETTINGS_PATH = 'aami.yaml';
export const groupPath = (id: string) => `groups/${id}.yaml`;
export const targetPath = (target: Pick<Target, 'primary_group' | 'hostname'>) =>
  `targets/${target.primary_group}/${target.hostname}.yaml`;
/** Every path the target's file had: it moves when its primary group changes (a git pathspec). */
export const targetHistoryPathspec = (hostname: string) => `:(glob)targets/*/${hostname}.yaml`;
export const tokenPath = (id: string) => `tokens/${id}.yaml`;
export const credentialPath = (id: string) => `credentials/${id}.yaml`;
export const CHECK_FILE = 'check.yaml';

const ENTITY_DIRS = ['groups/', 'targets/', 'tokens/', 'credentials/'];
const CHECK_PATH = /^checks\/([^/]+)\/([^/]+)$/;

/** Whether the path is a config file the catalog reads (others, like README.md, are left alone). */
export function isConfigPath(path: string): boolean {
  if (path === SETTINGS_PATH || CHECK_PATH.test(path)) return true;
  return ENTITY_DIRS.some((dir) => path.startsWith(dir)) && /\.ya?ml$/.test(path);
}

type Shape =
  | { kind: 'settings' }
  | { kind: 'group' | 'token' | 'credential'; id: string }
  | { kind: 'target'; id: string; group: string };

const LAYOUT = 'expected aami.yaml, groups/<id>.yaml, targets/<primary_group>/<hostname>.yaml, tokens/<id>.yaml or credentials/<id>.yaml';

function shapeOf(path: string): Shape | string {
  if (path === SETTINGS_PATH) return { kind: 'settings' };
  if (path.endsWith('.yml')) return 'use the .yaml extension';
  const parts = path.slice(0, -'.yaml'.length).split('/');
  const [dir, a, b] = parts;
  if (dir === 'groups' && parts.length === 2 && slug.safeParse(a).success) return { kind: 'group', id: a! };
  if (dir === 'tokens' && parts.length === 2 && slug.safeParse(a).success) return { kind: 'token', id: a! };
  if (dir === 'credentials' && parts.length === 2 && slug.safeParse(a).success) return { kind: 'credential', id: a! };
  if (dir === 'targets' && parts.length === 3 && slug.safeParse(a).success && hostname.safeParse(b).success) {
    return { kind: 'target', id: b!, group: a! };
  }
  if (dir === 'targets' && parts.length === 2) return 'a target lives at targets/<primary_group>/<hostname>.yaml';
  return `the file name is not a valid id (${LAYOUT})`;
}

export type ParseResult = { entity: Entity; problems: [] } | { entity?: undefined; problems: Problem[] };

/** Largest config file or check script read: anything bigger is refused unread (a pull request is untrusted input). */
export const MAX_FILE_BYTES = 1 << 20;

/** A file the server refuses to read at all: a symlink, a submodule, a file too big. */
export function refusedFile(path: string, reason: string): ParseResult {
  return { problems: [{ file: path, field: '', message: reason }] };
}

/** Parse and validate one file on its own; references to other files are checked by buildCatalog. */
export function parseFile(path: string, text: string): ParseResult {
  const fail = (field: string, message: string): ParseResult => ({ problems: [{ file: path, field, message }] });
  if (text.length > MAX_FILE_BYTES || Buffer.byteLength(text) > MAX_FILE_BYTES) return fail('', `the file is larger than ${MAX_FILE_BYTES >> 20} MiB: refused unread`);
  const check = CHECK_PATH.exec(path);
  if (check) {
    const [, name, file] = check as unknown as [string, string, string];
    if (!slug.safeParse(name).success) return fail('', `the check directory is not a valid id (checks/<name>/${CHECK_FILE})`);
    if (file !== CHECK_FILE) {
      const sha256 = createHash('sha256').update(text).digest('hex');
      return { entity: { kind: 'script', id: `${name}/${file}`, value: { check: name, file, text, sha256 } }, problems: [] };
    }
    return parseYaml(path, text, fail, (data) => {
      const result = checkFile.safeParse(data);
      if (!result.success) return { problems: describeZodError(result.error, data).map((e) => ({ file: path, ...e })) };
      return { entity: { kind: 'check', id: name, value: result.data }, problems: [] };
    });
  }
  const shape = shapeOf(path);
  if (typeof shape === 'string') return fail('', shape);

  return parseYaml(path, text, fail, (data, tree) => parseEntity(path, shape, data, tree));
}

/**
 * The YAML text of a file the server writes: js-yaml's dump, whose default schema quotes
 * whatever another reader could take for a number, a boolean or a date ('8',
 * '2026-11-26T00:00:00Z'), through its fast emitter where it can (emit.ts).
 *
 * A write parses every file it renders (writer.ts: the same checks as a pull request's), and
 * js-yaml's load of its own dump gives back the data it was given: so the data is kept, as
 * JSON, for the next parse of exactly this text, which skips the YAML reader (~35 µs a file,
 * ~5 % of a registration's CPU in a storm). test/parse.test.ts checks that both give the same
 * on data of every shape the files hold. Only what the fast emitter wrote is kept: strings,
 * safe integers, booleans and nulls, which JSON carries exactly (not NaN or -0). Only the
 * last few texts are kept, and one is let go once parsed.
 */
export function dumpYaml(data: Record<string, unknown>): string {
  const text = emitFast(data);
  if (text === undefined) return jsYaml.dump(data, DUMP_OPTIONS);
  dumped.set(text, JSON.stringify(data));
  if (dumped.size > 16) dumped.delete(dumped.keys().next().value!);
  return text;
}
const dumped = new Map<string, string>();

/**
 * The file's data, checked by `then`; `tree` when every value in it appears once: not
 * js-yaml's, whose aliases (`*a`) may make a 1 MiB file a value of billions of nodes.
 */
function parseYaml(path: string, text: string, fail: (field: string, message: string) => ParseResult, then: (data: unknown, tree: boolean) => ParseResult): ParseResult {
  let data: unknown;
  const json = dumped.get(text);
  if (json !== undefined) {
    dumped.delete(text);
    data = JSON.parse(json);
  } else {
    // The fast reader takes no "__proto__" key: it leaves such a document to js-yaml, then to protoKeys below.
    const fast = readFast(text);
    if (fast !== undefined) return then(fast, true);
    try {
      data = loadYaml(text, path);
    } catch (error) {
      const reason = error instanceof jsYaml.YAMLException ? error.message.split('\n')[0]! : String(error);
      return fail('', `not valid YAML: ${reason}`);
    }
  }
  if (data === null || data === undefined) return fail('', 'the file is empty');
  const refused = protoKeys(data);
  if (refused.length) return { problems: refused.map((e) => ({ file: path, ...e })) };
  return then(data, json !== undefined);
}

/**
 * A YAML text's data as the catalog reads it (js-yaml, throws on bad YAML). The core schema is
 * YAML 1.2's: `expires_at: 2026-12-31T00:00:00Z` stays a string, `no` stays a string; js-yaml
 * also reads `0b11` and `+0b1` as numbers, which other writers leave unquoted (yaml-file.ts).
 */
export function loadYaml(text: string, path?: string): unknown {
  return jsYaml.load(text, { schema: jsYaml.CORE_SCHEMA, filename: path });
}

function parseEntity(path: string, shape: Shape, data: unknown, tree: boolean): ParseResult {
  const check = <T>(schema: z.ZodType<T>): T | Problem[] => {
    const result = schema.safeParse(data);
    if (result.success) return result.data;
    return describeZodError(result.error, data).map((e) => ({ file: path, ...e }));
  };
  const mustMatch = (field: string, actual: string, expected: string): Problem[] =>
    actual === expected ? [] : [{ file: path, field, message: `is "${actual}" but the file's path says "${expected}"` }];

  switch (shape.kind) {
    case 'settings': {
      const value = check(settingsFile);
      return Array.isArray(value) ? { problems: value } : { entity: { kind: 'settings', id: 'aami', value }, problems: [] };
    }
    case 'group': {
      const value = check(groupFile);
      if (Array.isArray(value)) return { problems: value };
      const problems = mustMatch('id', value.id, shape.id);
      return problems.length ? { problems } : { entity: { kind: 'group', id: value.id, value }, problems: [] };
    }
    case 'token': {
      const value = check(tokenFile);
      if (Array.isArray(value)) return { problems: value };
      const problems = mustMatch('id', value.id, shape.id);
      return problems.length ? { problems } : { entity: { kind: 'token', id: value.id, value }, problems: [] };
    }
    case 'credential': {
      const value = check(credentialFile);
      if (Array.isArray(value)) return { problems: value };
      const problems = mustMatch('id', value.id, shape.id);
      return problems.length ? { problems } : { entity: { kind: 'credential', id: value.id, value }, problems: [] };
    }
    case 'target': {
      // A valid file's check takes the values a fleet repeats from those checked before (by
      // their JSON: only for a tree, whose JSON is no bigger than its file); any problem, the
      // whole schema's check says what it is.
      const value = (tree ? checkedTarget(data) : undefined) ?? check(targetFile);
      if (Array.isArray(value)) return { problems: value };
      const problems = [
        ...mustMatch('hostname', value.hostname, shape.id),
        ...mustMatch('primary_group', value.primary_group, shape.group),
      ];
      return problems.length ? { problems } : sharedParts({ entity: { kind: 'target', id: value.hostname, value }, problems: [] });
    }
  }
}

/** The fields of a target file a fleet repeats: checked once for each distinct value (checkedTarget). */
const REPEATED_TARGET_FIELDS = ['groups', 'exporters', 'labels', 'node_labels', 'token_labels', 'facts'] as const satisfies ReadonlyArray<(typeof SHARED_TARGET_FIELDS)[number]>;
const REPEATED = new Set<string>(REPEATED_TARGET_FIELDS);
const TARGET_KEYS = Object.keys(targetFile.shape) as Array<keyof Target>;
/** The target's schema without the repeated fields (still strict: a key it does not know is refused). */
const targetRest = targetFile.omit(Object.fromEntries(REPEATED_TARGET_FIELDS.map((field) => [field, true])) as Record<(typeof REPEATED_TARGET_FIELDS)[number], true>);
/** Each repeated field's checked, shared values by the JSON of what the file holds, and the last one checked. */
const checkedValues = new Map<string, unknown>();
const lastChecked = new Map<string, { data: unknown; value: unknown }>();
const INVALID = Symbol('invalid');

/**
 * What targetFile's check gives for a valid target file, with its repeated fields (labels,
 * exporters, groups, facts) taken from the value checked the first time the fleet held the
 * same, and shared (sharedValue): zod's check of a target was ~11 µs, the most of it on
 * fields every target of a rack repeats. Undefined when anything is wrong (the whole schema
 * then says what). The same value as targetFile.safeParse, field order included (a property
 * test in test/parse.test.ts): a field's check depends on nothing but its own value. Values
 * are told apart by their JSON, as sharedValue does: NaN and null, which JSON writes alike,
 * no field takes; -0 and 0 are one value (a fact's count), as they are to sharedValue.
 */
function checkedTarget(data: unknown): Target | undefined {
  if (typeof data !== 'object' || data === null || Object.getPrototypeOf(data) !== Object.prototype) return undefined;
  const rest: Record<string, unknown> = {};
  for (const key of Object.keys(data)) if (!REPEATED.has(key)) rest[key] = (data as Record<string, unknown>)[key];
  const checked = targetRest.safeParse(rest);
  if (!checked.success) return undefined;
  const value: Record<string, unknown> = {};
  for (const key of TARGET_KEYS) {
    if (REPEATED.has(key)) {
      const field = checkedField(key as (typeof REPEATED_TARGET_FIELDS)[number], (data as Record<string, unknown>)[key]);
      if (field === INVALID) return undefined;
      if (field !== undefined) value[key] = field;
    } else if (key in checked.data) value[key] = checked.data[key as keyof typeof checked.data];
  }
  return value as Target;
}

function checkedField(field: (typeof REPEATED_TARGET_FIELDS)[number], data: unknown): unknown {
  const last = lastChecked.get(field);
  if (last !== undefined && sameJson(last.data, data)) return last.value;
  const key = `${field}\0${JSON.stringify(data)}`;
  let value = checkedValues.get(key);
  if (value === undefined && !checkedValues.has(key)) {
    const checked = targetFile.shape[field].safeParse(data);
    if (!checked.success) return INVALID;
    value = checked.data === undefined ? undefined : sharedValue(checked.data, field);
    if (checkedValues.size >= SHARED_LIMIT) checkedValues.clear();
    checkedValues.set(key, value);
  }
  lastChecked.set(field, { data, value });
  return value;
}

/** Values parses share: strings as themselves, the rest by their JSON. Cleared when full, so a stream of distinct ones cannot grow them without end. */
const sharedStrings = new Map<string, string>();
const sharedValues = new Map<string, unknown>();
const SHARED_LIMIT = 50_000;
const EMPTY_LIST = Object.freeze([]);
const EMPTY_MAP = Object.freeze({});

/**
 * The fields of a target that a fleet repeats: its group ids and token id (strings), and its
 * lists of groups and exporters, label sets and facts. Parses share one copy of each value
 * (sharedParts); the parse cache writes each once and refers to it (parse-cache.ts).
 */
export const SHARED_TARGET_FIELDS = ['primary_group', 'groups', 'exporters', 'labels', 'node_labels', 'token_labels', 'facts', 'registered_by_token'] as const satisfies ReadonlyArray<keyof Target>;

/**
 * A parse with what a fleet's targets repeat shared: one frozen copy of each distinct value
 * of SHARED_TARGET_FIELDS, and one empty list of problems. At 100k targets this halves what
 * the parses hold (94 -> 46 MB measured on the parse cache), and with it what every GC
 * marks. Shared values are frozen: entities are never changed in place, and a change that
 * tried would throw rather than reach every target sharing the value. Changes `parsed` in
 * place (it is new).
 */
export function sharedParts(parsed: ParseResult): ParseResult {
  if (!parsed.entity) return parsed;
  parsed.problems = EMPTY_LIST as unknown as [];
  if (parsed.entity.kind !== 'target') return parsed;
  const target = parsed.entity.value as Record<string, unknown>;
  for (const field of SHARED_TARGET_FIELDS) if (target[field] !== undefined) target[field] = sharedValue(target[field], field);
  parsed.entity.value = inObject(parsed.entity.value);
  return parsed;
}

/** The fields every valid target has (the others have defaults), and what a target self-registered holds besides (register.ts). */
const BASE_KEYS = TARGET_KEYS.slice(0, TARGET_KEYS.indexOf('token_labels') + 1);
const REGISTERED_KEYS = ['facts', 'registered_by_token', 'node_credential_hash', 'machine_id_hash', 'registered_at'] as const satisfies ReadonlyArray<keyof Target>;

/**
 * The same target, its fields held in the object itself, as an object literal makes it. Built
 * a key at a time (zod's check, checkedTarget), V8 kept 4 fields in the object and the others
 * in a property array of its own: one more object a target for every collection to mark,
 * ~3 MB more at 100k targets (heap snapshot). Keys and their order are kept; a target whose
 * keys do not start with BASE_KEYS in order is left as it is.
 */
function inObject(t: Target): Target {
  const keys = Object.keys(t);
  if (keys.length < BASE_KEYS.length || BASE_KEYS.some((key, i) => keys[i] !== key)) return t;
  const more = keys.slice(BASE_KEYS.length) as Array<keyof Target>;
  // The two shapes of a fleet: targets made by hand or by pull request, and targets registered by their node.
  if (more.length === REGISTERED_KEYS.length && more.every((key, i) => key === REGISTERED_KEYS[i]))
    return { hostname: t.hostname, ip_address: t.ip_address, primary_group: t.primary_group, groups: t.groups, exporters: t.exporters, labels: t.labels, node_labels: t.node_labels, token_labels: t.token_labels, facts: t.facts, registered_by_token: t.registered_by_token, node_credential_hash: t.node_credential_hash, machine_id_hash: t.machine_id_hash, registered_at: t.registered_at };
  const value: Target = { hostname: t.hostname, ip_address: t.ip_address, primary_group: t.primary_group, groups: t.groups, exporters: t.exporters, labels: t.labels, node_labels: t.node_labels, token_labels: t.token_labels };
  for (const key of more) (value as Record<string, unknown>)[key] = t[key];
  return value;
}

/** The shared copy of one value of a shared field (strings as themselves; objects frozen). */
export function sharedValue(value: unknown, field: string): unknown {
  return typeof value === 'string' ? shareString(value) : typeof value === 'object' && value !== null ? share(value, field) : value;
}

/** The parse of a valid target file, from its value with the shared fields already shared: what parseFile gives. */
export function targetParse(value: Target): ParseResult {
  return { entity: { kind: 'target', id: value.hostname, value }, problems: EMPTY_LIST as unknown as [] };
}

function shareString(value: string): string {
  const found = sharedStrings.get(value);
  if (found !== undefined) return found;
  if (sharedStrings.size >= SHARED_LIMIT) sharedStrings.clear();
  sharedStrings.set(value, value);
  return value;
}

/** The value each field shared last: the next target of a fleet most often has the same one, found without its JSON. */
const lastShared = new Map<string, object>();

function share<T extends object>(value: T, field: string): T {
  // Only shared values are frozen (checkedField's among them).
  if (Object.isFrozen(value)) return value;
  // Empty ones (most targets' node and token labels) need no table.
  if (Object.keys(value).length === 0) return (Array.isArray(value) ? EMPTY_LIST : Object.getPrototypeOf(value) === Object.prototype ? EMPTY_MAP : value) as T;
  const last = lastShared.get(field);
  if (last !== undefined && sameJson(last, value)) return last as T;
  const key = JSON.stringify(value);
  let found = sharedValues.get(key) as T | undefined;
  if (found === undefined) {
    if (sharedValues.size >= SHARED_LIMIT) sharedValues.clear();
    sharedValues.set(key, (found = deepFreeze(value)));
  }
  lastShared.set(field, found);
  return found;
}

/** Whether two parsed values (strings, numbers, booleans, arrays and plain objects of them) are equal, key order included. */
function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null || Array.isArray(a) !== Array.isArray(b)) return false;
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  const keys = Object.keys(a);
  const other = Object.keys(b);
  if (keys.length !== other.length) return false;
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    if (key !== other[i] || !sameJson((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key])) return false;
  }
  return true;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}
