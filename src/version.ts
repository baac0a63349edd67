import { readFileSync } from 'node:fs';

/** The package version (from src/ and from dist/ alike, package.json is one level up). */
export const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
