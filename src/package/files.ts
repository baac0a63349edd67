import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * What the installed package holds besides code, and reads at run time: found from the
 * package root, two levels above this module. The depth is the same for the source
 * (src/package/files.ts, run by tsx) and for the build, whose one bundle is dist/cli/bin.js.
 * An image or install that runs the server must ship each of these (deploy tests check the
 * Dockerfile does).
 */
export const PACKAGE_FILES = {
  manifest: 'package.json',
  /** The starter config repo an empty --repo is created from. */
  starter: 'config-repo',
  /** The node scripts the server serves (bootstrap.sh and the others). */
  scripts: 'scripts',
  /** The console's stylesheet and script, read as they are (the build does not copy them). */
  consoleAssets: 'src/console/assets',
} as const;

const ROOT = new URL('../../', import.meta.url);

export function packagePath(name: keyof typeof PACKAGE_FILES): string {
  return fileURLToPath(new URL(PACKAGE_FILES[name], ROOT));
}

export const VERSION = (JSON.parse(readFileSync(packagePath('manifest'), 'utf8')) as { version: string }).version;
