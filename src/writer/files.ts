import type { FileRecord } from '../catalog/build.js';
import { fileRecord, type FileUpdate } from '../catalog/live.js';
import { isConfigPath, MAX_FILE_BYTES, parseFile, refusedFile, type ParseResult } from '../catalog/parse.js';
import type { GitRepository, TreeFile } from '../git/repository.js';
import type { ParseCache } from './parse-cache.js';
import { inLanes } from '../lanes.js';

const REGULAR = new Set(['100644', '100755']);
const READS_IN_FLIGHT = 1000;

/**
 * Files of the repository as the catalog takes them: blobs read through Git, parsed once
 * per (path, blob id). Repository content is untrusted input: a symlink (mode 120000, e.g.
 * checks/x/check.sh -> /proc/self/environ), a submodule or a blob over 1 MiB is refused
 * unread, whatever its name.
 */
export class RepoFiles {
  constructor(
    private readonly repo: GitRepository,
    private readonly cache: ParseCache,
  ) {}

  async parse(path: string, file: TreeFile): Promise<{ parsed: ParseResult; text?: string }> {
    if (!REGULAR.has(file.mode)) {
      const what = file.mode === '120000' ? 'is a symbolic link' : file.mode === '160000' ? 'is a submodule' : `has mode ${file.mode}`;
      return { parsed: refusedFile(path, `${what}: refused (config files and check scripts must be regular files)`) };
    }
    const cached = this.cache.get(path, file.oid);
    if (cached && !cached.commented) return { parsed: cached.parsed };
    // Past the limit the reader skips the blob's bytes: a 1 GB file in a pull request costs nothing.
    const bytes = await this.repo.objects.readBlob(file.oid, MAX_FILE_BYTES);
    if (!bytes) {
      const parsed = refusedFile(path, `the file is larger than ${MAX_FILE_BYTES >> 20} MiB: refused unread`);
      this.cache.add(path, file.oid, { parsed });
      return { parsed };
    }
    const text = bytes.toString('utf8');
    const commented = text.includes('#');
    const parsed = cached?.parsed ?? parseFile(path, text);
    if (!cached) this.cache.add(path, file.oid, commented ? { parsed, commented } : { parsed });
    return { parsed, ...(commented ? { text } : {}) };
  }

  /** Every config file of a commit, as records (start-up). */
  async records(commit: string): Promise<Map<string, FileRecord>> {
    const listing = [...(await this.repo.listFiles(commit))].filter(([path]) => isConfigPath(path));
    const records = new Map<string, FileRecord>();
    // A thousand files in flight at a time: every file of a 100k-target repository at once
    // held a request, a promise and a suspended parse each until the last blob came back.
    await inLanes(listing, READS_IN_FLIGHT, () => async ([path, file]) => {
      const { parsed, text } = await this.parse(path, file);
      records.set(path, fileRecord({ oid: file.oid, parsed, text }));
    });
    return records;
  }

  /** What a new head changed, as updates for the catalog. */
  async updates(from: string, to: string): Promise<FileUpdate[]> {
    const changes = (await this.repo.diff(from, to)).filter((change) => isConfigPath(change.path));
    return Promise.all(
      changes.map(async ({ path, after }): Promise<FileUpdate> => {
        if (!after) return { path, oid: null };
        const { parsed, text } = await this.parse(path, after);
        return { path, oid: after.oid, parsed, text };
      }),
    );
  }
}
