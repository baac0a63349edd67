const DELETED: unique symbol = Symbol('deleted');
type Slot<V> = V | typeof DELETED;

/**
 * When a map is flattened into a new base. Each derive copies the delta (d keys) and a
 * flatten copies the map (n keys); with c changes a derive, flattening past
 * d = sqrt(2·n·c) keeps the copying per change near its least, about sqrt(2·n/c). A group's
 * map of 2,000 hosts changed one registration at a time flattens every ~63 changes; the
 * 100k-target map changed by commits of ~30 registrations, every ~2,500 keys.
 */
const flattenPast = (size: number, changes: number) => Math.max(64, Math.sqrt(2 * size * changes));

/**
 * An immutable map that shares its bulk with the maps it was made from: a frozen base plus a
 * small delta of changed keys. A snapshot of a 100k-target catalog can be followed by the
 * next one without copying 100k entries: a registration copies the delta (at most a few
 * thousand entries), and every few thousand changes the delta is folded into a new base.
 * Iteration order is not insertion order; readers that need an order sort.
 */
export class PMap<K, V> implements ReadonlyMap<K, V> {
  private constructor(
    private readonly base: ReadonlyMap<K, V>,
    private readonly delta: ReadonlyMap<K, Slot<V>>,
    readonly size: number,
  ) {}

  static empty<K, V>(): PMap<K, V> {
    return new PMap(new Map(), new Map(), 0);
  }

  /** Takes ownership of `map`: the caller must not change it afterwards. */
  static from<K, V>(map: Map<K, V>): PMap<K, V> {
    return new PMap(map, new Map(), map.size);
  }

  get(key: K): V | undefined {
    const slot = this.delta.get(key);
    if (slot !== undefined) return slot === DELETED ? undefined : slot;
    return this.base.get(key);
  }

  has(key: K): boolean {
    const slot = this.delta.get(key);
    if (slot !== undefined) return slot !== DELETED;
    return this.base.has(key);
  }

  *entries(): MapIterator<[K, V]> {
    for (const [key, value] of this.base) {
      const slot = this.delta.get(key);
      if (slot === undefined) yield [key, value];
      else if (slot !== DELETED) yield [key, slot];
    }
    for (const [key, slot] of this.delta) if (slot !== DELETED && !this.base.has(key)) yield [key, slot];
  }

  *keys(): MapIterator<K> {
    for (const [key] of this.entries()) yield key;
  }

  *values(): MapIterator<V> {
    for (const [, value] of this.entries()) yield value;
  }

  [Symbol.iterator](): MapIterator<[K, V]> {
    return this.entries();
  }

  forEach(fn: (value: V, key: K, map: ReadonlyMap<K, V>) => void): void {
    for (const [key, value] of this.entries()) fn(value, key, this);
  }

  /**
   * The keys whose entries may differ between `older` and this map: every key either map
   * changed on top of the base they share. Undefined when they share no base (one of them
   * was flattened since): then only a full comparison tells.
   */
  changedSince(older: PMap<K, V>): Set<K> | undefined {
    if (older.base !== this.base) return undefined;
    return new Set([...older.delta.keys(), ...this.delta.keys()]);
  }

  /** A draft to change: reads see its own changes; freeze() makes the next PMap. */
  edit(): PMapDraft<K, V> {
    return new PMapDraft(this);
  }

  /** @internal for PMapDraft */
  static derive<K, V>(from: PMap<K, V>, changes: Map<K, Slot<V>>): PMap<K, V> {
    if (!changes.size) return from;
    let size = from.size;
    for (const [key, slot] of changes) {
      const had = from.has(key);
      if (slot === DELETED) size -= had ? 1 : 0;
      else size += had ? 0 : 1;
    }
    const deltaSize = from.delta.size + changes.size;
    if (deltaSize > flattenPast(size, changes.size)) {
      const flat = new Map(from.base);
      for (const [key, slot] of [...from.delta, ...changes]) {
        if (slot === DELETED) flat.delete(key);
        else flat.set(key, slot);
      }
      return new PMap(flat, new Map(), flat.size);
    }
    const delta = new Map(from.delta);
    for (const [key, slot] of changes) {
      // A key the base does not hold needs no tombstone once deleted.
      if (slot === DELETED && !from.base.has(key)) delta.delete(key);
      else delta.set(key, slot);
    }
    return new PMap(from.base, delta, size);
  }
}

/**
 * Changes on top of a PMap, with an undo log: the writer applies a write, checks it, and
 * takes it back alone if it is refused, without copying anything.
 */
export class PMapDraft<K, V> implements ReadonlyMap<K, V> {
  private readonly changes = new Map<K, Slot<V>>();
  private readonly undo: Array<[K, Slot<V> | undefined]> = [];

  constructor(private readonly from: PMap<K, V>) {}

  get size(): number {
    let size = this.from.size;
    for (const [key, slot] of this.changes) {
      const had = this.from.has(key);
      if (slot === DELETED) size -= had ? 1 : 0;
      else size += had ? 0 : 1;
    }
    return size;
  }

  get(key: K): V | undefined {
    const slot = this.changes.get(key);
    if (slot !== undefined) return slot === DELETED ? undefined : slot;
    return this.from.get(key);
  }

  has(key: K): boolean {
    const slot = this.changes.get(key);
    if (slot !== undefined) return slot !== DELETED;
    return this.from.has(key);
  }

  set(key: K, value: V): this {
    this.undo.push([key, this.changes.get(key)]);
    this.changes.set(key, value);
    return this;
  }

  delete(key: K): boolean {
    const had = this.has(key);
    this.undo.push([key, this.changes.get(key)]);
    this.changes.set(key, DELETED);
    return had;
  }

  /** A point to roll back to. */
  mark(): number {
    return this.undo.length;
  }

  rollback(mark: number): void {
    while (this.undo.length > mark) {
      const [key, slot] = this.undo.pop()!;
      if (slot === undefined) this.changes.delete(key);
      else this.changes.set(key, slot);
    }
  }

  *entries(): MapIterator<[K, V]> {
    for (const [key, value] of this.from) {
      const slot = this.changes.get(key);
      if (slot === undefined) yield [key, value];
      else if (slot !== DELETED) yield [key, slot];
    }
    for (const [key, slot] of this.changes) if (slot !== DELETED && !this.from.has(key)) yield [key, slot];
  }

  *keys(): MapIterator<K> {
    for (const [key] of this.entries()) yield key;
  }

  *values(): MapIterator<V> {
    for (const [, value] of this.entries()) yield value;
  }

  [Symbol.iterator](): MapIterator<[K, V]> {
    return this.entries();
  }

  forEach(fn: (value: V, key: K, map: ReadonlyMap<K, V>) => void): void {
    for (const [key, value] of this.entries()) fn(value, key, this);
  }

  freeze(): PMap<K, V> {
    return PMap.derive(this.from, this.changes);
  }
}
