import type { Catalog } from '../catalog/build.js';
import type { SdSync } from '../compile/sd-sync.js';
import type { Logger } from '../log.js';
import type { Heartbeats } from '../nodes/heartbeats.js';
import type { Counter, Registry } from '../metrics.js';
import type { HistoryEntry } from '../repo/history.js';
import type { RemoteStatus } from '../repo/remote.js';
import type { GitStore } from '../repo/store.js';
import type { Writer } from '../repo/writer.js';
import type { AuthOptions } from './auth.js';

/** Everything the HTTP layer needs, injected: no module singletons. */
export interface AppDeps {
  sync: SdSync;
  /** The published catalog: what every read and every credential check sees. */
  catalog: () => Catalog;
  writer: Writer;
  store: Pick<GitStore, 'head' | 'branch'>;
  auth: AuthOptions;
  clock: () => Date;
  logger: Logger;
  metrics: { registry: Registry; registrations: Counter };
  history: (pathspecs: string[]) => Promise<HistoryEntry[]>;
  /** False while starting or shutting down: health answers 503. */
  serving: () => boolean;
  /** Largest request body, in bytes. */
  maxBodyBytes?: number;
  heartbeats: Heartbeats;
  /** A node whose last heartbeat is older than this is listed as stale by health and /metrics. */
  staleAfterMs: number;
  /** Where bootstrap.sh and the other node scripts are served from. */
  scriptsDir: string;
  /** Optional files for nodes without internet access (a node_exporter tarball). */
  downloadsDir?: string;
  /** The Git remote this server follows, when it has one. */
  remote?: { status: RemoteStatus; pull: () => Promise<void>; webhookSecret?: string };
}
