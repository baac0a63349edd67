import * as fs from 'node:fs';
import { writeFileDurably } from '../git/fs.js';
import type { Snapshot } from '../catalog/live.js';
import { claimKeys, establishedIn } from '../catalog/place.js';

/**
 * What a restart cannot read from Git alone, kept in the state directory: the last good
 * version of each invalid file (by blob id), and who held each claim an invalid file
 * wants — so a restart serves the same versions and decides the same clashes as the
 * server that stopped. Small (invalid files only) and written only when it changes.
 */
export interface SavedCatalogState {
  head: string | null;
  last_good: Record<string, string>;
  /**
   * The blob each file of last_good had when saved (null: deleted, kept while used): its last
   * good version is of that file, and a file changed since (while the server was down) is
   * recalled from its history instead. It also makes the state file change when a broken file
   * is replaced by another broken version. Missing in a state saved by an older build.
   */
  current?: Record<string, string | null>;
  established: Record<string, string>;
}

/** Each snapshot's state, worked out once (the SD stamp and the state file both ask for it). */
const states = new WeakMap<Snapshot, SavedCatalogState>();

/** The snapshot's state (worked out once, frozen). */
export function savedStateOf(snapshot: Snapshot): SavedCatalogState {
  let state = states.get(snapshot);
  if (!state) states.set(snapshot, (state = frozen(stateOf(snapshot))));
  return state;
}

/** A snapshot restored with the state the server that saved it worked out (the restart image). */
export function restoredState(snapshot: Snapshot, state: SavedCatalogState): void {
  states.set(snapshot, frozen(state));
}

/** Shared by every reader of a snapshot's state: none may change it. */
function frozen(state: SavedCatalogState): SavedCatalogState {
  Object.freeze(state.last_good);
  if (state.current) Object.freeze(state.current);
  Object.freeze(state.established);
  return Object.freeze(state);
}

/** Worked out afresh (savedStateOf remembers it; a test compares the two). */
export function stateOf(snapshot: Snapshot): SavedCatalogState {
  const lastGood: Record<string, string> = {};
  const blobs: Record<string, string | null> = {};
  const established: Record<string, string> = {};
  const holder = establishedIn(snapshot.catalog);
  for (const path of [...snapshot.problemsByFile.keys(), ...snapshot.rejected.keys()].sort()) {
    const record = snapshot.files.get(path);
    if (!record) continue;
    if (record.lastGoodOid && record.lastGoodOid !== record.oid) {
      lastGood[path] = record.lastGoodOid;
      blobs[path] = record.oid;
    }
    const entity = record.parsed.entity;
    if (entity?.kind !== 'target') continue;
    for (const key of claimKeys(snapshot.catalog.settings, entity.value)) {
      const held = holder(key);
      if (held && held !== path) established[key] = held;
    }
  }
  return { head: snapshot.head, last_good: lastGood, current: blobs, established };
}

export class CatalogStateFile {
  private saved = '';
  private writing: Promise<void> = Promise.resolve();

  constructor(private readonly file: string | undefined) {}

  load(): SavedCatalogState | undefined {
    if (!this.file) return undefined;
    try {
      const state = JSON.parse(fs.readFileSync(this.file, 'utf8')) as SavedCatalogState;
      this.saved = JSON.stringify({ ...state, head: null });
      return state;
    } catch {
      return undefined;
    }
  }

  /**
   * Save unless nothing changed but the head. Saves run one after another (the newest
   * state lands last), and one that fails is tried again with the next state.
   */
  save(state: SavedCatalogState): Promise<void> {
    if (!this.file) return Promise.resolve();
    const file = this.file;
    const write = this.writing.then(async () => {
      const text = JSON.stringify({ ...state, head: null });
      if (text === this.saved) return;
      await writeFileDurably(fs, file, JSON.stringify(state));
      this.saved = text;
    });
    this.writing = write.catch(() => undefined);
    return write;
  }

  /** Resolves once the saves asked for so far are done (failed or not). */
  settled(): Promise<void> {
    return this.writing;
  }
}
