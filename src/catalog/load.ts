import type { Fs } from '../repo/fs.js';
import { isConfigPath } from './parse.js';

const PARALLEL_READS = 64;

/** Read every config file of a working tree, by repo-relative path. Never enters `.git`. */
export async function readConfigFiles(fs: Fs, dir: string): Promise<Map<string, string>> {
  const paths: string[] = [];
  const walk = async (relative: string): Promise<void> => {
    const entries = await fs.promises.readdir(relative ? `${dir}/${relative}` : dir, { withFileTypes: true });
    for (const entry of entries) {
      const name = String(entry.name);
      if (name.startsWith('.')) continue; // .git, editor swap files, our own temp files
      const path = relative ? `${relative}/${name}` : name;
      if (entry.isDirectory()) await walk(path);
      else if (entry.isFile() && isConfigPath(path)) paths.push(path);
    }
  };
  await walk('');

  const files = new Map<string, string>();
  // Bounded so a 100k-file repo does not open 100k descriptors at once.
  for (let i = 0; i < paths.length; i += PARALLEL_READS) {
    const batch = paths.slice(i, i + PARALLEL_READS);
    const texts = await Promise.all(batch.map((path) => fs.promises.readFile(`${dir}/${path}`, 'utf8')));
    batch.forEach((path, j) => files.set(path, texts[j]!));
  }
  return files;
}
