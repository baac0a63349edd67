import { createHash, randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';

let code: string | undefined;

/**
 * What identifies the program: a hash of every file of the directory above this module's —
 * the build (dist/: one bundle, every dependency in it) or, run from source, src/ (not
 * node_modules: an upgraded dependency goes unnoticed in development). Another program may
 * parse a file, decide a clash or a last good version otherwise, so it never takes a parse
 * or an image this one saved.
 */
export function codeId(): string {
  if (code) return code;
  const hash = createHash('sha256');
  const walk = (dir: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory()) walk(path);
      // Not the source map (4 MB of the bundle's 6): it changes nothing the program does.
      else if (entry.isFile() && !entry.name.endsWith('.map')) hash.update(`${path}\0`).update(fs.readFileSync(path));
    }
  };
  try {
    walk(fileURLToPath(new URL('..', import.meta.url)).replace(/\/$/, ''));
    return (code = hash.digest('hex'));
  } catch {
    // Unknown: no image is ever taken (none can match), and the server starts the long way.
    return (code = `unknown ${randomUUID()}`);
  }
}
