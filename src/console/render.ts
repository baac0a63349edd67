import type { Context } from 'hono';
import type { Child } from 'hono/jsx';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { AppDeps } from '../api/deps.js';
import type { ConsoleEnv } from './guard.js';
import type { Asset, AssetName } from './static-assets.js';
import { page, type PageFrame } from './views/layout.js';

export type Render = (c: Context<ConsoleEnv>, frame: { title: string; section?: PageFrame['section'] }, body: Child, status?: ContentfulStatusCode) => Response | Promise<Response>;

/** Pages in the console's frame: the signed-in viewer, the problem count, the assets' versioned URLs. */
export function renderer(deps: AppDeps, assets: Record<AssetName, Asset>): Render {
  const url = (name: AssetName) => `/console/assets/${name}?v=${assets[name].version}`;
  const urls = { css: url('console.css'), js: url('console.js') };
  return (c, frame, body, status = 200) =>
    c.html(page({ ...frame, viewer: c.get('signedIn')?.viewer, problemCount: deps.live.snapshot().problemsByFile.size, assets: urls }, body), status);
}
