// Runs in a fresh process so its peak RSS is the load's own: node --import tsx bench/load-child.ts REPO SD
import * as fs from 'node:fs';
import { readConfigFiles } from '../src/catalog/load.js';
import { CatalogState } from '../src/catalog/state.js';
import { Compiler } from '../src/compile/compiler.js';
import { SdOutput } from '../src/compile/output.js';

const [repo, sd] = process.argv.slice(2) as [string, string];
const t0 = performance.now();
const files = readConfigFiles(fs, repo);
const t1 = performance.now();
const state = new CatalogState();
for (const [path, text] of files) state.set(path, text);
const t2 = performance.now();
const { catalog, problems } = state.snapshot();
const t3 = performance.now();
const output = new Compiler().compile(catalog);
const t4 = performance.now();
await new SdOutput(fs, sd).write(output);
const t5 = performance.now();
console.log(
  JSON.stringify({
    targets: catalog.targets.size,
    problems: problems.length,
    readMs: t1 - t0,
    parseMs: t2 - t1,
    validateMs: t3 - t2,
    compileMs: t4 - t3,
    writeMs: t5 - t4,
    totalMs: t5 - t0,
    maxRssMb: process.resourceUsage().maxRSS / 1024,
  }),
);
