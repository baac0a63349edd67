import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { builtBundle, onCleanup, ROOT, tempDir } from './helpers.js';
import { ADMIN, requireBinary } from './node-helpers.js';

/** Prints the argv of a unit file's ExecStart= as this machine's systemd reads it (see the script for what stands in). */
export const SYSTEMD_ARGV = join(ROOT, 'test/systemd-argv.py');

/** The argv systemd runs for a unit file's ExecStart= (test/systemd-argv.py). */
export function execStartArgv(unitFile: string): string[] {
  requireBinary('setpriv', 'util-linux');
  return execFileSync('/usr/bin/python3', [SYSTEMD_ARGV, unitFile], { encoding: 'utf8' }).split('\0').slice(0, -1);
}

/** Every value of a setting in a unit file, in order. */
export function unitSettings(unit: string, key: string): string[] {
  return [...unit.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]!.trim());
}

/** The system calls of a systemd set such as @system-service, nested sets expanded, as this machine's systemd defines them. */
export function syscallSet(name: string): string[] {
  const out = execFileSync(requireBinary('systemd-analyze', 'systemd'), ['syscall-filter', name], { encoding: 'utf8' });
  const items = out.split('\n').slice(1).map((line) => line.trim()).filter((line) => line && !line.startsWith('#'));
  return items.flatMap((item) => (item.startsWith('@') ? syscallSet(item) : [item]));
}

/**
 * What a unit's SystemCallFilter= allow-list admits, as systemd builds it: @default, then
 * each line's sets and names added, a line starting with ~ removed (an ":errno" suffix
 * only changes how a call is refused).
 */
export function allowedSyscalls(unit: string): Set<string> {
  const lines = unitSettings(unit, 'SystemCallFilter');
  if (!lines.length || lines[0]!.startsWith('~')) throw new Error('the unit has no SystemCallFilter= allow-list');
  const allowed = new Set(syscallSet('@default'));
  for (const line of lines) {
    const deny = line.startsWith('~');
    for (const item of line.replace(/^~/, '').split(/\s+/)) {
      const name = item.split(':')[0]!;
      for (const call of name.startsWith('@') ? syscallSet(name) : [name]) {
        if (deny) allowed.delete(call);
        else allowed.add(call);
      }
    }
  }
  return allowed;
}

export interface FilteredServer {
  /** The URL it serves on, or undefined when it died before serving. */
  url: string | undefined;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  log: () => string;
  stop: () => void;
}

/**
 * The built server (`node dist/cli/bin.js serve`) under a libseccomp filter that admits only
 * `allowed` and kills on anything else, as systemd's SystemCallFilter= does, with the
 * unit's umask. Resolves once it serves or dies.
 */
export async function serveUnderFilter(allowed: Set<string>, options: { umask: string; sdDir?: string; extraArgs?: string[] }): Promise<FilteredServer> {
  const bin = builtBundle();
  // Debian's python3-seccomp is for Debian's python3: call it by path, not whatever python3 is first on PATH.
  const python = '/usr/bin/python3';
  if (spawnSync(python, ['-c', 'import seccomp']).status !== 0) throw new Error('python3-seccomp is not installed: apt-get install python3-seccomp (.ci/run does)');
  const dir = tempDir();
  const list = join(dir, 'allowed-syscalls');
  writeFileSync(list, [...allowed].join('\n'));
  const serve = [process.execPath, bin, 'serve', '--host', '127.0.0.1', '--port', '0', '--repo', join(dir, 'repo'), '--state-dir', join(dir, 'state')];
  serve.push('--sd-dir', options.sdDir ?? join(dir, 'sd'), ...(options.extraArgs ?? []));
  // sh sets the umask (UMask=), then the filter is loaded, then node is exec'd under it: the order systemd uses.
  const child = spawn('sh', ['-c', `umask ${options.umask} && exec "$@"`, 'sh', python, join(ROOT, 'test/seccomp-exec.py'), list, '--', ...serve], {
    env: { ...process.env, AAMI_ADMIN_TOKEN: ADMIN },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const stop = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  };
  onCleanup(async () => {
    stop();
    await exited;
  });
  let log = '';
  const serving = new Promise<string>((resolve) => {
    const onData = (chunk: Buffer) => {
      log += chunk.toString();
      const match = /msg=serving url=(\S+)/.exec(log);
      if (match) resolve(match[1]!);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
  });
  const url = await Promise.race([serving, exited.then(() => undefined)]);
  return { url, exited, log: () => log, stop };
}
