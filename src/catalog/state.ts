import { addTarget, buildCatalog, removeTarget, targetProblems, tokenProblems, type Catalog } from './build.js';
import { parseFile, type Entity, type ParseResult } from './parse.js';
import { appendAll, type Problem } from './problem.js';

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
 *
 * A change to a target or token file patches the current snapshot in place (a registration
 * at 10k targets costs one file's checks, not a rebuild); any other change, or one that
 * could let a rejected target back in, rebuilds the snapshot from every file.
 */
export class CatalogState {
  private readonly files = new Map<string, FileState>();
  private cached: Snapshot | undefined;

  /** Set a file's text (null: deleted), with its parse when the caller has it already. Returns false when nothing changed. */
  set(path: string, text: string | null, parsed?: ParseResult): boolean {
    const previous = this.files.get(path);
    if (text === null) {
      if (!previous) return false;
      this.files.delete(path);
    } else {
      if (previous?.text === text) return false;
      const { entity, problems } = parsed ?? parseFile(path, text);
      this.files.set(path, { text, current: entity, parseProblems: problems, lastGood: previous?.lastGood });
    }
    if (this.cached && this.canPatch(path)) this.patch(this.cached, path, previous?.lastGood);
    else this.cached = undefined;
    return true;
  }

  /**
   * Give a broken file the last good version it had before this process started (an older
   * revision from Git), so a restart does not drop what it described. Returns whether that
   * version parses; whether it also fits the catalog is decided by the next snapshot.
   */
  recallLastGood(path: string, olderText: string): boolean {
    const file = this.files.get(path);
    const { entity } = parseFile(path, olderText);
    if (!file || file.lastGood || !entity) return false;
    file.lastGood = entity;
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

  private canPatch(path: string): boolean {
    const kind = path.startsWith('targets/') ? 'target' : path.startsWith('tokens/') ? 'token' : undefined;
    if (!kind) return false;
    // A target that was refused for a clash might fit once this file changes: rebuild then.
    for (const rejected of this.cached!.rejected) if (rejected !== path && rejected.startsWith('targets/')) return false;
    return true;
  }

  private patch(snapshot: Snapshot, path: string, old: Entity | undefined): void {
    const { catalog } = snapshot;
    if (old?.kind === 'target' && catalog.targetPaths.get(old.id) === path) removeTarget(catalog, old.id);
    if (old?.kind === 'token' && catalog.tokens.get(old.id) === old.value) catalog.tokens.delete(old.id);
    snapshot.problems = snapshot.problems.filter((p) => p.file !== path);
    snapshot.rejected.delete(path);

    const file = this.files.get(path);
    if (!file) return;
    appendAll(snapshot.problems, file.parseProblems);
    const problemsOf = (entity: Entity): Problem[] =>
      entity.kind === 'target' ? targetProblems(catalog, path, entity.value) : entity.kind === 'token' ? tokenProblems(catalog, path, entity.value) : [];
    const candidate = file.current ?? file.lastGood;
    const found = candidate ? problemsOf(candidate) : [];
    let accepted = candidate && !found.length ? candidate : undefined;
    if (!accepted && file.lastGood && file.lastGood !== candidate && !problemsOf(file.lastGood).length) accepted = file.lastGood;
    appendAll(snapshot.problems, found);
    snapshot.problems.sort(byFile);
    if (!accepted) {
      snapshot.rejected.add(path);
      return;
    }
    if (accepted.kind === 'target') addTarget(catalog, path, accepted.value);
    if (accepted.kind === 'token') catalog.tokens.set(accepted.id, accepted.value);
    file.lastGood = accepted;
  }

  private build(): Snapshot {
    const chosen = new Map<string, Entity>();
    const problems: Problem[] = [];
    for (const [path, file] of this.files) {
      appendAll(problems, file.parseProblems);
      const entity = file.current ?? file.lastGood;
      if (entity) chosen.set(path, entity);
    }
    let result = buildCatalog(chosen);
    appendAll(problems, result.problems);

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
