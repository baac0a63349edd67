// npm run build: the CLI and the server as one file, dist/cli/bin.js, with its source map.
// One bundle because start-up is part of the product: loaded as ~120 modules of our own and
// the dependencies' (ESM resolution and linking, a file each), `aami serve` took ~0.6 s more
// to start at 100k targets, and every `aami` command ~0.25 s more (bench/startup.ts, and
// `aami --help`). Types are checked by `npm test` (`tsc --noEmit`); esbuild only strips them.
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

// From this file's directory, wherever it is run from.
const path = (relative) => fileURLToPath(new URL(relative, import.meta.url));
rmSync(path('dist'), { recursive: true, force: true });
const { metafile } = await build({
  metafile: true,
  absWorkingDir: path('.'),
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

// The dependencies' licences travel with the bundle (an image ships no node_modules): each
// bundled package's name, version, licence and its LICENSE / NOTICE files as they are.
const packages = new Set();
for (const input of Object.keys(metafile.inputs)) {
  const match = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
  if (match) packages.add(match[1]);
}
const sections = [...packages].sort().map((dir) => {
  const manifest = JSON.parse(readFileSync(path(`${dir}/package.json`), 'utf8'));
  const texts = readdirSync(path(dir))
    .filter((name) => /^(licen[cs]e|notice|copying)/i.test(name))
    .sort()
    .map((name) => readFileSync(path(`${dir}/${name}`), 'utf8').trim());
  const author = typeof manifest.author === 'string' ? manifest.author : manifest.author?.name;
  const source = typeof manifest.repository === 'string' ? manifest.repository : manifest.repository?.url;
  // A package with no licence file of its own (simple-git) is named with its author and source.
  const about = [author && `author: ${author}`, source && `source: ${source}`].filter(Boolean).join(', ');
  return [`${manifest.name} ${manifest.version} (${manifest.license ?? 'no licence field'})${about ? `; ${about}` : ''}`, ...texts].join('\n\n');
});
if (!sections.length) throw new Error('no bundled package found in the metafile: the licences would be missing');
writeFileSync(path('dist/THIRD-PARTY-LICENSES.txt'), `Third-party software in dist/cli/bin.js\n\n${sections.join(`\n\n${'='.repeat(72)}\n\n`)}\n`);
