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

  // Small key spaces keep every layer holding and dropping tombstones; 100 keys fold the top
  // layer into the middle one now and then; 3,000 keys flatten into new bases. Every version is
  // kept and compared with others, adjacent or not, and with siblings made from one version.
  it.each([
    { keys: 8, steps: 1500, batch: 4 },
    { keys: 100, steps: 2000, batch: 60 },
    { keys: 3000, steps: 1200, batch: 700 },
  ])('matches a plain Map in every version, and changedSince names every key two versions differ in ($keys keys)', ({ keys, steps, batch }) => {
    const rng = random(keys * 7919 + 1);
    const versions: Array<{ map: PMap<string, number>; model: Map<string, number> }> = [];
    const start = new Map(Array.from({ length: keys / 2 }, (_, i) => [`k${i * 2}`, -1] as [string, number]));
    let current = { map: PMap.from(new Map(start)), model: new Map(start) };
    versions.push(current);
    // Plain loops collect what is wrong; one expect a check keeps thousands of versions quick.
    const check = ({ map, model }: (typeof versions)[number], label: string) => {
      const wrong: string[] = [];
      const seen = new Set<string>();
      for (const [key, value] of map) if (seen.has(key) || (seen.add(key), model.get(key) !== value)) wrong.push(`${key} iterated`);
      if (seen.size !== model.size || map.size !== model.size) wrong.push(`size ${map.size}, ${seen.size} iterated, model ${model.size}`);
      for (let i = 0; i < keys; i++) {
        const key = `k${i}`;
        if (map.get(key) !== model.get(key) || map.has(key) !== model.has(key)) wrong.push(key);
      }
      expect(wrong, label).toEqual([]);
    };
    const differ = (a: (typeof versions)[number], b: (typeof versions)[number], label: string) => {
      const changed = b.map.changedSince(a.map);
      if (!changed) return 0;
      const missed: string[] = [];
      for (let i = 0; i < keys; i++) {
        const key = `k${i}`;
        if ((a.model.get(key) !== b.model.get(key) || a.model.has(key) !== b.model.has(key)) && !changed.has(key)) missed.push(key);
      }
      expect(missed, label).toEqual([]);
      return 1;
    };
    let compared = 0;
    let flattens = 0;
    for (let step = 0; step < steps; step++) {
      // Mostly one change (a registration), now and then a batch; a key deleted and set again in one draft; a refused change rolled back.
      const from = rng(10) === 0 ? versions[rng(versions.length)]! : current;
      const count = rng(15) === 0 ? 1 + rng(batch) : 1 + rng(2);
      const draft = from.map.edit();
      const model = new Map(from.model);
      for (let i = 0; i < count; i++) {
        const key = `k${rng(keys)}`;
        const op = rng(8);
        if (op < 3) {
          expect(draft.delete(key)).toBe(model.has(key));
          model.delete(key);
        } else if (op === 3) {
          const mark = draft.mark();
          draft.delete(key);
          draft.set(`k${rng(keys)}`, -2);
          draft.rollback(mark);
        } else {
          draft.set(key, step);
          model.set(key, step);
        }
        expect(draft.get(key)).toBe(model.get(key));
      }
      expect(draft.size).toBe(model.size);
      const next = { map: draft.freeze(), model };
      if (!next.map.changedSince(from.map)) flattens++;
      check(next, `step ${step}`);
      differ(from, next, `step ${step}`);
      // Any two versions, either way round: the one before, and one picked at random.
      for (const other of [current, versions[rng(versions.length)]!]) {
        compared += differ(other, next, `step ${step} after`);
        differ(next, other, `step ${step} before`);
      }
      versions.push(next);
      if (from === current) current = next;
    }
    // Older versions are untouched by what came after them.
    versions.forEach((version, i) => check(version, `version ${i}`));
    expect(compared).toBeGreaterThan(steps / 2);
    if (keys >= 3000) expect(flattens).toBeGreaterThan(3);
  });

  it('makes a map given by later() a step at a time, or the rest at once when it is read first, and then holds what it holds through changes', () => {
    const reads = [(m: PMap<string, number>) => m.get('a'), (m: PMap<string, number>) => m.has('z'), (m: PMap<string, number>) => m.size, (m: PMap<string, number>) => [...m], (m: PMap<string, number>) => m.edit().set('c', 3).freeze()];
    // Each read after 0, 1, 2 or all the steps making() takes.
    for (const read of reads) {
      for (const stepsFirst of [0, 1, 2, Infinity]) {
        const done: string[] = [];
        function* steps() {
          done.push('a');
          yield;
          done.push('b');
          yield;
          done.push('made');
          return new Map([['a', 1], ['b', 2]]);
        }
        const map = PMap.later(steps());
        expect(done).toEqual([]);
        const making = map.making();
        for (let i = 0; i < stepsFirst && !making.next().done; i++);
        expect(done).toEqual(['a', 'b', 'made'].slice(0, Math.min(stepsFirst, 3)));
        read(map);
        read(map);
        expect(done).toEqual(['a', 'b', 'made']);
        // Done: making() has nothing left, from the generator begun before the read or a new one.
        expect([...making, ...map.making()]).toEqual([]);
        const draft = map.edit().set('c', 3);
        expect(draft.size).toBe(3);
        const next = draft.freeze();
        expect(next.changedSince(map)).toEqual(new Set(['c']));
        expect(new Map(next)).toEqual(new Map([['a', 1], ['b', 2], ['c', 3]]));
        expect(next.size).toBe(3);
        expect(new Map(map)).toEqual(new Map([['a', 1], ['b', 2]]));
        expect(done).toEqual(['a', 'b', 'made']);
      }
    }
  });

  it('throws on every read of a map given by later() whose steps threw, never gives an empty one', () => {
    function* steps(): Generator<void, Map<string, number>> {
      yield;
      throw new Error('a step failed');
    }
    const map = PMap.later(steps());
    expect(() => [...map.making()]).toThrow('a step failed');
    expect(() => map.get('a')).toThrow('a step failed');
    expect(() => map.size).toThrow('a step failed');
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
