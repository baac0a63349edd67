import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { onCleanup, ROOT } from './helpers.js';

export const PROCESS_ADMIN = 'process-test-admin-credential-01';

export interface ServerProcess {
  url: string;
  child: ChildProcess;
  log: () => string;
  /** The exit code once the process ended. */
  exited: Promise<number | null>;
  call(method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; json: any }>;
}

/**
 * `aami serve` as its own process, as production runs it: node with the tsx loader (no
 * wrapper process in between, so a signal reaches the server itself), or the built bundle
 * `bin` run from `cwd`. Killed at the end of the test if it is still running.
 */
export async function serverProcess(args: string[], env: Record<string, string> = {}, built?: { bin: string; cwd: string }): Promise<ServerProcess> {
  const program = built ? [built.bin] : ['--import', 'tsx', join(ROOT, 'src/cli/bin.ts')];
  const child = spawn(process.execPath, [...program, 'serve', '--host', '127.0.0.1', '--port', '0', ...args], {
    cwd: built?.cwd ?? ROOT,
    env: { ...process.env, AAMI_ADMIN_TOKEN: PROCESS_ADMIN, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout!.on('data', (chunk: Buffer) => (log += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (log += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  onCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "serving" line within 30 s:\n${log}`)), 30_000);
    const look = () => {
      const match = /msg=serving url=(\S+)/.exec(log);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    };
    child.stderr!.on('data', look);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`aami serve exited (${code}) before serving:\n${log}`));
    });
  });
  const call = async (method: string, path: string, body?: unknown, token = PROCESS_ADMIN) => {
    const response = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}` }, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await response.text();
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: response.status, json };
  };
  return { url, child, log: () => log, exited, call };
}
