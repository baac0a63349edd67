import { describe, expect, it } from 'vitest';
import { packedBytes } from '../src/bytes.js';
import { random } from './helpers.js';

describe('packed bytes', () => {
  it('gives each string its exact UTF-8 bytes, and none is overwritten by the strings packed after it', () => {
    const rng = random(7);
    const alphabet = ['a', 'Z', '"', '\\', '\n', '\0', '\ufeff', 'é', '한', '😀', '\u2028', '\ud800', '\udc00'];
    const made: Array<[string, Buffer]> = [];
    for (let i = 0; i < 5000; i++) {
      // Lengths around the slab's edges and across the limit above which Buffer.from() is used instead.
      const length = rng.pick([0, 1, 7, 360, 1000, 2047, 2048, 2049, 3000, 9000]) + Math.floor(rng.next() * 3);
      let text = '';
      while (text.length < length) text += rng.pick(alphabet);
      made.push([text, packedBytes(text)]);
    }
    for (const [text, bytes] of made) expect(bytes.equals(Buffer.from(text)), JSON.stringify(text.slice(0, 20))).toBe(true);
  });

  it('packs small strings into 8 KB slabs with no gap: 20,000 SD-sized entries take no more slabs than their bytes need, each full but for less than one entry', () => {
    const entry = (i: number) => `  {\n    "targets": [\n      "10.${i >> 16}.${(i >> 8) & 255}.${i & 255}:9100"\n    ],\n    "labels": {"rack": "r${i % 40}"}\n  }`;
    const buffers = Array.from({ length: 20_000 }, (_, i) => packedBytes(entry(i)));
    const slabs = new Set(buffers.map((b) => b.buffer));
    const bytes = buffers.reduce((sum, b) => sum + b.length, 0);
    const longest = Math.max(...buffers.map((b) => b.length));
    // Each slab is full but for less than one entry.
    expect(slabs.size).toBeLessThanOrEqual(Math.ceil(bytes / (8192 - longest)) + 1);
    for (const slab of slabs) expect(slab.byteLength).toBe(8192);
  });
});
