const DELETED: unique symbol = Symbol('deleted');
type Slot<V> = V | typeof DELETED;

/**
 * An empty layer, shared: a layer is never changed in place (layer() and the fold into a
 * new base copy), and an empty Map costs ~200 bytes (a catalog keeps a PMap for each group's
 * targets and each IP address several targets share).
 */
const NO_LAYER: ReadonlyMap<any, any> = new Map();

/**
 * How big the two layers over a map's base may grow. Each derive copies the top layer (t
 * keys); every t/c derives (c changes a derive) the top is folded into the middle one (m
 * keys); every m/c derives everything is flattened into a new base (n keys). The copying a
 * derive costs, t/2 + (m/2)(c/t) + n(c/m), is least near m = (2n)^(2/3) c^(1/3) and
 * t = sqrt(m c): for one registration (c = 2) on a map of ~300k keys,
 * ~200 keys a derive, where a base and one layer (a delta of sqrt(2nc)) copied ~1,100.
 */
function layerLimits(size: number, changes: number): { top: number; middle: number } {
  const middle = Math.max(256, Math.cbrt((2 * size) ** 2 * changes));
  return { top: Math.max(32, Math.sqrt(middle * changes)), middle };
}

/**
 * An immutable map that shares its bulk with the maps it was made from: a frozen base and
 * two small layers of changed keys over it. A snapshot of a 100k-target catalog can be
 * followed by the next one without copying 100k entries: a registration copies the top
 * layer (some hundred entries), now and then the middle one (some thousand), and every
 * several thousand changes everything is folded into a new base. Iteration order is not
 * insertion order; readers that need an order sort.
 */
export class PMap<K, V> implements ReadonlyMap<K, V> {
  private constructor(
    /** Undefined while `steps` are making it (later()). */
    private made: ReadonlyMap<K, V> | undefined,
    private readonly middle: ReadonlyMap<K, Slot<V>>,
    private readonly top: ReadonlyMap<K, Slot<V>>,
    /** Unknown until the base is made. */
    private count: number | undefined,
    private steps?: Iterator<unknown, Map<K, V>>,
  ) {}

  static empty<K, V>(): PMap<K, V> {
    return new PMap(new Map(), NO_LAYER, NO_LAYER, 0);
  }

  /** Takes ownership of `map`: the caller must not change it afterwards. */
  static from<K, V>(map: Map<K, V>): PMap<K, V> {
    return new PMap(map, NO_LAYER, NO_LAYER, map.size);
  }

  /**
   * A map made by `steps`, each a slice of the work and the last one returning the map: by
   * making() between other work, else all at once when it is first read. An index a start
   * can serve without (the catalog's targets by IP address, after a restart) is made once
   * the server serves, and a write that needs it sooner makes the rest.
   */
  static later<K, V>(steps: Iterator<unknown, Map<K, V>>): PMap<K, V> {
    return new PMap(undefined, NO_LAYER, NO_LAYER, undefined, steps);
  }

  /** Makes a map given by later() a step at a time, yielding between steps; nothing once it is made. */
  *making(): Generator<void> {
    while (this.step()) yield;
  }

  /** One step of making the base; false once it is made. */
  private step(): boolean {
    if (!this.steps) return false;
    let next: IteratorResult<unknown, Map<K, V>>;
    try {
      next = this.steps.next();
    } catch (error) {
      // A generator that threw is done: every later read throws the same, never reads a map that is not there.
      this.steps = {
        next: () => {
          throw error;
        },
      };
      throw error;
    }
    if (!next.done) return true;
    this.made = next.value;
    this.steps = undefined;
    return false;
  }

  private get base(): ReadonlyMap<K, V> {
    while (this.step());
    return this.made!;
  }

  get size(): number {
    return (this.count ??= this.base.size);
  }

  get(key: K): V | undefined {
    const slot = this.layered(key);
    if (slot !== undefined) return slot === DELETED ? undefined : slot;
    return this.base.get(key);
  }

  has(key: K): boolean {
    const slot = this.layered(key);
    if (slot !== undefined) return slot !== DELETED;
    return this.base.has(key);
  }

  /** The key's slot in the top layer, else in the middle one. */
  private layered(key: K): Slot<V> | undefined {
    const slot = this.top.get(key);
    return slot === undefined ? this.middle.get(key) : slot;
  }

  *entries(): MapIterator<[K, V]> {
    for (const [key, value] of this.base) {
      const slot = this.layered(key);
      if (slot === undefined) yield [key, value];
      else if (slot !== DELETED) yield [key, slot];
    }
    // Keys the base does not hold: the top layer's slot, else the middle one's.
    for (const [key, slot] of this.middle) if (slot !== DELETED && !this.top.has(key) && !this.base.has(key)) yield [key, slot];
    for (const [key, slot] of this.top) if (slot !== DELETED && !this.base.has(key)) yield [key, slot];
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
   * changed on top of the layers they share. Undefined when they share no base (one of them
   * was flattened since): then only a full comparison tells.
   */
  changedSince(older: PMap<K, V>): Set<K> | undefined {
    if (older.base !== this.base) return undefined;
    if (older.middle === this.middle) return new Set([...older.top.keys(), ...this.top.keys()]);
    return new Set([...older.middle.keys(), ...older.top.keys(), ...this.middle.keys(), ...this.top.keys()]);
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
    const limits = layerLimits(size, changes.size);
    if (from.top.size + changes.size <= limits.top) {
      // A deleted key needs a tombstone only while a layer below still holds it.
      const top = layer(from.top, changes, (key) => from.middle.has(key) || from.base.has(key));
      return new PMap(from.base, from.middle, top, size);
    }
    if (from.middle.size + from.top.size + changes.size <= limits.middle) {
      const middle = layer(from.middle, [...from.top, ...changes], (key) => from.base.has(key));
      return new PMap(from.base, middle, NO_LAYER, size);
    }
    const flat = new Map(from.base);
    for (const [key, slot] of [...from.middle, ...from.top, ...changes]) {
      if (slot === DELETED) flat.delete(key);
      else flat.set(key, slot);
    }
    return new PMap(flat, NO_LAYER, NO_LAYER, flat.size);
  }
}

/**
 * The keys whose value is not the same object in `a` and `b`, added to `changed`. Two
 * versions of one PMap name the keys either changed: a map of 100k keys is not walked.
 */
export function changedKeys<K, V>(a: ReadonlyMap<K, V> | undefined, b: ReadonlyMap<K, V> | undefined, changed = new Set<K>()): Set<K> {
  if (a === b) return changed;
  const keys = a instanceof PMap && b instanceof PMap ? b.changedSince(a) : undefined;
  if (keys) {
    for (const key of keys) if (a!.get(key) !== b!.get(key)) changed.add(key);
    return changed;
  }
  for (const [key, value] of a ?? []) if (b?.get(key) !== value) changed.add(key);
  for (const [key, value] of b ?? []) if (a?.get(key) !== value) changed.add(key);
  return changed;
}

/** `below` with `changes` made, as a new layer: a deletion is kept as a tombstone only where `shadows` says a lower layer holds the key. */
function layer<K, V>(below: ReadonlyMap<K, Slot<V>>, changes: Iterable<[K, Slot<V>]>, shadows: (key: K) => boolean): Map<K, Slot<V>> {
  const next = new Map(below);
  for (const [key, slot] of changes) {
    if (slot === DELETED && !shadows(key)) next.delete(key);
    else next.set(key, slot);
  }
  return next;
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
