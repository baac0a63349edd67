import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { gitCli, onCleanup, tempDir } from './helpers.js';
import { freePort, requireBinary, waitFor } from './node-helpers.js';

export interface SmartHttpRemote {
  /** The repository's URL, without credentials. */
  url: string;
  user: string;
  password: string;
  /** The bare repository on disk (for hooks, locks and checks). */
  dir: string;
  stop(): Promise<void>;
  start(): Promise<void>;
}

/**
 * A Git server as a hosting service runs one: nginx with basic auth in front of
 * `git http-backend` (through fcgiwrap), on loopback, serving one bare repository.
 */
export async function smartHttpRemote(): Promise<SmartHttpRemote> {
  const nginx = requireBinary('nginx', 'nginx-light');
  const fcgiwrap = requireBinary('fcgiwrap', 'fcgiwrap');
  const prefix = tempDir('aami-githttp-');
  const root = join(prefix, 'git');
  const dir = join(root, 'config.git');
  mkdirSync(root);
  gitCli(prefix, 'init', '--quiet', '--bare', '--initial-branch=main', dir);
  gitCli(dir, 'config', 'http.receivepack', 'true');
  const user = 'aami-bot';
  const password = `pw-${Math.random().toString(36).slice(2)}-secret`;
  writeFileSync(join(prefix, 'htpasswd'), `${user}:{PLAIN}${password}\n`);
  for (const sub of ['tmp', 'logs']) mkdirSync(join(prefix, sub));
  const port = await freePort();
  const socket = join(prefix, 'fcgi.sock');
  writeFileSync(
    join(prefix, 'nginx.conf'),
    `user root;
worker_processes 1;
error_log ${prefix}/logs/error.log;
pid ${prefix}/nginx.pid;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${prefix}/tmp/body;
  proxy_temp_path ${prefix}/tmp/proxy;
  fastcgi_temp_path ${prefix}/tmp/fastcgi;
  uwsgi_temp_path ${prefix}/tmp/uwsgi;
  scgi_temp_path ${prefix}/tmp/scgi;
  server {
    listen 127.0.0.1:${port};
    client_max_body_size 0;
    location / {
      auth_basic "git";
      auth_basic_user_file ${prefix}/htpasswd;
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME /usr/lib/git-core/git-http-backend;
      fastcgi_param GIT_PROJECT_ROOT ${root};
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param REMOTE_USER $remote_user;
      fastcgi_param PATH_INFO $uri;
      fastcgi_pass unix:${socket};
    }
  }
}
`,
  );
  let children: Array<ReturnType<typeof spawn>> = [];
  const start = async () => {
    rmSync(socket, { force: true });
    const wrap = spawn(fcgiwrap, ['-c', '4', '-s', `unix:${socket}`], { stdio: 'ignore' });
    const web = spawn(nginx, ['-c', join(prefix, 'nginx.conf'), '-p', prefix, '-g', 'daemon off;'], { stdio: 'ignore' });
    children = [wrap, web];
    await waitFor('nginx on its port', () => new Promise<boolean>((resolve) => {
      const probe = connect(port, '127.0.0.1', () => (probe.end(), resolve(true))).once('error', () => resolve(false));
    }));
  };
  const stop = async () => {
    // fcgiwrap's workers (-c 4) outlive their parent stopped alone, reparented out of sight
    // (they outlived the tests): found by the socket their command line names, this server's
    // own, and stopped by their pids with it. nginx's master stops its own workers on SIGTERM
    // (a killed master would leave them holding the port).
    const workers = processesNaming(`unix:${socket}`);
    const signal = (name: NodeJS.Signals) => {
      for (const worker of workers) kill(worker, name);
      for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill(name);
    };
    signal('SIGTERM');
    const timer = setTimeout(() => signal('SIGKILL'), 5000);
    await Promise.all(children.map((child) => (child.exitCode !== null || child.signalCode !== null ? undefined : new Promise((resolve) => child.once('exit', resolve)))));
    clearTimeout(timer);
    for (const worker of workers) kill(worker, 'SIGKILL'); // any that outlived SIGTERM
    children = [];
  };
  onCleanup(stop);
  await start();
  return { url: `http://127.0.0.1:${port}/config.git`, user, password, dir, stop, start };
}

/** A process by its pid and start time (a pid freed and taken again is another process). */
interface Proc {
  pid: number;
  start: string;
}

/** "pid (comm) state ppid … starttime …" of a pid, its fields after comm (which may hold spaces and parentheses). */
function statOf(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined; // gone
  }
}

/** The processes whose command line holds `needle`, wherever they were reparented. */
function processesNaming(needle: string): Proc[] {
  const found: Proc[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const words = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      const start = statOf(Number(name))?.[19];
      if (start !== undefined && words.includes(needle)) found.push({ pid: Number(name), start });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** Signal a process unless it is gone (its pid free, or another process's now). */
function kill({ pid, start }: Proc, signal: NodeJS.Signals): void {
  if (statOf(pid)?.[19] !== start) return;
  try {
    process.kill(pid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}
