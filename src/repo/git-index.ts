import { createHash } from 'node:crypto';
import type { BigIntStats } from 'node:fs';

export interface IndexEntry {
  path: string;
  oid: string;
  mode: number; // 0o100644 or 0o100755
  stat?: BigIntStats;
}

const u32 = (value: bigint | number) => Number(BigInt(value) & 0xffffffffn);

/**
 * Serialize a Git index (version 2) for the given entries. We keep the index ourselves because
 * isomorphic-git's `add` rewrites the whole index on every call, which is quadratic over a
 * registration burst; Git only needs the index to match HEAD for `git status` to be clean.
 * Entries without stat data make Git re-hash that file once, then report it clean.
 */
export function serializeIndex(entries: IndexEntry[]): Buffer {
  // Git orders entries by the bytes of their paths.
  const sorted = entries.map((entry) => ({ ...entry, name: Buffer.from(entry.path) })).sort((a, b) => Buffer.compare(a.name, b.name));
  const parts: Buffer[] = [];
  const header = Buffer.alloc(12);
  header.write('DIRC', 0, 'ascii');
  header.writeUInt32BE(2, 4);
  header.writeUInt32BE(sorted.length, 8);
  parts.push(header);
  for (const entry of sorted) {
    const { name } = entry;
    const fixed = 62;
    const length = Math.ceil((fixed + name.length + 1) / 8) * 8;
    const buf = Buffer.alloc(length);
    const s = entry.stat;
    if (s) {
      buf.writeUInt32BE(u32(s.ctimeNs / 1_000_000_000n), 0);
      buf.writeUInt32BE(u32(s.ctimeNs % 1_000_000_000n), 4);
      buf.writeUInt32BE(u32(s.mtimeNs / 1_000_000_000n), 8);
      buf.writeUInt32BE(u32(s.mtimeNs % 1_000_000_000n), 12);
      buf.writeUInt32BE(u32(s.dev), 16);
      buf.writeUInt32BE(u32(s.ino), 20);
      buf.writeUInt32BE(u32(s.uid), 28);
      buf.writeUInt32BE(u32(s.gid), 32);
      buf.writeUInt32BE(u32(s.size), 36);
    }
    buf.writeUInt32BE(entry.mode, 24);
    Buffer.from(entry.oid, 'hex').copy(buf, 40);
    buf.writeUInt16BE(Math.min(name.length, 0xfff), 60);
    name.copy(buf, fixed);
    parts.push(buf);
  }
  const body = Buffer.concat(parts);
  return Buffer.concat([body, createHash('sha1').update(body).digest()]);
}
