#!/usr/bin/env node
import { main } from './main.js';
import type { Io } from './command.js';

const io: Io = { out: (line) => process.stdout.write(`${line}\n`), err: (line) => process.stderr.write(`${line}\n`), env: process.env };
main(process.argv.slice(2), io).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`aami: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  },
);
