import { basename } from 'node:path';
import type { Change } from '../repo/store.js';
import { buildCatalog, targetAddresses, targetProblems, tokenProblems } from './build.js';
import { parseFile, type Entity, type ParseResult } from './parse.js';
import { appendAll, type Problem } from './problem.js';
import type { CatalogState } from './state.js';

/**
 * The problems a change set would bring to the files it touches, checked against the
 * catalog as it stands. The writer refuses to commit a change set that has any, so a
 * rejected request makes no commit and an API write can never break the repo.
 */
export function problemsOfChange(state: CatalogState, changes: Change[], parsed = parseChanges(changes)): Problem[] {
  const local = changes.every((c) => c.path.startsWith('targets/') || c.path.startsWith('tokens/'));
  return local ? localProblems(state, changes, parsed) : rebuiltProblems(state, changes, parsed);
}

/** Each written file parsed once, for the check here and then for CatalogState.set. */
export function parseChanges(changes: Change[]): Map<string, ParseResult> {
  return new Map(changes.flatMap(({ path, content }) => (content === null ? [] : [[path, parseFile(path, content)] as const])));
}

/** Target and token files only depend on groups and settings, and on each other's names and addresses. */
function localProblems(state: CatalogState, changes: Change[], parsed: Map<string, ParseResult>): Problem[] {
  const { catalog } = state.snapshot();
  const problems: Problem[] = [];
  // Hostnames whose current file this change set rewrites or deletes: their old claims do not count.
  const replaced = new Set(changes.map((c) => basename(c.path, '.yaml')).filter((host, i) => catalog.targetPaths.get(host) === changes[i]!.path));
  const claimedHere = new Map<string, string>();
  for (const { path, content } of changes) {
    if (content === null) continue;
    const { entity, problems: parseProblems } = parsed.get(path)!;
    appendAll(problems, parseProblems);
    if (entity?.kind === 'token') appendAll(problems, tokenProblems(catalog, path, entity.value));
    if (entity?.kind !== 'target') continue;
    appendAll(problems, targetProblems(catalog, path, entity.value, replaced));
    for (const key of [entity.value.hostname, ...targetAddresses(catalog.settings, entity.value)]) {
      const other = claimedHere.get(key);
      if (other) problems.push({ file: path, field: '', message: `"${key}" is also claimed by ${other} in the same change` });
      claimedHere.set(key, path);
    }
  }
  return problems;
}

function rebuiltProblems(state: CatalogState, changes: Change[], parsed: Map<string, ParseResult>): Problem[] {
  const touched = new Set(changes.map((c) => c.path));
  const problems: Problem[] = [];
  const entities = new Map<string, Entity>(state.entities());
  for (const { path, content } of changes) {
    if (content === null) {
      entities.delete(path);
      continue;
    }
    const { entity, problems: parseProblems } = parsed.get(path)!;
    if (entity) entities.set(path, entity);
    else appendAll(problems, parseProblems);
  }
  appendAll(problems, buildCatalog(entities).problems.filter((p) => touched.has(p.file)));
  return problems;
}
