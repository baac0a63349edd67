import { describe, expect, it } from 'vitest';
import { PMap } from '../src/catalog/pmap.js';

/** A small deterministic generator (the same sequence every run). */
function random(seed: number) {
  let state = seed;
  return (n: number) => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return (state >>> 8) % n;
  };
}

describe('PMap', () => {
  it('holds what a plain Map holds through thousands of changes, one at a time and in batches, across flattens', () => {
    const rng = random(42);
    const model = new Map<string, number>();
    let map = PMap.empty<string, number>();
    const versions: Array<{ map: PMap<string, number>; model: Map<string, number> }> = [];
    let flattens = 0;
    for (let step = 0; step < 3000; step++) {
      // Mostly single changes (a registration), now and then a batch (a commit of many).
      const count = rng(20) === 0 ? 1 + rng(300) : 1;
      const draft = map.edit();
      for (let i = 0; i < count; i++) {
        const key = `k${rng(2500)}`;
        if (rng(4) === 0) {
          expect(draft.delete(key)).toBe(model.has(key));
          model.delete(key);
        } else {
          draft.set(key, step);
          model.set(key, step);
        }
      }
      expect(draft.size).toBe(model.size);
      const next = draft.freeze();
      const changed = next.changedSince(map);
      if (changed === undefined) flattens++;
      else for (const [key, value] of map) if (next.get(key) !== value) expect(changed.has(key), key).toBe(true);
      map = next;
      if (step % 100 === 0) versions.push({ map, model: new Map(model) });
      expect(map.size).toBe(model.size);
      for (const key of ['k0', 'k7', `k${rng(2500)}`]) {
        expect(map.get(key)).toBe(model.get(key));
        expect(map.has(key)).toBe(model.has(key));
      }
    }
    expect(new Map(map)).toEqual(model);
    expect([...map.keys()].length).toBe(model.size);
    // Older versions are untouched by what came after them.
    for (const version of versions) expect(new Map(version.map)).toEqual(version.model);
    // Flattens happen (the delta stays small), but not at every change.
    expect(flattens).toBeGreaterThan(10);
    expect(flattens).toBeLessThan(1000);
  });

  it('takes a refused change back without a trace', () => {
    const map = PMap.from(new Map([['a', 1], ['b', 2]]));
    const draft = map.edit();
    draft.set('c', 3);
    const mark = draft.mark();
    draft.delete('a');
    draft.set('b', 20);
    draft.rollback(mark);
    expect(new Map(draft.freeze())).toEqual(new Map([['a', 1], ['b', 2], ['c', 3]]));
    expect(new Map(map)).toEqual(new Map([['a', 1], ['b', 2]]));
  });
});
