import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
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
    // Each in a process group of its own, stopped as a group: fcgiwrap's parent leaves the
    // workers it forked (-c 4) running when it is stopped alone, and they outlived the tests.
    const wrap = spawn(fcgiwrap, ['-c', '4', '-s', `unix:${socket}`], { stdio: 'ignore', detached: true });
    const web = spawn(nginx, ['-c', join(prefix, 'nginx.conf'), '-p', prefix, '-g', 'daemon off;'], { stdio: 'ignore', detached: true });
    children = [wrap, web];
    await waitFor('nginx on its port', () => new Promise<boolean>((resolve) => {
      const probe = connect(port, '127.0.0.1', () => (probe.end(), resolve(true))).once('error', () => resolve(false));
    }));
  };
  const stop = async () => {
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('exit', () => resolve());
            // SIGTERM to the group: nginx's master and its workers, fcgiwrap and its workers.
            const signal = (name: NodeJS.Signals) => {
              try {
                process.kill(-child.pid!, name);
              } catch {
                // the group is gone
              }
            };
            signal('SIGTERM');
            setTimeout(() => signal('SIGKILL'), 5000).unref();
          }),
      ),
    );
    children = [];
  };
  onCleanup(stop);
  await start();
  return { url: `http://127.0.0.1:${port}/config.git`, user, password, dir, stop, start };
}
