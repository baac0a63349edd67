import { describe, expect, it } from 'vitest';
import { limited } from '../src/lanes.js';

/** A call that ends when the test says, succeeding or failing. */
function heldCalls() {
  const held: Array<{ id: number; end: (error?: Error) => void }> = [];
  const fn = (id: number) =>
    new Promise<number>((resolve, reject) => held.push({ id, end: (error) => (error ? reject(error) : resolve(id)) }));
  return { held, fn };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('limited', () => {
  it('runs at most `running` calls, queues `waiting` more in order, and refuses the next at once', async () => {
    const { held, fn } = heldCalls();
    const call = limited(fn, { running: 2, waiting: 2 }, () => new Error('busy'));
    const calls = [1, 2, 3, 4].map((id) => call(id));
    await expect(call(5)).rejects.toThrow('busy');
    await tick();
    expect(held.map((h) => h.id)).toEqual([1, 2]);
    held[1]!.end();
    await tick();
    expect(held.map((h) => h.id)).toEqual([1, 2, 3]);
    held[0]!.end();
    await tick();
    expect(held.map((h) => h.id)).toEqual([1, 2, 3, 4]);
    held[2]!.end();
    held[3]!.end();
    expect(await Promise.all(calls)).toEqual([1, 2, 3, 4]);
  });

  it('gives a failed call its place back', async () => {
    const { held, fn } = heldCalls();
    const call = limited(fn, { running: 1, waiting: 0 }, () => new Error('busy'));
    const first = call(1);
    await expect(call(2)).rejects.toThrow('busy');
    await tick();
    held[0]!.end(new Error('git failed'));
    await expect(first).rejects.toThrow('git failed');
    const next = call(3);
    await tick();
    held[1]!.end();
    expect(await next).toBe(3);
  });
});
