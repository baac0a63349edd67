import type { Change } from '../repo/store.js';
import { buildCatalog } from './build.js';
import { parseFile, type Entity } from './parse.js';
import type { Problem } from './problem.js';
import type { CatalogState } from './state.js';

/**
 * The problems a change set would bring to the files it touches, checked against the
 * catalog as it stands. The writer refuses to commit a change set that has any, so a
 * rejected request makes no commit and an API write can never break the repo.
 */
export function problemsOfChange(state: CatalogState, changes: Change[]): Problem[] {
  const touched = new Set(changes.map((c) => c.path));
  const problems: Problem[] = [];
  const entities = new Map<string, Entity>(state.entities());
  for (const { path, content } of changes) {
    if (content === null) {
      entities.delete(path);
      continue;
    }
    const parsed = parseFile(path, content);
    if (parsed.entity) entities.set(path, parsed.entity);
    else problems.push(...parsed.problems);
  }
  problems.push(...buildCatalog(entities).problems.filter((p) => touched.has(p.file)));
  return problems;
}
