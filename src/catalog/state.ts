import { buildCatalog, type Catalog } from './build.js';
import { parseFile, type Entity } from './parse.js';
import type { Problem } from './problem.js';

interface FileState {
  text: string;
  /** This file's content as parsed now; undefined when it does not parse. */
  current?: Entity;
  parseProblems: Problem[];
  /** The last version of this file that made it into a catalog. */
  lastGood?: Entity;
}

export interface Snapshot {
  catalog: Catalog;
  problems: Problem[];
  /** Files that contribute nothing to the catalog (no good version at all). */
  rejected: Set<string>;
}

/**
 * The config repo's files as the catalog sees them, with the last good version of each.
 * A file that breaks (bad YAML, a schema error, a reference that no longer resolves) is
 * reported, and its last good version stays in the catalog — the way Prometheus's file SD
 * keeps the last successful read — so one bad pull request never empties the targets.
 * A deleted file is gone for good: deleting is not breaking.
 */
export class CatalogState {
  private readonly files = new Map<string, FileState>();
  private cached: Snapshot | undefined;

  /** Set a file's text (null: deleted). Returns false when nothing changed. */
  set(path: string, text: string | null): boolean {
    const previous = this.files.get(path);
    if (text === null) {
      if (!previous) return false;
      this.files.delete(path);
    } else {
      if (previous?.text === text) return false;
      const { entity, problems } = parseFile(path, text);
      this.files.set(path, { text, current: entity, parseProblems: problems, lastGood: previous?.lastGood });
    }
    this.cached = undefined;
    return true;
  }

  text(path: string): string | undefined {
    return this.files.get(path)?.text;
  }

  paths(): IterableIterator<string> {
    return this.files.keys();
  }

  /** The entity each file contributes to the catalog now: the version that made it in. */
  *entities(): IterableIterator<[string, Entity]> {
    const { rejected } = this.snapshot();
    for (const [path, file] of this.files) if (file.lastGood && !rejected.has(path)) yield [path, file.lastGood];
  }

  snapshot(): Snapshot {
    this.cached ??= this.build();
    return this.cached;
  }

  private build(): Snapshot {
    const chosen = new Map<string, Entity>();
    const problems: Problem[] = [];
    for (const [path, file] of this.files) {
      problems.push(...file.parseProblems);
      const entity = file.current ?? file.lastGood;
      if (entity) chosen.set(path, entity);
    }
    let result = buildCatalog(chosen);
    problems.push(...result.problems);

    // Files whose new version failed a cross-file check fall back to their last good version.
    let fallback = false;
    for (const path of result.rejected) {
      const file = this.files.get(path)!;
      if (file.lastGood && file.lastGood !== chosen.get(path)) {
        chosen.set(path, file.lastGood);
        fallback = true;
      }
    }
    if (fallback) result = buildCatalog(chosen);

    for (const [path, entity] of chosen) {
      if (!result.rejected.has(path)) this.files.get(path)!.lastGood = entity;
    }
    return { catalog: result.catalog, problems: problems.sort(byFile), rejected: result.rejected };
  }
}

function byFile(a: Problem, b: Problem): number {
  return a.file < b.file ? -1 : a.file > b.file ? 1 : 0;
}
