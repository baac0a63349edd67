import { createHash } from 'node:crypto';
import { deflateSync } from 'node:zlib';
import { syncPath, type Fs } from './fs.js';

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
  // Names are latin1 strings, one character a byte (parseTree reads them so): they go back
  // byte for byte, and comparing them as strings is Git's byte order.
  for (const [name, entry] of sorted) {
    parts.push(Buffer.from(`${entry.mode} ${name}\0`, 'latin1'), Buffer.from(entry.oid, 'hex'));
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

  /**
   * Write the objects and make them durable: each file fsync'd, then every object directory
   * they went into, then `objects/` itself when one of those directories is new — a ref
   * must never point at an object a crash can take back. A failed write leaves no temp file.
   */
  async writeAll(prepared: Array<{ oid: string; raw: Buffer }>): Promise<void> {
    const created = await Promise.all(prepared.map(({ oid, raw }) => this.writeRaw(oid, raw)));
    const dirs = new Set(prepared.map(({ oid }) => `${this.gitdir}/objects/${oid.slice(0, 2)}`));
    await Promise.all([...dirs].map((dir) => syncPath(this.fs, dir)));
    if (created.some(Boolean)) await syncPath(this.fs, `${this.gitdir}/objects`);
  }

  /** Resolves to whether the object's directory had to be created. */
  private async writeRaw(oid: string, raw: Buffer): Promise<boolean> {
    const dir = `${this.gitdir}/objects/${oid.slice(0, 2)}`;
    const path = `${dir}/${oid.slice(2)}`;
    // No existence check: renaming over an object with the same id replaces it with the same bytes.
    const created = (await this.fs.promises.mkdir(dir, { recursive: true })) !== undefined;
    const tmp = `${dir}/tmp_obj_${process.pid}_${tmpCounter++}`;
    try {
      const handle = await this.fs.promises.open(tmp, 'w', 0o444);
      try {
        await handle.writeFile(deflateSync(raw, { level: 1 }));
        await handle.sync();
      } finally {
        await handle.close();
      }
      await this.fs.promises.rename(tmp, path);
    } catch (error) {
      await this.fs.promises.rm(tmp, { force: true }).catch(() => undefined);
      throw error;
    }
    return created;
  }
}
let tmpCounter = 0;
