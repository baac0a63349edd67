import * as nodeFs from 'node:fs';
import { hashObject } from '../git/objects.js';
import type { Fs } from '../git/fs.js';
import type { FileRecord } from './build.js';
import { fileRecord } from './live.js';
import { isConfigPath, MAX_FILE_BYTES, parseFile, refusedFile } from './parse.js';

type Kind = 'file' | 'symlink' | 'submodule' | 'other';

/**
 * Every file below dir (never .git), by repo-relative path, lstat'd: a symlink or anything
 * but a regular file is listed as what it is, never followed. A directory that is empty or
 * holds a `.git` is what a submodule looks like in a checkout (Git keeps no empty
 * directory): listed as one, as the server sees it in the tree.
 */
function walk(fs: Fs, dir: string, skip: (name: string) => boolean): Array<{ path: string; kind: Kind; size: number }> {
  const found: Array<{ path: string; kind: Kind; size: number }> = [];
  const visit = (relative: string): void => {
    const entries = fs.readdirSync(relative ? `${dir}/${relative}` : dir, { withFileTypes: true });
    if (relative && (!entries.length || entries.some((entry) => String(entry.name) === '.git'))) {
      found.push({ path: relative, kind: 'submodule', size: 0 });
      return;
    }
    for (const entry of entries) {
      const name = String(entry.name);
      if (name === '.git' || skip(name)) continue;
      const path = relative ? `${relative}/${name}` : name;
      if (entry.isDirectory()) visit(path);
      else if (entry.isSymbolicLink()) found.push({ path, kind: 'symlink', size: 0 });
      else if (entry.isFile()) found.push({ path, kind: 'file', size: fs.lstatSync(`${dir}/${path}`).size });
      else found.push({ path, kind: 'other', size: 0 });
    }
  };
  visit('');
  return found;
}

/**
 * The config files of a checkout (a pull request's tree in CI) as the catalog's records.
 * Repository content is untrusted input: a symlink (checks/x/check.sh -> /proc/self/environ),
 * a device or a file over 1 MiB is refused unread and reported against its path.
 * Synchronous on purpose: 10k small files read in ~0.1 s with readFileSync against ~0.8 s
 * through fs.promises (a thread-pool round trip for each open, stat, read and close).
 */
export function readCheckout(fs: Fs, dir: string): Map<string, FileRecord> {
  const records = new Map<string, FileRecord>();
  // Every path the server would read, dot-files included: what CI checks must be what the server serves.
  for (const { path, kind, size } of walk(fs, dir, () => false)) {
    if (!isConfigPath(path)) continue;
    if (kind !== 'file') {
      const what = kind === 'symlink' ? 'is a symbolic link' : kind === 'submodule' ? 'is a submodule (or an empty directory)' : 'is not a regular file';
      records.set(path, fileRecord({ oid: `refused:${kind}`, parsed: refusedFile(path, `${what}: refused (config files and check scripts must be regular files in the repo)`) }));
      continue;
    }
    if (size > MAX_FILE_BYTES) {
      records.set(path, fileRecord({ oid: `refused:size`, parsed: refusedFile(path, `the file is larger than ${MAX_FILE_BYTES >> 20} MiB: refused unread`) }));
      continue;
    }
    const bytes = fs.readFileSync(`${dir}/${path}`);
    const text = bytes.toString('utf8');
    records.set(path, fileRecord({ oid: hashObject('blob', bytes).oid, parsed: parseFile(path, text), text: text.includes('#') ? text : undefined }));
  }
  return records;
}

/** Every regular file below dir (but .git) as a change set: how a new repo is seeded from the starter. */
export function filesOf(dir: string, fs: Fs = nodeFs): Array<{ path: string; content: string }> {
  return walk(fs, dir, () => false)
    .filter((f) => f.kind === 'file')
    .map(({ path }) => ({ path, content: fs.readFileSync(`${dir}/${path}`, 'utf8') }));
}
