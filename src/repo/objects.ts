import { createHash } from 'node:crypto';
import { deflateSync } from 'node:zlib';
import type { Fs } from './fs.js';

export type ObjectType = 'blob' | 'tree' | 'commit';

export interface TreeEntry {
  mode: string; // '100644' | '100755' | '40000'
  oid: string;
  type: 'blob' | 'tree' | 'commit';
}

export function hashObject(type: ObjectType, content: Uint8Array): { oid: string; raw: Buffer } {
  const raw = Buffer.concat([Buffer.from(`${type} ${content.length}\0`), content]);
  return { oid: createHash('sha1').update(raw).digest('hex'), raw };
}

/** Git sorts tree entries by name, comparing a sub-tree's name as if it ended in "/". */
function treeSortKey(name: string, entry: TreeEntry): string {
  return entry.type === 'tree' ? `${name}/` : name;
}

export function serializeTree(entries: Map<string, TreeEntry>): Buffer {
  const sorted = [...entries].sort(([a, ea], [b, eb]) => {
    const ka = treeSortKey(a, ea);
    const kb = treeSortKey(b, eb);
    return ka < kb ? -1 : ka > kb ? 1 : 0;
  });
  const parts: Buffer[] = [];
  for (const [name, entry] of sorted) {
    parts.push(Buffer.from(`${entry.mode} ${name}\0`), Buffer.from(entry.oid, 'hex'));
  }
  return Buffer.concat(parts);
}

export interface Person {
  name: string;
  email: string;
  /** Seconds since the epoch; pinned in tests so commit ids compare exactly. */
  timestamp: number;
  timezoneOffset?: number; // minutes, as Date#getTimezoneOffset
}

function formatPerson({ name, email, timestamp, timezoneOffset = 0 }: Person): string {
  const sign = timezoneOffset > 0 ? '-' : '+';
  const abs = Math.abs(timezoneOffset);
  const tz = `${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}${String(abs % 60).padStart(2, '0')}`;
  return `${personText(name)} <${personText(email)}> ${timestamp} ${tz}`;
}

/** Git's person fields cannot hold "<", ">" or control characters (`git fsck --strict` rejects them). */
const personText = (text: string) => text.replace(/[<>\p{Cc}]/gu, '');

/**
 * A commit message carries names that came from requests: no control characters but the
 * newlines and tabs that shape it, so `git fsck --strict` and every log reader stay happy.
 */
export function cleanMessage(message: string): string {
  return message.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]/g, '');
}

export function serializeCommit(commit: {
  tree: string;
  parents: string[];
  author: Person;
  committer: Person;
  message: string;
}): Buffer {
  const lines = [`tree ${commit.tree}`, ...commit.parents.map((p) => `parent ${p}`)];
  lines.push(`author ${formatPerson(commit.author)}`, `committer ${formatPerson(commit.committer)}`);
  const cleaned = cleanMessage(commit.message);
  const message = cleaned.endsWith('\n') ? cleaned : `${cleaned}\n`;
  return Buffer.from(`${lines.join('\n')}\n\n${message}`);
}

/**
 * Loose objects written with Node's native sha1 and zlib. isomorphic-git's writeTree hashes
 * and deflates in JavaScript: on a 10k-entry tree that is ~60 ms a commit against ~8 ms here
 * (see MEASUREMENTS.md), and the tree rewrite is what a commit costs.
 */
export class ObjectWriter {
  constructor(
    private readonly fs: Fs,
    private readonly gitdir: string,
  ) {}

  /** Hash the object and return a thunk that makes it durable; callers run the thunks together. */
  prepare(type: ObjectType, content: Uint8Array): { oid: string; write: () => Promise<void> } {
    const { oid, raw } = hashObject(type, content);
    return { oid, write: () => this.writeRaw(oid, raw) };
  }

  private async writeRaw(oid: string, raw: Buffer): Promise<void> {
    const dir = `${this.gitdir}/objects/${oid.slice(0, 2)}`;
    const path = `${dir}/${oid.slice(2)}`;
    // No existence check: renaming over an object with the same id replaces it with the same bytes.
    await this.fs.promises.mkdir(dir, { recursive: true });
    const tmp = `${dir}/tmp_obj_${process.pid}_${tmpCounter++}`;
    const handle = await this.fs.promises.open(tmp, 'w');
    try {
      await handle.writeFile(deflateSync(raw, { level: 1 }));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await this.fs.promises.rename(tmp, path);
  }
}
let tmpCounter = 0;
