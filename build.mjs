// npm run build: the CLI and the server as one file, dist/cli/bin.js, with its source map.
// One bundle because start-up is part of the product: loaded as ~120 modules of our own and
// the dependencies' (ESM resolution and linking, a file each), `aami serve` took ~0.6 s more
// to start at 100k targets, and every `aami` command ~0.25 s more (bench/startup.ts, and
// `aami --help`). Types are checked by `npm test` (`tsc --noEmit`); esbuild only strips them.
import { rmSync } from 'node:fs';
import { build } from 'esbuild';

rmSync('dist', { recursive: true, force: true });
await build({
  entryPoints: ['src/cli/bin.ts'],
  outfile: 'dist/cli/bin.js',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20.19',
  sourcemap: true,
  logLevel: 'warning',
  // CommonJS dependencies (prom-client, simple-git) call require() for Node's own modules;
  // an ES module has no require of its own, so the bundle makes one.
  banner: { js: "import { createRequire as aamiCreateRequire } from 'node:module'; const require = aamiCreateRequire(import.meta.url);" },
});
