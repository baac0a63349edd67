import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, fsyncSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { UsageError } from '../command.js';

export interface SavedConfig {
  server?: string;
  credential?: string;
}

/** `$AAMI_CONFIG`, or `~/.config/aami/config.json`. */
export function configPath(env: NodeJS.ProcessEnv): string {
  return env.AAMI_CONFIG || join(env.HOME || homedir(), '.config', 'aami', 'config.json');
}

/**
 * The saved server and credential, or undefined when there is no file. Like ssh with a
 * private key, a file that group or others could read is refused rather than used: the
 * credential in it is as good as the admin's password. The mode is checked on the open
 * descriptor, so the file cannot be swapped between the check and the read. No message
 * quotes the file's text: it holds the secret.
 */
export function readConfig(path: string): SavedConfig | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new UsageError(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new UsageError(`${path} is not a regular file`);
    const mode = stat.mode & 0o777;
    if (mode & 0o077) {
      throw new UsageError(`${path} is open to group or others (mode ${mode.toString(8).padStart(4, '0')}); it holds a credential, so run: chmod 600 ${path}`);
    }
    return parseConfig(readFileSync(fd, 'utf8'), path);
  } finally {
    closeSync(fd);
  }
}

function parseConfig(text: string, path: string): SavedConfig {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new UsageError(`${path} is not valid JSON`);
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) throw new UsageError(`${path} must hold a JSON object {"server", "credential"}`);
  const config: SavedConfig = {};
  for (const [key, value] of Object.entries(data)) {
    if (key !== 'server' && key !== 'credential') throw new UsageError(`${path}: "${key}" is not a known field (server, credential)`);
    if (typeof value !== 'string') throw new UsageError(`${path}: "${key}" must be a string`);
    config[key] = value;
  }
  return config;
}

/** Written to a temp file created 0600 and renamed over the old one, so no moment exists when it is readable by others or half written. */
export function writeConfig(path: string, config: SavedConfig): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const temp = `${path}.${process.pid}.tmp`;
  try {
    const fd = openSync(temp, 'wx', 0o600);
    try {
      writeFileSync(fd, `${JSON.stringify(config, null, 2)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, path);
  } catch (error) {
    rmSync(temp, { force: true });
    throw error;
  }
}
