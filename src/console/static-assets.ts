import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { packagePath } from '../package/files.js';

/** The console's stylesheet and script ship in the package (no CDN: the console works on a network without internet). */
const DIR = `${packagePath('consoleAssets')}/`;

const TYPES = { 'console.css': 'text/css; charset=utf-8', 'console.js': 'text/javascript; charset=utf-8' } as const;
export type AssetName = keyof typeof TYPES;

export interface Asset {
  body: string;
  type: string;
  /** The content's hash: URLs carry it, so a new version is a new URL and an old one can be cached for good. */
  version: string;
}

export function loadAssets(dir = DIR): Record<AssetName, Asset> {
  const load = (name: AssetName): Asset => {
    const body = readFileSync(`${dir}${name}`, 'utf8');
    return { body, type: TYPES[name], version: createHash('sha256').update(body).digest('hex').slice(0, 16) };
  };
  return { 'console.css': load('console.css'), 'console.js': load('console.js') };
}

export function isAssetName(name: string): name is AssetName {
  return Object.hasOwn(TYPES, name);
}
